"""What the install inside the container needs from the host: the README's steps, the checkout,
and a wheelhouse so `pip install .` works offline and fast.

The README's systemd section is the script: its shell block is taken line by line, so a step
that does not work as written fails this test. Two kinds of line cannot run unattended and are
marked in the README by their comment: `# then edit it` (the test writes its config after that
line) and a secret typed at the terminal (the test gives it on stdin). `journalctl -f` follows
for ever and is left out.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).parents[2]
CACHE_DIR = Path("/var/tmp/gatewayd-systemtest")


def readme_systemd_steps(readme: Path = REPO / "README.md") -> list[str]:
    """The shell lines of the README's "Running under systemd" section, in order."""
    text = readme.read_text(encoding="utf-8")
    section = text.split("## Running under systemd", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, "the README's systemd section has no sh block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def wheelhouse() -> Path:
    """Wheels of every dependency and of the build backend, cached by what pyproject asks for."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = sorted(project["project"]["dependencies"] + project["build-system"]["requires"])
    key = hashlib.sha256("\n".join([sys.version.split()[0], *wanted]).encode()).hexdigest()[:16]
    house = CACHE_DIR / f"wheelhouse-{key}"
    if house.is_dir():
        return house
    partial = house.with_name(house.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(partial), *wanted],
        check=True,
        timeout=900,
    )
    partial.rename(house)
    return house


def copy_checkout(dest: Path) -> None:
    """The files an operator's clone has (tracked, and new ones not ignored), without .venv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
