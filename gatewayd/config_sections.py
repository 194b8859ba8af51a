"""The gateway's own sections: its identity, the uplink, the queue, forwarding, clock, metrics.

One model per TOML section, each key with its bounds and each section's rules across its keys, so
that a contradictory section is refused where it is written. The devices' sections are in
config_devices.py; the whole file, the environment over it and the report in config.py.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from gatewayd.config_fields import (
    HubKey,
    Secret,
    SecretFromCredential,
    SecretFromFile,
    Section,
    settle_device_secret,
)

#: The hub rejects payloads of 512 KiB or more (enos-protocol.md §2.5); keep a margin for the envelope.
MAX_PAYLOAD_BYTES = 512 * 1024 - 1024


class GatewayConfig(Section):
    """The gateway's own identity on the hub."""

    product_key: HubKey
    device_key: HubKey
    device_secret: Secret = None
    #: A file (group gatewayd, mode 0640) holding the secret.
    device_secret_file: SecretFromFile = None
    #: The name of a systemd credential (`LoadCredential=NAME:...` in the unit): recommended.
    device_secret_credential: SecretFromCredential = None

    @model_validator(mode="after")
    def _resolve_secret(self) -> GatewayConfig:
        settle_device_secret(self, required=True)
        return self

    def secret(self) -> str:
        assert self.device_secret is not None  # guaranteed by the validator
        return self.device_secret.get_secret_value()


class MqttConfig(Section):
    """How to reach the hub's MQTT endpoint."""

    host: str = "127.0.0.1"
    port: int = Field(default=11883, ge=1, le=65535)
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_check_hostname: bool = True
    keepalive_s: int = Field(default=60, ge=5, le=3600)
    reconnect_min_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> MqttConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS)")
        return self


class QueueConfig(Section):
    """Where and how readings are kept until the hub confirms them."""

    path: Path = Path("/var/lib/gatewayd/queue.db")
    max_bytes: int = Field(default=1_073_741_824, ge=1_048_576)
    max_age_s: int = Field(default=2_592_000, ge=60)
    overflow: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    synchronous: Literal["full", "normal"] = "full"
    commit_interval_ms: int = Field(default=200, ge=1, le=60_000)
    #: While the disk refuses writes (full, read-only), keep at most this many new samples in
    #: memory, the newest; older ones are dropped and counted.
    memory_buffer_samples: int = Field(default=10_000, ge=100, le=10_000_000)
    #: Dead letters (`rejected`) have a bound of their own, so that they never crowd out new
    #: readings: bytes (0 = a quarter of max_bytes) and age since the rejection. The oldest
    #: rejections go first, counted in `rejected_evicted`.
    rejected_max_bytes: int = Field(default=0, ge=0)
    rejected_max_age_s: int = Field(default=2_592_000, ge=60)

    @model_validator(mode="after")
    def _check_rejected(self) -> QueueConfig:
        if self.rejected_max_bytes > self.max_bytes // 2:
            raise ValueError("rejected_max_bytes must not exceed half of max_bytes")
        return self


class ForwardConfig(Section):
    """How the queue is drained to the hub."""

    batch_max_samples: int = Field(default=500, ge=1, le=100_000)
    batch_max_bytes: int = Field(default=262_144, ge=1024, le=MAX_PAYLOAD_BYTES)
    inflight: int = Field(default=4, ge=1, le=64)
    reply_timeout_s: float = Field(default=15.0, gt=0)
    live_max_age_s: float = Field(default=60.0, ge=0)
    allow_offline_sub_device: bool = False
    skip_invalid_measurepoints: bool = False
    retry_min_s: float = Field(default=1.0, gt=0)
    retry_max_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> ForwardConfig:
        if self.retry_min_s > self.retry_max_s:
            raise ValueError("retry_min_s must not exceed retry_max_s")
        return self


class ClockConfig(Section):
    """When the wall clock may stamp readings (see gatewayd/acquire/clock.py)."""

    trust: Literal["floor", "ntp", "always"] = "floor"
    floor: str = "2026-11-01"  # no reading can be older than the software that took it
    jump_threshold_s: float = Field(default=2.0, gt=0)
    held_policy: Literal["send", "reject"] = "send"

    @model_validator(mode="after")
    def _check(self) -> ClockConfig:
        try:
            datetime.fromisoformat(self.floor)
        except ValueError:
            raise ValueError(f"floor {self.floor!r} is not a date (YYYY-MM-DD)") from None
        return self


class MetricsConfig(Section):
    """An optional HTTP endpoint for Prometheus (`/metrics`) and health checks (`/healthz`)."""

    listen: str = ""  # "127.0.0.1:9108"; empty: no endpoint

    @model_validator(mode="after")
    def _check(self) -> MetricsConfig:
        if self.listen:
            host, _, port = self.listen.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"listen {self.listen!r} is not host:port")
        return self

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)
