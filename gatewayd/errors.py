"""The exception tree.

Callers decide what to do by type: transient errors (a Modbus timeout, an MQTT disconnect, a reply
that never came) are retried with backoff; the others are reported. Only the CLI turns an exception
into an exit code.
"""

from __future__ import annotations


class GatewaydError(Exception):
    """Base of every error gatewayd raises on purpose."""


class ConfigError(GatewaydError):
    """The configuration is unusable; `problems` names every bad key path with what is wrong."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"invalid configuration{where}: " + "; ".join(problems))


class TransientError(GatewaydError):
    """A failure that may go away by itself; retry it later."""


class DeviceError(TransientError):
    """A Modbus device could not be read (timeout, refused connection, exception response)."""

    def __init__(self, device: str, reason: str) -> None:
        self.device = device
        self.reason = reason
        super().__init__(f"device {device}: {reason}")


#: Modbus exception codes and the names a technician finds in a device manual.
EXCEPTION_NAMES = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}


def exception_text(code: int) -> str:
    """`02 illegal data address`, as a person reads it."""
    return f"{code:02X} {EXCEPTION_NAMES.get(code, 'unknown exception')}"


class ExceptionResponse(GatewaydError):
    """The device answered a read with a Modbus exception: it is alive, but refuses that range."""

    def __init__(self, device: str, code: int, what: str) -> None:
        self.device = device
        self.code = code
        super().__init__(f"device {device}: exception response {code} for {what}")


class DecodeError(GatewaydError):
    """Registers could not be turned into a value (wrong count, invalid text)."""


class UplinkDown(TransientError):
    """The MQTT session is not connected, or dropped while a request waited for its reply."""


class ReplyTimeout(TransientError):
    """No reply arrived for a request within its time limit."""

    def __init__(self, request_id: str, timeout_s: float) -> None:
        self.request_id = request_id
        super().__init__(f"no reply to request {request_id} within {timeout_s:g}s")


class ReplyFormatError(GatewaydError):
    """A message on a reply topic is not a reply we can read; it is logged and dropped."""


class QueueError(GatewaydError):
    """The SQLite queue file cannot be opened or used."""
