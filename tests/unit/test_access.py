"""`check` runs as root, which reads anything: it must say when the service user could not."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.access import unreadable_by

NOBODY_UID, NOBODY_GID, SERVICE_GID = 65534, 65534, 4242

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sets file owners: needs root")


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Under /tmp and open to all: pytest's own base directory is root's alone (0700)."""
    base = Path(tempfile.mkdtemp(prefix="gatewayd-access-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base)


def test_a_directory_only_root_may_enter_is_named(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o750)
    os.chown(etc, 0, 0)
    config = etc / "config.toml"
    config.write_text("x")
    config.chmod(0o640)
    os.chown(config, 0, SERVICE_GID)
    problem = unreadable_by(config, NOBODY_UID, {SERVICE_GID})
    assert problem is not None and str(etc) in problem and "0750" in problem, problem
    os.chown(etc, 0, SERVICE_GID)  # what the README now does: install -d -m 0750 -g gatewayd
    assert unreadable_by(config, NOBODY_UID, {SERVICE_GID}) is None


def test_a_file_for_root_only_is_named(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0o600)
    os.chown(secret, 0, 0)
    problem = unreadable_by(secret, NOBODY_UID, {NOBODY_GID})
    assert problem is not None and "0600" in problem
    secret.chmod(0o604)
    assert unreadable_by(secret, NOBODY_UID, {NOBODY_GID}) is None
