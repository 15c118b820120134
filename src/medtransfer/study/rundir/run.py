"""Read a finished run folder: config, data summary, results, and — from ``manifest.json`` —
every job's unit and result. Everything the report, ``predict`` and ``export`` use of a run is
read here, and every record and file is checked as it is read.

The report compares *arms* on each target: an arm is one (variant, source, strategy) of the
study; its predictions are those of its repeat-0 cell (cross-validation: all folds' held-out
predictions together), so every arm of a target is evaluated on the same images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medtransfer.csvfile import read_csv
from medtransfer.errors import DataError, IntegrityError
from medtransfer.integrity import read_record
from medtransfer.study.config import StudyConfig
from medtransfer.study.load import study_from_dict
from medtransfer.study.rundir.layout import CONFIG, DATA, MANIFEST, RESULT, RESULTS
from medtransfer.study.rundir.predictions import POOLED, Predictions, unit_predictions
from medtransfer.study.rundir.unit import UnitInfo, read_result, read_spec

__all__ = ["Arm", "RunDir", "load_run", "manifest_record", "read_manifest", "read_results"]


@dataclass(frozen=True)
class Arm:
    """One (variant, source, strategy) on a target; ``cells``: its repeat-0 cell per fold."""

    label: str
    variant: str
    source: str
    target: str
    strategy: str
    cells: tuple[UnitInfo, ...]
    pretrain: UnitInfo | None = None

    @property
    def ids(self) -> dict[str, str]:
        return {"target": self.target, "arm": self.label, "variant": self.variant, "source": self.source,
                "strategy": self.strategy}


@dataclass
class RunDir:
    """A finished run directory, read."""

    path: Path
    config: StudyConfig
    data: dict[str, Any]
    results: list[dict[str, Any]]
    units: dict[str, UnitInfo]  # manifest job key → unit
    arms: dict[str, list[Arm]]  # target → its arms, the reference (first) arm first
    _predictions: dict[tuple[str, str], Predictions] = field(default_factory=dict, repr=False)

    @property
    def targets(self) -> list[str]:
        return list(self.arms)

    def classes(self, target: str) -> list[str]:
        return [str(c) for c in self.data[target]["classes"]]

    def arm(self, target: str, label: str) -> Arm:
        found = [a for a in self.arms[target] if a.label == label]
        if not found:
            raise DataError(f"{self.path}: no arm {label!r} on target {target!r}; arms: "
                            f"{', '.join(a.label for a in self.arms[target])}")
        return found[0]

    def externals(self, target: str) -> tuple[str, ...]:
        """The target's external test sets (from ``data.yaml``)."""
        return tuple(self.data[target].get("external", {}))

    @property
    def pretrains(self) -> list[UnitInfo]:
        return [u for u in self.units.values() if u.kind == "pretrain"]

    def predictions(self, arm: Arm) -> Predictions:
        """The arm's predictions (read once). Cross-validation: every fold's held-out predictions
        together (each image once, ``test_set`` fold_i), without the folds' validation rows."""
        key = (arm.target, arm.label)
        if key not in self._predictions:
            if len(arm.cells) == 1:
                preds = unit_predictions(arm.cells[0])
            else:
                parts = [unit_predictions(u).part(POOLED) for u in arm.cells]
                cat = lambda k: np.concatenate([getattr(p, k) for p in parts])  # noqa: E731
                preds = Predictions(
                    cat("test_set"), cat("ids"), cat("labels"), cat("proba"), parts[0].classes
                )
            self._predictions[key] = dataclasses.replace(preds, external=self.externals(arm.target))
        return self._predictions[key]


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        why = exc.strerror or exc
        raise DataError(f"{path}: cannot read ({why}); is this a finished run directory?") from exc
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML: {exc}") from exc


def read_results(path: Path) -> list[dict[str, Any]]:
    """The rows of a run's ``results.csv``, ``value`` as a float."""
    try:
        rows = read_csv(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc}); has the study finished?") from exc
    need = {"variant", "source", "target", "strategy", "repeat", "stage", "test_set", "metric", "value"}
    if rows and not need <= set(rows[0]):
        raise DataError(f"{path}: expected columns {sorted(need)}, got {sorted(rows[0])}")
    try:  # "not applicable" is an empty cell; older runs wrote "-"
        return [{**{k: "" if v == "-" else v for k, v in r.items()}, "value": float(r["value"])}
                for r in rows]
    except ValueError as exc:
        raise DataError(f"{path}: a non-numeric value ({exc}); rerun the study to rewrite it") from exc


def manifest_record(path: Path) -> dict[str, Any]:
    """A ``manifest.json``'s content, checked against its own digest (IntegrityError otherwise)."""
    data = read_record(path, Path(path).parent)
    if not isinstance(data.get("jobs"), dict):
        raise IntegrityError(f"{path}: expected a mapping with 'jobs'")
    return data


def read_manifest(out: Path) -> dict[str, Any]:
    """The manifest of run folder ``out``, checked (errors name the file and what is wrong)."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: cannot read (no such file); is {out} a finished run directory of this "
                        "medtransfer version?")
    try:
        return manifest_record(path)
    except IntegrityError as exc:
        raise IntegrityError(f"{exc}; rerun the study (medtransfer run with the same --out) to "
                             "rewrite it") from exc


def _unit(root: Path, entry: dict[str, Any]) -> UnitInfo:
    d = root / entry["unit"]
    if not (d / RESULT).is_file():
        raise DataError(
            f"{root}: manifest job {entry['id']!r} points at {d}, which is not a finished unit "
            "(no result.json); rerun the study"
        )
    return UnitInfo(entry, d, read_spec(d), read_result(d, str(entry["kind"])))


def _pinned(cfg: StudyConfig, variant: str) -> bool:
    """Whether a variant runs one strategy from one source (``only`` and ``only_sources``, or a
    scratch strategy, which has no source): a tuned search arm. Its name alone labels its arms."""
    spec = next((v for v in cfg.variants if v.name == variant), None)
    if spec is None or spec.only is None or len(spec.only) != 1:
        return False
    scratch = (cfg.strategies.get(spec.only[0]) or {}).get("kind") == "scratch"
    return scratch or (spec.only_sources is not None and len(spec.only_sources) == 1)


def _arm_label(job: dict[str, Any], axes: dict[str, bool], pinned: bool = False) -> str:
    if pinned:
        return str(job["variant"])
    parts = [str(job[k]) for k in ("variant", "source", "strategy") if axes[k]]
    return ".".join(parts) or str(job["variant"])


def _arms(cfg: StudyConfig, units: dict[str, UnitInfo]) -> dict[str, list[Arm]]:
    """Per target, one arm per (variant, source, strategy) of the repeat-0 cells, in plan order."""
    cells = [u for u in units.values() if u.kind == "cell" and int(u.job["repeat"]) == 0]
    variants = {u.job["variant"] for u in cells}
    axes = {"variant": len(variants) > 1, "source": cfg.is_matrix, "strategy": cfg.is_matrix}
    pretrains = {u.job["id"]: u for u in units.values() if u.kind == "pretrain"}
    grouped: dict[tuple[str, str, str, str], list[UnitInfo]] = {}
    for u in cells:
        j = u.job
        grouped.setdefault((j["target"], j["variant"], j["source"], j["strategy"]), []).append(u)
    variant_order = [v.name for v in cfg.variants]
    source_order = ["none", *cfg.sources]
    strategy_order = list(cfg.strategies)

    def order(key: tuple[str, str, str, str]) -> tuple[int, int, int]:
        rank = lambda seq, x: seq.index(x) if x in seq else len(seq)  # noqa: E731
        return rank(variant_order, key[1]), rank(source_order, key[2]), rank(strategy_order, key[3])

    out: dict[str, list[Arm]] = {}
    for (target, variant, source, strategy), group in sorted(grouped.items(), key=lambda kv: order(kv[0])):
        group.sort(key=lambda u: -1 if u.job["fold"] is None else int(u.job["fold"]))
        pre = pretrains.get(str(group[0].job.get("pretrain_id")))
        out.setdefault(target, []).append(
            Arm(_arm_label(group[0].job, axes, _pinned(cfg, variant)), variant, source, target, strategy,
                tuple(group), pre)
        )
    target_order = list(cfg.targets) or ["target"]
    return {t: out[t] for t in sorted(out, key=lambda t: target_order.index(t) if t in target_order else 0)}


def load_run(path: str | Path) -> RunDir:
    """Read ``config.yaml``, ``data.yaml``, ``results.csv`` and the units ``manifest.json`` lists
    (each unit's ``result.json`` checked; its other files are checked when they are read)."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"run directory {root} does not exist")
    raw = _read_yaml(root / CONFIG)
    if not isinstance(raw, dict):
        raise DataError(f"{root / CONFIG}: expected a mapping (the resolved study config)")
    cfg = study_from_dict(raw, base=root, source_name=str(root / CONFIG))
    data = _read_yaml(root / DATA)
    if not isinstance(data, dict) or not data:
        raise DataError(f"{root / DATA}: expected a section per data set")
    results = read_results(root / RESULTS)
    jobs = read_manifest(root)["jobs"]
    units = {key: _unit(root, entry) for key, entry in jobs.items() if entry.get("kind") != "trial"}
    arms = _arms(cfg, units)
    if not arms:
        raise DataError(f"{root}: the manifest lists no finished cell; has the study run to the end?")
    return RunDir(root, cfg, data, results, units, arms)
