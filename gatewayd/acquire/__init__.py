"""Modbus acquisition: pure decoding and request planning, and the I/O poller."""
