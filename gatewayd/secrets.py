"""Where a device secret comes from: the config itself, a file, or a systemd credential.

The recommended way under systemd is `LoadCredential=`: systemd copies the secret into a private
directory only the service can read and names it in `$CREDENTIALS_DIRECTORY`. A secret file must
not be readable by every user, and a placeholder from the example config (`change-me`) is refused:
a gateway that logs in with a placeholder fails on the hub, far from the file that caused it.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

from pydantic import SecretStr

#: Where credentials are looked up when the daemon does not run under the unit (`check` from a
#: shell): the directory the unit's `LoadCredential=` lines load them from.
CREDSTORE = Path("/etc/gatewayd/credentials")

_PLACEHOLDER = re.compile(
    r"^(change[-_ ]?me|replace[-_ ]?me|set[-_ ]?me|todo|fixme|x+|secret|password|"
    r"your[-_ ]?secret|device[-_ ]?secret)([-_ ]?(too|here|\d+))?$",
    re.IGNORECASE,
)


def refuse_placeholder(value: Any) -> Any:
    """A secret left as in the example is a mistake; the value itself is never printed."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if isinstance(text, str) and _PLACEHOLDER.match(text.strip()):
        raise ValueError("is a placeholder from the example config: set the device's real secret")
    return value


def _read(path: Path, what: str) -> SecretStr:
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None
    if info.st_mode & stat.S_IROTH:
        raise ValueError(
            f"{what} {str(path)!r} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}): "
            "give it to group gatewayd with mode 0640, or use a systemd credential"
        )
    if not text:
        raise ValueError(f"{what} {str(path)!r} is empty")
    return refuse_placeholder(SecretStr(text))


def read_secret_file(value: Any) -> Any:
    """`device_secret_file = "/etc/gatewayd/x.secret"`: the file's content, stripped."""
    if not isinstance(value, str | Path):
        return value  # the type check reports it
    return _read(Path(value), "file")


def credentials_directory() -> Path:
    """`$CREDENTIALS_DIRECTORY` under the unit, else the directory the unit loads them from."""
    found = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(found) if found else CREDSTORE


def read_credential(value: Any) -> Any:
    """`device_secret_credential = "gateway"`: the credential of that name (`LoadCredential=`)."""
    if not isinstance(value, str):
        return value
    if not value or "/" in value or value in (".", ".."):
        raise ValueError(f"{value!r} is not a credential name")
    return _read(credentials_directory() / value, "credential")
