"""pymodbus's client for one endpoint, made so that every raw byte is seen before it is framed.

Why a wrapper at all: pymodbus's RTU framer drops what follows the first frame it likes, and a
late answer or a copy hides exactly there; the line's books (line_ledger.py) must see every byte.
pymodbus clients are their own asyncio protocol (transport.py: "Clients reuse the same object"),
so wrapping the instance's data_received sees the bytes as the transport hands them over.
pymodbus gets `retries=0` and a timeout it never reaches: the endpoint owns both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gatewayd.config import ModbusConfig

if TYPE_CHECKING:  # pymodbus itself is imported at the first read (see Endpoint.client)
    from pymodbus import ModbusException
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
    from pymodbus.pdu import ModbusPDU

#: pymodbus's own timeout, never reached: every exchange runs under the device's own deadline.
_LIBRARY_TIMEOUT_S = 3600.0


def make_client(
    cfg: ModbusConfig,
    received: Callable[[bytes], bytes],
    traced_pdu: Callable[[bool, ModbusPDU], ModbusPDU],
) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
    """The client for `cfg`; `received` sees every raw byte before pymodbus does, and says
    which of them pymodbus gets (a local echo is taken off by gatewayd, not by pymodbus: its
    `handle_local_echo` drops the first bytes of an answer that begins like the request)."""
    from pymodbus import FramerType
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

    client: AsyncModbusTcpClient | AsyncModbusSerialClient
    if cfg.transport == "rtu":
        client = AsyncModbusSerialClient(
            str(cfg.serial_port),
            framer=FramerType.RTU,
            baudrate=cfg.baudrate,
            bytesize=cfg.bytesize,
            parity=cfg.parity,
            stopbits=cfg.stopbits,
            timeout=_LIBRARY_TIMEOUT_S,
            retries=0,
            reconnect_delay=0,
            trace_pdu=traced_pdu,
        )
    else:
        framer = FramerType.RTU if cfg.transport == "rtu_over_tcp" else FramerType.SOCKET
        client = AsyncModbusTcpClient(
            str(cfg.host),
            port=cfg.port,
            framer=framer,
            timeout=_LIBRARY_TIMEOUT_S,
            retries=0,
            reconnect_delay=0,
            trace_pdu=traced_pdu,
        )
    protocol: Any = client.ctx
    original = protocol.data_received

    def counted(data: bytes) -> None:
        handed_on = received(data)
        if handed_on:
            original(handed_on)

    protocol.data_received = counted
    return client


def describe(exc: ModbusException) -> str:
    """pymodbus's failure as one short phrase: its own text is long and names its retries."""
    text = str(exc)
    if "device id" in text:
        return "answered by another unit id"
    return f"{type(exc).__name__}: {text}".strip()
