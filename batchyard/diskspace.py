"""A full disk, said as what it is: which file system, what was being written, about how much
room it needed. Writing a spool or a rejects file that does not fit is a configuration
problem (more room, or another place), not a transient fault: retrying fills the disk again."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from batchyard.errors import ConfigurationError


def no_space(exc: BaseException) -> bool:
    """Whether `exc` is a write that found the disk (or the user's quota) full; Arrow's I/O
    errors carry the message, not the errno."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, OSError) and "no space left on device" in str(exc).lower()


def no_space_error(doing: str, path: Path | str, needed: int, hint: str) -> ConfigurationError:
    """`no space left on /mnt/work while spooling ... (needed about 12 MB, 1 MB free); hint`."""
    path = Path(path)
    where = _mount_point(path)
    try:
        free = f", {shutil.disk_usage(where).free / (1 << 20):,.0f} MB free"
    except OSError:
        free = ""
    megabytes = max(1, -(-needed // (1 << 20)))
    return ConfigurationError(f"no space left on {where} while {doing} (needed about "
                              f"{megabytes:,} MB{free}); {hint}")


def _mount_point(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    while not path.is_mount() and path != path.parent:
        path = path.parent
    return path
