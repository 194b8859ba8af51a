"""The EnOS uplink: pure protocol pieces, the MQTT session, and the gateway topology."""
