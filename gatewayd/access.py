"""Could the service user read this file? `gatewayd check` usually runs as root, which reads
anything, so a config the `gatewayd` user cannot reach passed `check` and then failed the
service with exit 78 (issue 17). This answers from the permission bits, as the kernel would for
that user: every directory on the way must let it in, and the file must let it read.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

SERVICE_USER = "gatewayd"


def _allowed(info: os.stat_result, uid: int, gids: set[int], bits: tuple[int, int, int]) -> bool:
    user_bit, group_bit, other_bit = bits
    if info.st_uid == uid:
        return bool(info.st_mode & user_bit)
    if info.st_gid in gids:
        return bool(info.st_mode & group_bit)
    return bool(info.st_mode & other_bit)


def _owner(info: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        user = str(info.st_uid)
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    return f"{user}:{group} {stat.S_IMODE(info.st_mode):04o}"


def unreadable_by(path: Path, uid: int, gids: set[int]) -> str | None:
    """Why the user (uid, all its groups) cannot read `path`; None if it can."""
    path = Path(os.path.abspath(path))
    for directory in reversed(path.parents):
        info = directory.stat()
        if not _allowed(info, uid, gids, (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)):
            return f"cannot enter {directory} ({_owner(info)})"
    info = path.stat()
    if not _allowed(info, uid, gids, (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)):
        return f"cannot read {path} ({_owner(info)})"
    return None


def service_user_problem(path: Path, user: str = SERVICE_USER) -> str | None:
    """When run as root and the service user exists: what keeps it from reading `path`."""
    if os.geteuid() != 0:
        return None  # not root: reading the file already proved what this user can do
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    gids = {entry.pw_gid, *(g.gr_gid for g in grp.getgrall() if user in g.gr_mem)}
    why = unreadable_by(path, entry.pw_uid, gids)
    return f"the service user {user!r} {why}" if why else None
