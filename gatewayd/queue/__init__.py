"""The durable hand-off between acquisition and forwarding: one SQLite file."""
