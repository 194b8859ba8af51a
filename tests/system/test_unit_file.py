"""Fast checks of the unit file against the README (no root): what the booted test relies on."""

from __future__ import annotations

import re

from tests.system.install import REPO, readme_systemd_steps

UNIT = REPO / "systemd" / "gatewayd.service"


def unit_lines(key: str) -> list[str]:
    return [
        line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if line.startswith(f"{key}=")
    ]


def test_the_unit_does_not_override_the_config_file() -> None:
    """An Environment=GATEWAYD_QUEUE__PATH silently beat queue.path in config.toml (issue 17)."""
    overrides = [v for v in unit_lines("Environment") if v.startswith("GATEWAYD_")]
    assert overrides == ["GATEWAYD_CONFIG=/etc/gatewayd/config.toml"], overrides


def test_the_documentation_the_unit_names_is_installed_by_the_readme() -> None:
    (doc,) = unit_lines("Documentation")
    path = doc.removeprefix("file://")
    assert any(path in step for step in readme_systemd_steps()), doc


def test_the_service_user_can_read_its_config_directory() -> None:
    """`install -d -m 0750 /etc/gatewayd` made it root:root: the service could not enter it."""
    steps = readme_systemd_steps()
    made = next(s for s in steps if re.search(r"install -d .*/etc/gatewayd$", s))
    assert "-g gatewayd" in made, made


def test_every_credential_the_unit_loads_is_created_by_the_readme() -> None:
    steps = "\n".join(readme_systemd_steps())
    for value in unit_lines("LoadCredential"):
        _, source = value.split(":", 1)
        assert source in steps, value
