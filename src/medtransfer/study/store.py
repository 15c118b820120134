"""Units of work on disk: a folder per unit, keyed by a hash of what determines its result.

A unit is done when its ``result.json`` exists; that file is written last and atomically, so a
unit killed half-way is simply redone, and a finished one is never recomputed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from medtransfer.fileio import write_json_atomic, write_text_atomic

__all__ = ["Unit", "stable_hash", "write_json_atomic", "write_text_atomic"]


def stable_hash(obj: Any, length: int = 10) -> str:
    """A short hash of JSON-able data, independent of dict order."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class Unit:
    """One unit of work in ``root/units/<kind>-<name>-<key>``."""

    def __init__(self, root: Path, kind: str, name: str, spec: dict[str, Any], *,
                 share: bool = False) -> None:
        self.kind, self.name, self.spec = kind, name, spec
        self.key = stable_hash(spec)
        self.dir = root / "units" / f"{kind}-{name}-{self.key}"
        if share and not self.done():
            # Another variant may already have done the identical work (same key): share it.
            same = sorted(p.parent for p in root.glob(f"units/{kind}-*-{self.key}/result.json"))
            if same:
                self.dir = same[0]

    @property
    def result_path(self) -> Path:
        return self.dir / "result.json"

    def done(self) -> bool:
        return self.result_path.is_file()

    def result(self) -> dict[str, Any]:
        with self.result_path.open(encoding="utf-8") as fh:
            data: dict[str, Any] = json.load(fh)
        return data

    def start(self) -> Path:
        """Fresh folder for a (re)run: leftovers of an interrupted attempt are removed."""
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        write_json_atomic(self.dir / "unit.json", {"kind": self.kind, "name": self.name,
                                                   "key": self.key, "spec": self.spec})
        return self.dir

    def finish(self, result: dict[str, Any]) -> None:
        write_json_atomic(self.result_path, result)
