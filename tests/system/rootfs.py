"""A Debian root file system with systemd, built once by debootstrap and cached under /var/tmp.

Building takes minutes and ~300 MB, so the tree is kept between runs, keyed by a hash of what went
into it (suite, variant, packages, mirror). A test never boots the cached tree itself: it boots a
throw-away copy (`clone`), so one run's leftovers cannot leak into the next.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv")
CACHE_DIR = Path("/var/tmp/gatewayd-systemtest")
FALLBACK_MIRROR = "http://deb.debian.org/debian"


def apt_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb822 or one-line sources), for `SUITE`."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file() or "disabled" in path.name:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.MULTILINE)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.MULTILINE)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1).rstrip("/")
        for line in text.splitlines():  # one-line style: deb [options] URI SUITE COMPONENTS
            parts = line.split()
            uri = next((p for p in parts[1:] if p.startswith(("http", "file"))), None)
            if parts[:1] == ["deb"] and uri and SUITE in parts:
                return uri.rstrip("/")
    return FALLBACK_MIRROR


def cache_key(mirror: str) -> str:
    text = "\n".join([SUITE, VARIANT, ",".join(PACKAGES), mirror])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_rootfs() -> Path:
    """The cached tree, built now if missing (into a temporary name, renamed when complete)."""
    mirror = apt_mirror()
    root = CACHE_DIR / f"rootfs-{SUITE}-{cache_key(mirror)}"
    if (root / "usr/lib/systemd/systemd").exists():
        return root
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run(
        [
            "debootstrap",
            f"--variant={VARIANT}",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(partial),
            mirror,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=1800,
    )
    # The cache is a base: no apt lists or package files to carry along in every copy.
    shutil.rmtree(partial / "var/cache/apt/archives", ignore_errors=True)
    partial.rename(root)
    return root


def clone(root: Path, dest: Path) -> Path:
    """A private copy of the cached tree for one boot (reflink where the file system can)."""
    subprocess.run(["cp", "-a", "--reflink=auto", f"{root}/.", str(dest)], check=True, timeout=600)
    return dest
