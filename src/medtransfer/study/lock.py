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

Locks are operating-system locks on the lock file (``flock`` on Linux and macOS, ``LockFileEx`` on
Windows, through the ``filelock`` package), released by the kernel when their process dies: a lock
file left behind by a killed run is not "stale" and is taken over (with a warning naming the dead
holder). Where the OS has neither, a marker file beside it (``filelock.SoftFileLock``, which
recovers the marker of a dead local process) stands in. Within one process the run lock is
re-entrant (a search runs studies into its folder).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock

from medtransfer.errors import MedTransferError

__all__ = ["LOCK_NAME", "RunLockedError", "run_lock", "unit_lock"]

LOCK_NAME = ".medtransfer.lock"


class RunLockedError(MedTransferError):
    """The run folder is in use by another live process."""


# an OS lock on the lock file itself; without one, filelock's marker-file lock
NATIVE = sys.platform == "win32" or filelock.has_fcntl


class _Lock:
    """One lock file, open, with its lock taken or refused."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        self.soft = None if NATIVE else filelock.SoftFileLock(f"{path}.held")

    def acquire(self, blocking: bool) -> bool:
        if self.soft is None:
            return filelock.lock_descriptor(self.fd, blocking=blocking, poll_interval=0.05)
        try:
            self.soft.acquire(timeout=-1 if blocking else 0, poll_interval=0.05)
        except filelock.Timeout:
            return False
        return True

    def holder(self) -> str:
        """What the holder stamped into the lock file ("" if nothing, or unreadable)."""
        try:
            os.lseek(self.fd, 0, os.SEEK_SET)
            return os.read(self.fd, 4096).decode("utf-8", "replace").strip()
        except OSError:  # Windows: another process's lock covers the first byte
            return ""

    def stamp(self) -> None:
        started = time.strftime("%Y-%m-%dT%H:%M:%S")
        text = f"pid={os.getpid()} host={socket.gethostname()} started={started}\n"
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.write(self.fd, text.encode())

    def release(self) -> None:
        """Empty the lock file (a clean release), unlock and close it."""
        try:
            os.ftruncate(self.fd, 0)
            if self.soft is None:
                filelock.unlock_descriptor(self.fd)
            else:
                self.soft.release()
        finally:
            self.close()

    def close(self) -> None:
        os.close(self.fd)


_held: dict[Path, tuple[_Lock, int]] = {}  # run folder → (lock, depth) held by this process
_held_lock = threading.Lock()


def _describe(text: str) -> str:
    fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
    if not fields.get("pid"):
        return "another process"
    return f"pid {fields['pid']} on host {fields.get('host', '?')}, started {fields.get('started', '?')}"


@contextmanager
def run_lock(out: Path, *, advice: str = "Wait for it to finish, or choose another --out folder"
             ) -> Iterator[None]:
    """Hold run folder ``out``'s lock (created if need be); raise :class:`RunLockedError` at once
    if another process holds it (its message ends with ``advice``)."""
    out = Path(out).resolve()
    with _held_lock:
        if out in _held:
            lock, depth = _held[out]
            _held[out] = (lock, depth + 1)
        else:
            out.mkdir(parents=True, exist_ok=True)
            lock = _Lock(out / LOCK_NAME)
            try:
                taken = lock.acquire(blocking=False)
            except BaseException:
                lock.close()
                raise
            if not taken:
                who = _describe(lock.holder())
                lock.close()
                raise RunLockedError(
                    f"run folder {out} is in use by {who}: another medtransfer run is writing "
                    f"into it. {advice}"
                ) from None
            left = lock.holder()
            if left:  # the previous holder died without releasing (the kernel freed its lock)
                warnings.warn(f"run folder {out}: taking over the lock of {_describe(left)}, which "
                              "is no longer running (killed?); its finished units are kept",
                              stacklevel=3)
            lock.stamp()
            _held[out] = (lock, 1)
    try:
        yield
    finally:
        with _held_lock:
            lock, depth = _held[out]
            if depth > 1:
                _held[out] = (lock, depth - 1)
            else:
                del _held[out]
                lock.release()


@contextmanager
def unit_lock(root: Path, name: str) -> Iterator[None]:
    """Hold the lock of unit ``name`` under run folder ``root``, waiting while another process
    computes it."""
    folder = Path(root) / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    lock = _Lock(folder / f"{name}.lock")
    try:
        lock.acquire(blocking=True)
        lock.stamp()
    except BaseException:
        lock.close()
        raise
    try:
        yield
    finally:
        lock.release()
