"""Fuzzed replies against a running `gatewayd run`: it keeps running and deletes nothing.

The hub simulator plays the hub but swallows its answers to data requests, so the only replies
the daemon gets to its outstanding batch are the fuzzer's: random bytes, random JSON, replies
with the right id but a `code` of the wrong type, an integer code for a different id, huge
payloads. After each one the test waits until the daemon has counted it as dropped (its
metrics endpoint), so every example is known to have been read. At the end the process is
still running, no sample has left the queue, and a true 200 for the outstanding id deletes
exactly that batch's rows, so the check could have failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from gatewayd.sim.broker import free_port
from gatewayd.sim.hub import HubSimulator
from gatewayd.sim.modbus import ModbusSimulator, meter_points
from tests.support.brokers import FrontedBroker as Broker
from tests.support.child import Child
from tests.support.daemon import config_data, modbus_device, register_file, write_config

REQUESTS = "/sys/gwPK/gw001/thing/measurepoint/+/batch"


class Fuzzer:
    """An MQTT client that sees the daemon's data requests and answers them its own way."""

    def __init__(self, port: int) -> None:
        self.latest: tuple[str, str, list[dict[str, Any]]] | None = None
        self.first: tuple[str, str, list[dict[str, Any]]] | None = None
        #: Every data request seen, in order: (request id, its samples as (device, time)).
        self.seen: list[tuple[str, set[tuple[str, int]]]] = []
        self._cond = threading.Condition()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fuzzer")
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(REQUESTS, qos=1)
        self._client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        samples = {(e["deviceKey"], int(e["time"])) for e in body["params"]}
        with self._cond:
            self.latest = (msg.topic, str(body["id"]), body["params"])
            self.first = self.first or self.latest
            self.seen.append((str(body["id"]), samples))
            self._cond.notify_all()

    def request(self, timeout_s: float = 20) -> tuple[str, str, list[dict[str, Any]]]:
        """The first data request: the one the fuzzed replies all answer."""
        with self._cond:
            assert self._cond.wait_for(lambda: self.first is not None, timeout_s)
            assert self.first is not None
            return self.first

    def sent_again(self, request_id: str) -> bool:
        """Whether a later request carried any sample of `request_id` (a re-send or a split).
        Live readings taken meanwhile go out in requests of their own (they do not wait for
        the backlog's window): those are new samples, not the fuzzed request's."""
        with self._cond:
            ids = [rid for rid, _ in self.seen]
            index = ids.index(request_id)
            original = self.seen[index][1]
            return any(samples & original for _, samples in self.seen[index + 1 :])

    def reply(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic + "_reply", payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class Metrics:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"

    def sample(self, name: str) -> float:
        with urllib.request.urlopen(self.url, timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    return float(sample.value)
        raise KeyError(name)

    def wait_above(self, name: str, floor: float, timeout_s: float = 10) -> float:
        deadline = time.monotonic() + timeout_s
        while (value := self.sample(name)) <= floor:
            assert time.monotonic() < deadline, f"{name} stayed at {value}"
            time.sleep(0.005)  # a scrape is the only window into the child process
        return value


def row_ids(db: Path) -> set[int]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return {row_id for (row_id,) in conn.execute("SELECT id FROM samples")}


@pytest.fixture
def meter() -> Iterator[ModbusSimulator]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    simulator = ModbusSimulator(unit_ids=(1,))
    asyncio.run_coroutine_threadsafe(simulator.start(), loop).result(10)
    try:
        yield simulator
    finally:
        asyncio.run_coroutine_threadsafe(simulator.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


not_int_200 = (
    st.text(max_size=5)
    | st.floats(allow_nan=True)
    | st.booleans()
    | st.none()
    | st.just("200")
    | st.just(200.0)
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=12,
)


@st.composite
def fuzzed_reply(draw: st.DrawFn, request_id: str) -> bytes:
    """A reply that is anything but a true 200 for `request_id`."""
    kind = draw(st.sampled_from(["bytes", "json", "bad_code", "other_id", "bad_id", "huge"]))
    if kind == "bytes":
        return draw(st.binary(max_size=400))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    extra = {"data": draw(json_values), "message": draw(st.text(max_size=30))}
    if kind == "bad_code":
        return json.dumps({"id": request_id, "code": draw(not_int_200), **extra}).encode()
    if kind == "other_id":
        other = draw(st.text(max_size=12).filter(lambda s: s != request_id))
        return json.dumps({"id": other, "code": draw(st.integers()), **extra}).encode()
    if kind == "bad_id":
        wrong = draw(st.sampled_from([[request_id], {"id": request_id}, None, True, 1.5]))
        return json.dumps({"id": wrong, "code": 200, **extra}).encode()
    size = draw(st.integers(100_000, 2_000_000))
    return json.dumps({"id": request_id, "code": "200", "data": "x" * size}).encode()


def test_fuzzed_replies_never_delete_and_never_stop_the_daemon(
    tmp_path: Path, broker: Broker, hub: HubSimulator, meter: ModbusSimulator
) -> None:
    hub.set_faults(drop=True)  # the hub answers topology and logins, never data
    metrics_port = free_port()
    db = tmp_path / "queue.db"
    data = config_data(
        tmp_path,
        broker.port,
        [modbus_device("m1", meter.port, 1, meter_points(), 0.2)],
        forward={"inflight": 1, "reply_timeout_s": 600, "batch_max_samples": 5},
        metrics={"listen": f"127.0.0.1:{metrics_port}"},
        queue={"path": str(db), "commit_interval_ms": 50},
    )
    config = write_config(tmp_path / "config.toml", data)
    register_file(hub, config)
    child = Child(config, tmp_path / "notify.sock", log_path=tmp_path / "gatewayd.log")
    loop = asyncio.new_event_loop()
    fuzzer = Fuzzer(broker.backend_port)
    metrics = Metrics(metrics_port)
    try:
        loop.run_until_complete(child.start())
        topic, request_id, params = fuzzer.request()
        before = row_ids(db)
        assert before, "the outstanding batch is queued"
        dropped = metrics.sample("gatewayd_replies_dropped_total")

        @settings(
            max_examples=150,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
            database=None,
        )
        @given(st.data())
        def one_reply(data: st.DataObject) -> None:
            nonlocal dropped
            fuzzer.reply(topic, data.draw(fuzzed_reply(request_id)))
            dropped = metrics.wait_above("gatewayd_replies_dropped_total", dropped)
            assert metrics.sample("gatewayd_sent_samples_total") == 0

        one_reply()

        assert child.alive, "the daemon survived every reply"
        assert metrics.sample("gatewayd_rejected_samples_total") == 0
        assert before <= row_ids(db), "no sample left the queue"
        assert not fuzzer.sent_again(request_id), "the fuzzed request is still outstanding"
        # The one reply that may delete: a true 200 for that id takes exactly its rows.
        fuzzer.reply(topic, json.dumps({"id": request_id, "code": 200, "data": {}}).encode())
        metrics.wait_above("gatewayd_sent_samples_total", 0)
        assert metrics.sample("gatewayd_sent_samples_total") == len(params)
        assert len(before - row_ids(db)) == len(params)
    finally:
        fuzzer.close()
        loop.run_until_complete(child.stop())
        loop.close()
