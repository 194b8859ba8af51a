"""Forwarding: batches from the queue to the hub, deleted only on a 200 reply."""
