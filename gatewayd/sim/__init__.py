"""Simulators that stand in for field devices and the cloud, for the demo, tests and commissioning."""
