"""TLS to the broker: the hub is verified by CA and name, mutual TLS works, wrong CAs are refused."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from gatewayd.config import GatewayConfig, MqttConfig
from gatewayd.enos.client import MqttSession
from tests.support.brokers import MosquittoBroker

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto") is None,
    reason="TLS listeners are tested with mosquitto (.ci/run installs it)",
)

GATEWAY = GatewayConfig(product_key="gp", device_key="gd", device_secret="s")


class Pki:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = trustme.CA()
        self.ca_file = self.write("ca.pem", self.ca.cert_pem)
        server = self.ca.issue_cert("127.0.0.1")
        self.server_cert = self.write("server.pem", *server.cert_chain_pems)
        self.server_key = self.write("server.key", server.private_key_pem)
        client = self.ca.issue_cert("gateway-gd")
        self.client_cert = self.write("client.pem", *client.cert_chain_pems)
        self.client_key = self.write("client.key", client.private_key_pem)
        self.other_ca_file = self.write("other-ca.pem", trustme.CA().cert_pem)

    def write(self, name: str, *blobs: Any) -> Path:
        path = self.root / name
        path.write_bytes(b"".join(blob.bytes() for blob in blobs))
        return path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def tls_broker(tmp_path: Path, pki: Pki, require_certificate: bool) -> Iterator[MosquittoBroker]:
    broker = MosquittoBroker(
        tmp_path,
        extra=(
            f"cafile {pki.ca_file}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
            f"require_certificate {'true' if require_certificate else 'false'}\n"
        ),
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def server_tls(tmp_path: Path, pki: Pki) -> Iterator[MosquittoBroker]:
    yield from tls_broker(tmp_path, pki, require_certificate=False)


@pytest.fixture
def mutual_tls(tmp_path: Path, pki: Pki) -> Iterator[MosquittoBroker]:
    yield from tls_broker(tmp_path, pki, require_certificate=True)


async def connects(port: int, **tls: Any) -> bool:
    """True if the session comes up, False if the attempt is refused; bounded either way."""
    session = MqttSession(
        MqttConfig(port=port, tls=True, reconnect_min_s=1, reconnect_max_s=1, **tls),
        GATEWAY,
        ["/sys/gp/gd/thing/x_reply"],
    )
    await session.start()
    try:
        async with asyncio.timeout(10):
            up = asyncio.ensure_future(session.connected.wait())
            down = asyncio.ensure_future(session.connect_failed.wait())
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            up.cancel()
            down.cancel()
        return session.connected.is_set()
    finally:
        await session.stop()


async def test_the_hub_is_verified_by_its_ca(server_tls: MosquittoBroker, pki: Pki) -> None:
    assert await connects(server_tls.port, ca_file=pki.ca_file)


async def test_a_wrong_ca_is_refused(server_tls: MosquittoBroker, pki: Pki) -> None:
    assert not await connects(server_tls.port, ca_file=pki.other_ca_file)


async def test_the_server_name_is_checked_by_default(server_tls: MosquittoBroker, pki: Pki) -> None:
    # The certificate names 127.0.0.1; reaching the same broker as "localhost" must fail...
    assert not await connects(server_tls.port, host="localhost", ca_file=pki.ca_file)
    # ... unless the operator turns the check off explicitly.
    assert await connects(
        server_tls.port, host="localhost", ca_file=pki.ca_file, tls_check_hostname=False
    )


async def test_mutual_tls(mutual_tls: MosquittoBroker, pki: Pki) -> None:
    assert await connects(
        mutual_tls.port, ca_file=pki.ca_file, cert_file=pki.client_cert, key_file=pki.client_key
    )
    assert not await connects(mutual_tls.port, ca_file=pki.ca_file)
