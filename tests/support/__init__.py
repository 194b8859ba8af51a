"""Real peers for the tests: brokers, Modbus servers, and a daemon runner."""
