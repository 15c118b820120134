"""One unit folder, read: its spec, its typed result, and its files — each file only as the unit's
``result.json`` vouches for it (size and SHA-256; :func:`medtransfer.integrity.check_file`). The
store asks :func:`unit_problem` whether a unit is done; every reader of a unit's files goes through
:meth:`UnitInfo.file` or :func:`unit_file`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtransfer.errors import IntegrityError
from medtransfer.integrity import check_file, check_files, read_record
from medtransfer.study.rundir.layout import BEST, LAST, RESULT, UNIT_SPEC
from medtransfer.study.rundir.unit_result import CellResult, PretrainResult, UnitResult, result_from_json

__all__ = ["REDO", "UnitInfo", "read_result", "read_spec", "trained_checkpoint", "unit_file", "unit_problem"]

REDO = "; rerun the study to redo this unit (medtransfer run with the same --out)"


def read_result(folder: Path, kind: str) -> UnitResult:
    """The typed result of the ``kind`` unit in ``folder``; IntegrityError naming ``result.json``
    when it is unreadable, changed since it was written, or lacks what a finished unit has."""
    path = Path(folder) / RESULT
    return result_from_json(read_record(path, _run_of(folder)), kind, path)


def _run_of(folder: Path) -> Path:
    """The run folder a unit folder belongs to (``<run>/units/<unit>``)."""
    return Path(folder).parent.parent


def read_spec(folder: Path) -> dict[str, Any]:
    """The unit's spec from ``unit.json`` (empty when the file is absent)."""
    path = Path(folder) / UNIT_SPEC
    if not path.is_file():
        return {}
    spec = read_record(path, _run_of(folder)).get("spec", {})
    if not isinstance(spec, dict):
        raise IntegrityError(f"{path}: 'spec' is not a mapping")
    return spec


def unit_problem(folder: Path, kind: str) -> str | None:
    """Why the ``kind`` unit in ``folder`` does not count as done (None when it does): no
    ``result.json``, a damaged one, or a file it vouches for that is missing or changed."""
    if not (Path(folder) / RESULT).is_file():
        return "not finished (no result.json)"
    try:
        result = read_result(folder, kind)
        check_files(folder, result.files, Path(folder) / RESULT)
    except IntegrityError as exc:
        return str(exc)
    return None


def unit_file(result: UnitResult, name: str, hint: str = "") -> Path:
    """``name`` in the result's unit folder, once the result vouches for it unchanged
    (IntegrityError naming the file, with ``hint`` added, otherwise)."""
    try:
        return check_file(result.dir / name, result.files, result.dir / RESULT)
    except IntegrityError as exc:
        if not hint:
            raise
        raise IntegrityError(f"{exc}{hint}") from exc


def trained_checkpoint(result: UnitResult, hint: str = "") -> Path:
    """The checkpoint of the unit's trained model, checked: a pretraining's recorded
    ``checkpoint``; a cell's ``best.pt``, else (no best epoch kept) its ``last.pt``."""
    if isinstance(result, PretrainResult):
        return unit_file(result, result.checkpoint, hint)
    if BEST not in result.files and LAST not in result.files:
        raise IntegrityError(f"{result.dir}: no model checkpoint ({BEST} or {LAST}) recorded in its "
                             f"{RESULT}" + (f" (a {result.path} classifier on frozen features is not a "
                                            "torch model)" if result.path else "") + hint)
    return unit_file(result, BEST if BEST in result.files else LAST, hint)


@dataclass(frozen=True)
class UnitInfo:
    """One finished unit of a run: the manifest's job entry, its folder, spec and result."""

    job: dict[str, Any]
    dir: Path
    spec: dict[str, Any]
    result: UnitResult

    @property
    def kind(self) -> str:
        return str(self.job["kind"])

    @property
    def cell(self) -> CellResult:
        """The result of a cell (an error naming the unit for a pretraining)."""
        if not isinstance(self.result, CellResult):
            raise IntegrityError(f"{self.dir}: a {self.kind} unit, not a cell")
        return self.result

    def file(self, name: str) -> Path:
        """``name`` in the unit folder, checked against ``result.json``."""
        return unit_file(self.result, name, REDO)

    def has(self, name: str) -> bool:
        """Whether ``result.json`` vouches for a file ``name``."""
        return name in self.result.files

    @property
    def checkpoint(self) -> Path:
        """The trained model's checkpoint, checked (see :func:`trained_checkpoint`)."""
        return trained_checkpoint(self.result, REDO)
