"""`gatewayd queue …` on real files, including one the daemon's writer is using."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from gatewayd.cli import main
from gatewayd.config import QueueConfig
from gatewayd.model import Sample
from gatewayd.queue.store import SampleQueue, Store, connect, read_stats

BASE = (int(time.time()) - 7200) * 1000


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "q.db"
    store = Store(connect(path))
    from gatewayd.queue.store import migrate

    migrate(store.conn)
    samples = [Sample("pk", f"m{i % 2}", BASE + i * 1000, {"P": i}) for i in range(10)]
    store.insert(samples)
    ids = [r.id for r in store.fetch_after(0, 10)]
    store.reject(ids[:2], 1204, "Model validate failed: ['P']")
    store.reject(ids[2:3], 1206, "format")
    store.conn.close()
    return path


def test_peek_shows_the_oldest_in_send_order(db: Path) -> None:
    code, out = cli("queue", "peek", "-n", "3", "--db", str(db), "--json")
    rows = json.loads(out)
    assert code == 0 and [r["points"]["P"] for r in rows] == [3, 4, 5]
    code, out = cli("queue", "peek", "--db", str(db))
    assert code == 0 and "pk/m1" in out


def test_rejected_lists_code_and_message_and_filters(db: Path) -> None:
    rows = json.loads(cli("queue", "rejected", "--db", str(db), "--json")[1])
    assert sorted(r["code"] for r in rows) == [1204, 1204, 1206]
    only = json.loads(cli("queue", "rejected", "--code", "1206", "--db", str(db), "--json")[1])
    assert [r["message"] for r in only] == ["format"]


def test_requeue_rejected_by_code(db: Path) -> None:
    code, out = cli("queue", "requeue-rejected", "--code", "1204", "--db", str(db), "--json")
    assert code == 0 and json.loads(out) == {"requeued": 2}
    stats = read_stats(db)
    assert stats.pending_samples == 9 and stats.rejected == 1
    assert stats.state["requeued"] == 2


def test_export_jsonl_and_csv_with_filters(db: Path) -> None:
    code, out = cli(
        "queue", "export", "--db", str(db), "--device", "m1", "--since", str(BASE + 5000)
    )
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["points"]["P"] for r in lines] == [5, 7, 9]
    until = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((BASE + 6000) / 1000))
    code, out = cli("queue", "export", "--db", str(db), "--format", "csv", "--until", until)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [json.loads(r["points"])["P"] for r in rows] == [3, 4, 5]


def test_purge_needs_yes_and_filters(db: Path) -> None:
    code, out = cli("queue", "purge", "--db", str(db))
    assert code == 2 and "--yes" in out
    assert read_stats(db).pending_samples == 7
    code, out = cli("queue", "purge", "--yes", "--device", "m0", "--db", str(db), "--json")
    assert code == 0 and json.loads(out) == {"purged": 3}
    code, out = cli(
        "queue", "purge", "--yes", "--before", str(BASE + 6000), "--db", str(db), "--json"
    )
    assert json.loads(out) == {"purged": 2}  # m1's P=3 and P=5
    stats = read_stats(db)
    assert stats.pending_samples == 2 and stats.state["purged"] == 5


def test_vacuum_gives_space_back(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    store = Store(connect(path))
    from gatewayd.queue.store import migrate

    migrate(store.conn)
    store.insert([Sample("pk", "m", BASE + i, {"P": "x" * 200}) for i in range(5000)])
    store.ack([r.id for r in store.fetch_after(0, 5000)])
    store.conn.close()
    code, out = cli("queue", "vacuum", "--db", str(path), "--json")
    figures = json.loads(out)
    assert code == 0 and figures["bytes_after"] < figures["bytes_before"] / 2


def test_bad_times_and_missing_files_are_one_clear_line(tmp_path: Path) -> None:
    code, out = cli("queue", "export", "--db", str(tmp_path / "x.db"), "--since", "yesterday")
    assert code == 2 and "ISO 8601" in out
    code, out = cli("queue", "peek", "--db", str(tmp_path / "x.db"))
    assert code == 1 and "no queue file" in out and "Traceback" not in out


async def test_commands_work_while_the_daemon_writes(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    queue = SampleQueue(QueueConfig(path=path, commit_interval_ms=5))
    await queue.open()
    expected = 0
    try:
        for round_ in range(20):
            for i in range(50):
                queue.put(Sample("pk", "m", BASE + round_ * 100 + i, {"P": i}))
            await queue.flush()
            expected += 50
            code, out = cli("queue", "stats", "--db", str(path), "--json")
            assert code == 0 and json.loads(out)["pending_samples"] == expected
            if round_ == 10:  # the first round's samples, taken before BASE + 100
                code, out = cli(
                    "queue",
                    "purge",
                    "--yes",
                    "--before",
                    str(BASE + 100),
                    "--db",
                    str(path),
                    "--json",
                )
                assert code == 0 and json.loads(out) == {"purged": 50}
                expected -= 50
    finally:
        await queue.close()
    assert read_stats(path).pending_samples == expected == 950


@pytest.mark.parametrize(
    "command", ["stats", "peek", "export", "rejected", "vacuum", "requeue-rejected"]
)
def test_a_file_that_is_not_a_database_fails_every_command_alike(
    tmp_path: Path, command: str
) -> None:
    """Seen failing: `queue stats` on `echo hello > junk.db` said "pending 0" and exited 0
    (it read the file as a damaged queue: nothing readable), where the others said the truth."""
    junk = tmp_path / "junk.db"
    junk.write_text("hello\n")
    code, out = cli("queue", command, "--db", str(junk))
    assert code == 1, out
    assert out.strip().splitlines()[-1] == f"error: {junk}: file is not a database"
    assert "pending" not in out and "Traceback" not in out
    assert junk.read_text() == "hello\n"


@pytest.mark.parametrize("command", ["stats", "peek", "rejected"])
@pytest.mark.parametrize("what", ["directory", "cut in half", "header only"])
def test_a_directory_or_a_cut_file_fails_every_command_alike(
    tmp_path: Path, db: Path, command: str, what: str
) -> None:
    """Found by an adversary: `queue stats` on a directory printed a traceback, and on a queue
    cut short (nothing readable, not even the samples table) said "pending 0" and exited 0."""
    target = tmp_path / "target.db"
    if what == "directory":
        target.mkdir()
    else:
        data = db.read_bytes()
        target.write_bytes(data[: len(data) // 2] if what == "cut in half" else data[:100])
    code, out = cli("queue", command, "--db", str(target))
    assert code == 1, out
    assert out.strip().splitlines()[-1].startswith("error: "), out
    assert "pending" not in out and "Traceback" not in out
