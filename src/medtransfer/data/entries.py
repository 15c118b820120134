"""Which files a data source may name: regular files inside its data root.

A folder source's root is its folder, a CSV source's root is the CSV's folder. An entry (a class
folder, a subfolder, an image; a CSV path, ``..`` and absolute paths included) must resolve inside
the root unless ``data.follow_symlinks`` is true: a link elsewhere would make ``/etc`` a class or
``/etc/passwd`` an image. An image must be a regular file even then: a device (``/dev/zero``), a
FIFO or a socket would be read forever or block.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from medtransfer.errors import DataError

__all__ = ["DataRoot", "not_regular", "require_regular"]

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISSOCK, "a socket"))
REFUSED_ALWAYS = ("device files, FIFOs and sockets are refused even with data.follow_symlinks: true")


def not_regular(path: Path | str) -> str | None:
    """None when ``path`` (links followed) is a regular file, else what it is ("a character
    device", "missing", ...). Only ``stat`` is called: opening a FIFO would block."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing (a broken link?)" if os.path.islink(path) else "missing"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def require_regular(path: Path, what: str = "data file") -> None:
    """A DataError naming ``path`` unless it is a regular file."""
    kind = not_regular(path)
    if kind is not None:
        raise DataError(f"{what} {path} is {kind}; expected a regular file ({REFUSED_ALWAYS})")


class DataRoot:
    """The folder a source's entries must stay inside (unless ``follow_symlinks``)."""

    def __init__(self, root: Path, follow_symlinks: bool) -> None:
        self.root = Path(root)
        self.real = os.path.realpath(self.root)
        self.follow_symlinks = follow_symlinks

    def outside(self, path: Path | str) -> str | None:
        """Where ``path`` leads when that is outside the root (None: inside, or links allowed)."""
        if self.follow_symlinks:
            return None
        real = os.path.realpath(path)
        inside = real == self.real or real.startswith(self.real.rstrip(os.sep) + os.sep)
        return None if inside else real

    def problem(self, path: Path) -> str | None:
        """Why ``path`` may not be an image entry of this source, or None."""
        kind = not_regular(path)
        if kind is not None:
            return kind if kind.startswith(("missing", "unreadable")) else (
                f"{kind}, not a regular file ({REFUSED_ALWAYS})")
        target = self.outside(path)
        if target is not None:
            return (f"outside the data root {self.root} (it leads to {target}); set "
                    "data.follow_symlinks: true to allow links and paths leading out of it")
        return None

    def check_inside(self, path: Path, what: str) -> None:
        """A DataError naming ``path`` (a ``what``: class folder, subfolder, image) when it
        leads outside the root."""
        target = self.outside(path)
        if target is not None:
            raise DataError(
                f"{what} {path} is a link leading outside the data root {self.root} (to {target}); "
                "data entries must be regular files inside the data root. Set "
                "data.follow_symlinks: true to allow links leading out of it")
