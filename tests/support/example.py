"""config.example.toml as an operator finishes it: the gateway's credential and a real secret."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parents[2] / "config.example.toml"


def gateway_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The systemd credential the example names, as LoadCredential= would hand it over."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "gateway").write_text("gateway-secret-value\n")
    (creds / "gateway").chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))


def finished_example_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    gateway_credential(tmp_path, monkeypatch)
    return EXAMPLE.read_text().replace('"change-me-too"', '"meter-secret-value"')
