"""What a finished unit records in its ``result.json``, typed: :class:`PretrainResult` for a
pretraining, :class:`CellResult` for a cell (and a search trial). Written and read with
:func:`medtransfer.config.to_dict` / :func:`~medtransfer.config.from_dict`; the unit's folder is a
field (``dir``), not part of the file. Files written by earlier versions (the same keys, no
digest) load as they are."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medtransfer.config import NOT_SAVED, from_dict, to_dict
from medtransfer.errors import ConfigError, IntegrityError

__all__ = ["CellResult", "FileRecord", "Metrics", "NormPair", "PretrainResult", "StageRecord",
           "StrategyRecord", "UnitResult", "result_from_json", "result_to_json"]

Metrics = dict[str, float]
# Per-channel (mean, std) of the inputs a unit's model was trained with.
NormPair = tuple[tuple[float, ...], tuple[float, ...]]


def norm_pair(norm: Any) -> NormPair | None:
    """``(mean, std)`` as a tuple of float tuples (None stays None)."""
    return None if norm is None else (tuple(float(x) for x in norm[0]), tuple(float(x) for x in norm[1]))


@dataclass(frozen=True)
class FileRecord:
    """Size and SHA-256 of a file a unit vouches for."""

    size: int
    sha256: str


@dataclass(frozen=True)
class StageRecord:
    """One stage of a strategy: how it trained (cached activations, the full model, sklearn)."""

    name: str
    path: str
    reason: str
    trainable_params: int | None = None
    frozen_params: int | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    stop_reason: str | None = None
    seconds: float | None = None
    images_per_second: float | None = None
    precision: str | None = None


@dataclass(frozen=True)
class StrategyRecord:
    """What a strategy reported: its kind, time, stages and its own ``extra`` values (a features
    strategy's ``features_dim``, ``classifier``, ...), which the file holds beside the others."""

    kind: str
    seconds: float = 0.0
    stages: tuple[StageRecord, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, where: str) -> StrategyRecord:
        if not isinstance(data, dict):
            raise ConfigError(f"'{where}': expected a mapping, got {data!r}")
        own = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        return from_dict(cls, {**{k: v for k, v in data.items() if k in own},
                               "extra": {k: v for k, v in data.items() if k not in own}}, where)

    def to_json(self) -> dict[str, Any]:
        out = to_dict(self)
        out["stages"] = [_set(stage) for stage in out["stages"]]
        return {**{k: v for k, v in out.items() if k != "extra"}, **out["extra"]}


def _set(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the values a unit did not record (None), as the file has always held it."""
    return {k: v for k, v in data.items() if v is not None}


@dataclass(frozen=True)
class PretrainResult:
    """A pretraining on a source task."""

    val: Metrics  # validation metrics at the best epoch (``loss`` included)
    checkpoint: str  # the best epoch's checkpoint, else the last
    classes: list[str]
    best_epoch: int = 0
    stop_reason: str = ""
    epochs_run: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    precision: str = ""
    transfer_checkpoint: str | None = None  # what transfer starts from (pretrain.transfer_from: last)
    compile: bool = False
    input_norm: NormPair | None = None
    tested_epoch: dict[str, Any] | None = None  # {which: best | last, epoch}: the weights evaluated
    compat: dict[str, Any] | None = None  # the framework semantics each part ran with, where not torch
    files: dict[str, FileRecord] = field(default_factory=dict)
    dir: Path = field(default=Path(), metadata=NOT_SAVED)


@dataclass(frozen=True)
class CellResult:
    """A cell (or a search trial): validation and test metrics, and how it trained (its last
    stage's numbers, flat as the report's training table shows them)."""

    tests: dict[str, Metrics]
    val: Metrics
    classes: list[str]
    strategy: StrategyRecord | None = None
    messages: list[str] = field(default_factory=list)
    head_reset: bool = False
    prediction_rows: dict[str, int] = field(default_factory=dict)
    path: str = ""
    path_reason: str = ""
    trainable_layers: list[str] | None = None
    trainable_params: int | None = None
    frozen_params: int | None = None
    best_epoch: int | None = None
    stop_reason: str | None = None
    epochs_run: int | None = None
    seconds: float | None = None
    precision: str | None = None
    compile: bool = False
    input_norm: NormPair | None = None
    tested_epoch: dict[str, Any] | None = None  # {which: best | last, epoch}: the weights evaluated
    compat: dict[str, Any] | None = None  # the framework semantics each part ran with, where not torch
    # evaluate's test-time augmentation and temperature, which predict and export apply
    posthoc: dict[str, Any] | None = None
    pruned_at: int | None = None  # a search trial stopped by its pruner after this epoch
    pruned_value: float | None = None  # the watched validation value it was stopped at
    files: dict[str, FileRecord] = field(default_factory=dict)
    dir: Path = field(default=Path(), metadata=NOT_SAVED)

    @property
    def strategy_kind(self) -> str | None:
        return None if self.strategy is None else self.strategy.kind


UnitResult = PretrainResult | CellResult
_TYPES: dict[str, type[PretrainResult] | type[CellResult]] = {
    "pretrain": PretrainResult, "cell": CellResult, "trial": CellResult}


def _required(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def result_from_json(data: dict[str, Any], kind: str, path: Path) -> UnitResult:
    """The typed result of a ``kind`` unit from its ``result.json`` content (``path``, the file,
    names it in errors; the unit folder is its parent). Keys this version does not know are
    left out; a missing or mistyped key is an IntegrityError naming the file."""
    cls = _TYPES[kind]
    missing = [k for k in (*_required(cls), "files") if k not in data]
    if missing:
        raise IntegrityError(f"{path} lacks {', '.join(missing)} (damaged, or written by an older "
                             "medtransfer)")
    known = {f.name for f in dataclasses.fields(cls)} - {"dir"}
    raw = {k: v for k, v in data.items() if k in known}
    try:
        if cls is CellResult and raw.get("strategy") is not None:
            raw["strategy"] = StrategyRecord.from_json(raw["strategy"], "strategy")
        result = from_dict(cls, raw, "")
    except ConfigError as exc:
        raise IntegrityError(f"{path}: {exc} (damaged, or written by another medtransfer)") from exc
    return dataclasses.replace(result, dir=Path(path).parent)


def result_to_json(result: UnitResult) -> dict[str, Any]:
    """What ``result.json`` holds of ``result`` (its folder not included, nor what it did not
    record)."""
    out: dict[str, Any] = _set(to_dict(result))
    if isinstance(result, CellResult) and result.strategy is not None:
        out["strategy"] = result.strategy.to_json()
    return out
