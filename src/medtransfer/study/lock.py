"""Locks on run folders and units, so two processes never write the same files at once.

* **Run folder** (``RUN/.medtransfer.lock``): held by the process that runs a study (or a search)
  into the folder, for the whole run. A second ``medtransfer run`` into the same folder stops *at
  once* with an error naming the folder and the holder (pid, host, start time). Failing beats
  waiting: a user who started a second run by mistake learns it immediately, and one who meant
  it can choose another ``--out``; a queued run would silently start hours later.
* **Unit** (``RUN/.locks/<kind>-<key>.lock``): held while a unit is computed. A second
  process (a local worker or a Ray actor on a shared file system) that needs the same unit
  *waits*, then reuses the finished unit — so no unit is ever trained twice at once, and
  ``Unit.start()`` never removes a folder another live process is writing.

Locks are ``fcntl.flock`` locks, released by the kernel when their process dies: a lock file
left behind by a killed run is not "stale" and is taken over (with a warning naming the dead
holder). Within one process the run lock is re-entrant (a search runs studies into its folder).
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medtransfer.errors import MedTransferError

__all__ = ["LOCK_NAME", "RunLockedError", "run_lock", "unit_lock"]

LOCK_NAME = ".medtransfer.lock"


class RunLockedError(MedTransferError):
    """The run folder is in use by another live process."""


_held: dict[Path, tuple[int, int]] = {}  # run folder → (fd, depth) held by this process
_held_lock = threading.Lock()


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode("utf-8", "replace").strip()


def _describe(text: str) -> str:
    fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
    if not fields.get("pid"):
        return "another process"
    return f"pid {fields['pid']} on host {fields.get('host', '?')}, started {fields.get('started', '?')}"


def _stamp(fd: int) -> None:
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    text = f"pid={os.getpid()} host={socket.gethostname()} started={started}\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode(), 0)


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold run folder ``out``'s lock (created if need be); raise :class:`RunLockedError` at once
    if another process holds it."""
    out = Path(out).resolve()
    with _held_lock:
        if out in _held:
            fd, depth = _held[out]
            _held[out] = (fd, depth + 1)
        else:
            out.mkdir(parents=True, exist_ok=True)
            fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                who = _describe(_holder(fd))
                os.close(fd)
                raise RunLockedError(
                    f"run folder {out} is in use by {who}: another medtransfer run is writing "
                    "into it. Wait for it to finish, or choose another --out folder"
                ) from None
            left = _holder(fd)
            if left:  # the previous holder died without releasing (the kernel freed its lock)
                warnings.warn(f"run folder {out}: taking over the lock of {_describe(left)}, which "
                              "is no longer running (killed?); its finished units are kept",
                              stacklevel=3)
            _stamp(fd)
            _held[out] = (fd, 1)
    try:
        yield
    finally:
        with _held_lock:
            fd, depth = _held[out]
            if depth > 1:
                _held[out] = (fd, depth - 1)
            else:
                del _held[out]
                os.ftruncate(fd, 0)  # a clean release leaves an empty lock file
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


@contextmanager
def unit_lock(root: Path, name: str) -> Iterator[None]:
    """Hold the lock of unit ``name`` under run folder ``root``, waiting while another process
    computes it."""
    folder = Path(root) / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _stamp(fd)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
