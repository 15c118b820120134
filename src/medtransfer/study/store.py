"""Units of work on disk: a folder per unit, keyed by a hash of what determines its result.

A unit is done when its ``result.json`` parses, holds the keys its kind needs, and every file it
vouches for (``files``: checkpoints, predictions, history — size and SHA-256, recorded when the
unit finished) is there unchanged. ``result.json`` is written last, atomically and durably, so a
unit killed half-way is simply redone; a damaged one is redone with a message saying why; a
finished one is never recomputed. A unit is computed under its lock (:func:`unit_lock`), so two
processes never compute, or remove, the same unit at once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medtransfer.fileio import (
    disk_full_error,
    file_record,
    is_disk_full,
    write_json_atomic,
    write_text_atomic,
)
from medtransfer.study.lock import unit_lock

__all__ = ["Unit", "stable_hash", "write_json_atomic", "write_text_atomic"]

# Keys a finished unit's result.json must hold, by unit kind (other kinds: ``files`` only).
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "pretrain": ("val", "checkpoint", "classes", "files"),
    "cell": ("tests", "val", "classes", "files"),
    "trial": ("tests", "val", "classes", "files"),
}
# The files a unit vouches for: every checkpoint (a features unit's classifier.npz too), its
# predictions and its training history.
VOUCHED = ("*.pt", "*.npz", "predictions.csv", "history.csv")


def stable_hash(obj: Any, length: int = 10) -> str:
    """A short hash of JSON-able data, independent of dict order."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def unit_problem(folder: Path, kind: str) -> str | None:
    """Why the unit in ``folder`` does not count as done (None when it does)."""
    path = folder / "result.json"
    if not path.is_file():
        return "not finished (no result.json)"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{path} is unreadable ({exc})"
    if not isinstance(data, dict):
        return f"{path} does not hold a mapping"
    missing = [k for k in REQUIRED_KEYS.get(kind, ("files",)) if k not in data]
    if missing:
        return f"{path} lacks {', '.join(missing)} (damaged, or written by an older medtransfer)"
    files = data["files"]
    if not isinstance(files, dict):
        return f"{path}: 'files' is not a mapping"
    for name, want in sorted(files.items()):
        file = folder / name
        if not file.is_file():
            return f"{file} is missing"
        if not isinstance(want, dict) or file.stat().st_size != want.get("size"):
            return f"{file} has {file.stat().st_size} bytes, result.json recorded {want.get('size')}"
        if _sha256(file) != want.get("sha256"):
            return f"{file} differs from the file recorded in result.json (sha256 mismatch)"
    return None


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _sha256(file: Path) -> str:
    """A file's SHA-256, remembered while its size and mtime stay the same."""
    st = file.stat()
    key = (str(file), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_record(file)["sha256"]
    return _DIGESTS[key]


class Unit:
    """One unit of work in ``root/units/<kind>-<name>-<key>``."""

    def __init__(self, root: Path, kind: str, name: str, spec: dict[str, Any], *,
                 share: bool = False) -> None:
        self.root, self.kind, self.name, self.spec = Path(root), kind, name, spec
        self.share = share
        self.key = stable_hash(spec)
        self.own_dir = self.root / "units" / f"{kind}-{name}-{self.key}"
        self.dir = self.own_dir
        self._locked = False
        self._resolve()

    def _resolve(self) -> None:
        """Use another variant's identical finished unit (same key), if any, when sharing."""
        self.dir = self.own_dir
        if self.share and not self.done():
            same = sorted(p.parent for p in self.root.glob(f"units/{self.kind}-*-{self.key}/result.json"))
            valid = [d for d in same if unit_problem(d, self.kind) is None]
            if valid:
                self.dir = valid[0]

    @property
    def result_path(self) -> Path:
        return self.dir / "result.json"

    def problem(self) -> str | None:
        """Why this unit must be (re)computed; None when it is done."""
        return unit_problem(self.dir, self.kind)

    def done(self) -> bool:
        return self.problem() is None

    def result(self) -> dict[str, Any]:
        with self.result_path.open(encoding="utf-8") as fh:
            data: dict[str, Any] = json.load(fh)
        return data

    @contextmanager
    def claimed(self) -> Iterator[Unit]:
        """Hold the unit's lock (waiting while another process computes the same unit); on
        entry the unit is looked up again, so work finished meanwhile is reused."""
        with unit_lock(self.root, f"{self.kind}-{self.key}"):
            self._resolve()
            self._locked = True
            try:
                yield self
            except BaseException as exc:
                if not is_disk_full(exc) or self.done():
                    raise
                # An unfinished unit is redone anyway: remove its partial files to free the space.
                shutil.rmtree(self.own_dir, ignore_errors=True)
                raise disk_full_error(self.own_dir, exc, "; this unit's partial files were removed"
                                      ) from exc
            finally:
                self._locked = False

    def start(self, keep: Sequence[str] = ()) -> Path:
        """Fresh folder for a (re)run: leftovers of an interrupted or damaged attempt are
        removed, except the files named in ``keep`` of an attempt that never finished (no
        ``result.json``), which the work resumes from (a pretraining's ``last.pt``). Only under
        :meth:`claimed`, so no live process is writing there."""
        if not self._locked:
            raise RuntimeError(f"Unit.start() of {self.dir} without holding its lock (use claimed())")
        self.dir = self.own_dir
        if self.dir.exists() and keep and not self.result_path.exists():
            for child in self.dir.iterdir():
                if child.name in keep:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        elif self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.dir / "unit.json", {"kind": self.kind, "name": self.name,
                                                   "key": self.key, "spec": self.spec})
        return self.dir

    def finish(self, result: dict[str, Any]) -> dict[str, Any]:
        """Record ``result`` with the size and SHA-256 of every file the unit vouches for
        (written last: from now on the unit is done); returns what was written."""
        files = sorted({p for pattern in VOUCHED for p in self.dir.glob(pattern) if p.is_file()})
        data = {**result, "files": {p.name: file_record(p) for p in files}}
        write_json_atomic(self.result_path, data)
        return data
