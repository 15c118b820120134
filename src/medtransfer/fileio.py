"""Atomic, durable file writes and safe CSV cells.

Writes go to a temp file in the same folder, which is flushed and fsynced, then renamed over the
target with ``os.replace`` and the folder fsynced: readers never see a half-written file, and a
killed process or a power loss leaves the old file (or none) behind, never a truncated one.
Files are created with the mode the user's umask gives (``0666 & ~umask``), like ``open``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from medtransfer.errors import DiskFullError

__all__ = ["cell_in", "cell_out", "disk_full_error", "file_record", "fsync_dir", "is_disk_full",
           "umask_mode", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _proc_umask() -> int | None:
    """The process's umask as Linux reports it (``Umask:`` in /proc/self/status, Linux 4.7+)."""
    with contextlib.suppress(OSError, ValueError, IndexError), \
            open("/proc/self/status", encoding="ascii", errors="replace") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return None


def _umask_at_import() -> int:
    """The umask, read once when this module is first imported (before a study starts threads):
    ``os.umask`` reads it only by setting it, a window in which other threads' files would get
    the borrowed mask, so it is never called again."""
    mask = _proc_umask()
    if mask is None:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_START_UMASK = _umask_at_import()


def umask_mode(base: int = 0o666) -> int:
    """``base`` with the process's umask applied (what ``open`` would create). The umask is read
    without ever changing it (Linux: /proc/self/status, so a later ``os.umask`` is seen), or,
    where the OS cannot say, once at import: no other thread ever sees a borrowed umask."""
    mask = _proc_umask()
    return base & ~(_START_UMASK if mask is None else mask)


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on a folder
            os.fsync(fd)
    finally:
        os.close(fd)


_TORCH_WRITE_FAILED = ("PytorchStreamWriter failed", "inline_container", "unexpected pos")


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is a write that ran out of space: an
    ``OSError`` ENOSPC/EDQUOT, or torch's serialization error that a full disk causes."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, DiskFullError):
            return True
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(cur, RuntimeError) and any(m in str(cur) for m in _TORCH_WRITE_FAILED):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _free(path: Path) -> str:
    for folder in (path, *path.parents):
        with contextlib.suppress(OSError):
            return f"{shutil.disk_usage(folder).free / 2**20:,.0f} MiB free there now"
    return "free space unknown"


def disk_full_error(path: Path, exc: BaseException, what: str = "") -> DiskFullError:
    """A clear error for a write into ``path`` that ran out of space."""
    return DiskFullError(f"cannot write {path}: no space left on the device ({_free(Path(path))}; "
                         f"{type(exc).__name__}: {exc}){what}. Free some space (e.g. medtransfer cache "
                         "--clear) and rerun: finished work is kept")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably, mode ``0666 & ~umask``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, umask_mode())  # mkstemp creates 0600: colleagues could not read the run
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and is_disk_full(exc):
            raise disk_full_error(path, exc, "; the file was left as it was") from exc
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically and durably."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def file_record(path: Path) -> dict[str, Any]:
    """``{"size": bytes, "sha256": hex}`` of a file: what a unit's ``result.json`` vouches for."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


def cell_out(text: str) -> str:
    """A text cell as written to CSV: one that a spreadsheet would run as a formula (starting
    with ``= + - @``, tab or CR) — or that starts with ``'`` — gets a leading ``'``.
    :func:`cell_in` gives the original back."""
    return "'" + text if text.startswith((*FORMULA_START, "'")) else text


def cell_in(text: str) -> str:
    """The original text of a cell written by :func:`cell_out`."""
    return text[1:] if text.startswith("'") else text
