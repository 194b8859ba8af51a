"""gatewayd: read Modbus devices, keep every reading in SQLite, forward to an EnOS hub over MQTT."""

__version__ = "0.1.0"
