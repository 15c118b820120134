"""Units of work on disk: a folder per unit, keyed by a hash of what determines its result.

A unit is done when its ``result.json`` matches its own digest, holds what its kind records, and
every file it vouches for (``files``: checkpoints, predictions, history — size and SHA-256,
recorded when the unit finished) is there unchanged (:func:`medtransfer.study.rundir.unit_problem`,
the one check every reader of the unit uses too). ``result.json`` is written last, atomically and
durably, so a unit killed half-way is simply redone; a damaged one is redone with a message saying
why; a finished one is never recomputed. A unit is computed under its lock (:func:`unit_lock`), so two
processes never compute, or remove, the same unit at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from medtransfer.fileio import (
    disk_full_error,
    file_record,
    is_disk_full,
    write_json_atomic,
    write_text_atomic,
)
from medtransfer.integrity import write_record
from medtransfer.study.lock import unit_lock
from medtransfer.study.rundir.layout import RESULT, UNIT_SPEC, UNITS, VOUCHED
from medtransfer.study.rundir.unit import read_result, unit_problem
from medtransfer.study.rundir.unit_result import FileRecord, UnitResult, result_to_json

__all__ = ["Unit", "stable_hash", "write_json_atomic", "write_text_atomic"]

R = TypeVar("R", bound=UnitResult)

def stable_hash(obj: Any, length: int = 10) -> str:
    """A short hash of JSON-able data, independent of dict order."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class Unit:
    """One unit of work in ``root/units/<kind>-<name>-<key>``."""

    def __init__(self, root: Path, kind: str, name: str, spec: dict[str, Any], *,
                 share: bool = False) -> None:
        self.root, self.kind, self.name, self.spec = Path(root), kind, name, spec
        self.share = share
        self.key = stable_hash(spec)
        self.own_dir = self.root / UNITS / f"{kind}-{name}-{self.key}"
        self.dir = self.own_dir
        self._locked = False
        self._resolve()

    def _resolve(self) -> None:
        """Use another variant's identical finished unit (same key), if any, when sharing."""
        self.dir = self.own_dir
        if self.share and not self.done():
            same = sorted(p.parent for p in self.root.glob(f"{UNITS}/{self.kind}-*-{self.key}/{RESULT}"))
            valid = [d for d in same if unit_problem(d, self.kind) is None]
            if valid:
                self.dir = valid[0]

    @property
    def result_path(self) -> Path:
        return self.dir / RESULT

    def problem(self) -> str | None:
        """Why this unit must be (re)computed; None when it is done."""
        return unit_problem(self.dir, self.kind)

    def done(self) -> bool:
        return self.problem() is None

    def result(self) -> UnitResult:
        """The typed result of this (done) unit."""
        return read_result(self.dir, self.kind)

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
        write_record(self.dir / UNIT_SPEC, {"kind": self.kind, "name": self.name, "key": self.key,
                                            "spec": self.spec})
        return self.dir

    def finish(self, result: R) -> R:
        """Record ``result`` with the size and SHA-256 of every file the unit vouches for, and
        its own digest (written last: from now on the unit is done); returns what was written,
        with the unit's folder."""
        files = sorted({p for pattern in VOUCHED for p in self.dir.glob(pattern) if p.is_file()})
        done = dataclasses.replace(result, files={p.name: FileRecord(**file_record(p)) for p in files},
                                   dir=self.dir)
        write_record(self.result_path, result_to_json(done))
        return done
