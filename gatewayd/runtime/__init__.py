"""What runs the stages: the daemon, its health, metrics and systemd notifications."""
