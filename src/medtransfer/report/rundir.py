"""Read a finished run directory: config, data summary, results, and — from ``manifest.json``
— every job's unit and result. Everything the report shows is derived from these files alone.

The report compares *arms* on each target: an arm is one (variant, source, strategy) of the
study; its predictions are those of its repeat-0 cell (cross-validation: all folds' held-out
predictions together), so every arm of a target is evaluated on the same images.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medtransfer.errors import DataError
from medtransfer.fileio import cell_in, file_record
from medtransfer.study.config import StudyConfig, study_from_dict
from medtransfer.study.manifest import read_manifest

__all__ = ["POOLED", "Arm", "Predictions", "RunDir", "UnitInfo", "load_run"]

POOLED = "pooled"  # name of all test sets taken together


@dataclass(frozen=True)
class UnitInfo:
    """One finished unit: the manifest's job entry, its folder, spec and result."""

    job: dict[str, Any]
    dir: Path
    spec: dict[str, Any]
    result: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.job["kind"])

    @property
    def checkpoint(self) -> Path:
        """``best.pt`` if it was written, else ``last.pt``."""
        best = self.dir / "best.pt"
        return best if best.is_file() else self.dir / "last.pt"


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


@dataclass(frozen=True)
class Predictions:
    """Per-image predictions of one arm: ``test_set`` (val, test_1..., external sets), ids,
    labels and (N, K) class probabilities in the order of ``classes``."""

    test_set: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    proba: np.ndarray
    classes: list[str]
    external: tuple[str, ...] = ()  # names of the external test sets among ``test_set``

    def part(self, name: str) -> Predictions:
        """Rows of one test set, or for :data:`POOLED` of every internal test set (external sets
        come from elsewhere: they are never pooled with the target's own)."""
        if name == POOLED:
            mask = (self.test_set != "val") & ~np.isin(self.test_set, list(self.external))
        else:
            mask = self.test_set == name
        return Predictions(self.test_set[mask], self.ids[mask], self.labels[mask], self.proba[mask],
                           self.classes, self.external)

    def tests(self) -> list[str]:
        """Internal test set names (not ``val``) in natural order (test_2 before test_10)."""
        names = {str(t) for t in self.test_set if t != "val" and t not in self.external}
        return sorted(names, key=lambda s: (len(s), s))

    def externals(self) -> list[str]:
        """External test set names present, in the config's order."""
        present = {str(t) for t in self.test_set}
        return [e for e in self.external if e in present]

    def aligned(self, other: Predictions, where: str) -> tuple[Predictions, Predictions]:
        """Both prediction sets restricted to, and ordered by, the same (test_set, id) pairs."""
        mine = {(t, i): k for k, (t, i) in enumerate(zip(self.test_set, self.ids, strict=True))}
        theirs = {(t, i): k for k, (t, i) in enumerate(zip(other.test_set, other.ids, strict=True))}
        if set(mine) != set(theirs):
            raise DataError(f"{where}: the two arms were not evaluated on the same images")
        keys = sorted(mine)
        a = np.array([mine[k] for k in keys], dtype=np.int64)
        b = np.array([theirs[k] for k in keys], dtype=np.int64)
        if not np.array_equal(self.labels[a], other.labels[b]):
            raise DataError(f"{where}: the same image ids carry different labels")
        pick = lambda p, i: Predictions(p.test_set[i], p.ids[i], p.labels[i], p.proba[i], p.classes,  # noqa: E731
                                        p.external)
        return pick(self, a), pick(other, b)


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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read unit file: {exc}") from exc
    return data


def read_results(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc}); has the study finished?") from exc
    need = {"variant", "source", "target", "strategy", "repeat", "stage", "test_set", "metric", "value"}
    if rows and not need <= set(rows[0]):
        raise DataError(f"{path}: expected columns {sorted(need)}, got {sorted(rows[0])}")
    # "not applicable" is an empty cell; older runs wrote "-"
    return [{**{k: "" if v == "-" else v for k, v in r.items()}, "value": float(r["value"])} for r in rows]


def read_predictions(path: Path) -> Predictions:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = list(reader)
    except OSError as exc:
        raise DataError(f"{path}: cannot read predictions ({exc.strerror or exc})") from exc
    if not header or header[:3] != ["test_set", "id", "label"] or len(header) < 5:
        raise DataError(f"{path}: expected columns test_set,id,label,p_<class>..., got {header}")
    if not rows:
        raise DataError(f"{path}: no predictions")
    for line, row in enumerate(rows, 2):
        if len(row) != len(header):
            raise DataError(f"{path}, line {line}: {len(row)} fields, the header has {len(header)} "
                            "(truncated or edited?); rerun the study to redo this unit")
    cols = list(zip(*rows, strict=True))
    try:
        proba = np.array(cols[3:], dtype=np.float64).T
        labels = np.array(cols[2], dtype=np.int64)
    except ValueError as exc:
        raise DataError(f"{path}: non-numeric label or probability: {exc}") from exc
    classes = [h[2:] if h.startswith("p_") else h for h in header[3:]]
    return Predictions(np.array(cols[0]), np.array([cell_in(i) for i in cols[1]]), labels, proba, classes)


def unit_predictions(unit: UnitInfo) -> Predictions:
    """A cell's ``predictions.csv``, checked against its ``result.json``: the file's recorded size
    and SHA-256, and the number of rows of each test set; a mismatch is a clear error."""
    path = unit.dir / "predictions.csv"
    fix = "; rerun the study to redo this unit (medtransfer run with the same --out)"
    record = unit.result.get("files", {}).get("predictions.csv")
    if isinstance(record, dict) and path.is_file():
        got = file_record(path)
        if got["size"] != record.get("size") or got["sha256"] != record.get("sha256"):
            raise DataError(f"{path}: does not match result.json ({got['size']} bytes, recorded "
                            f"{record.get('size')}; sha256 differs): truncated or edited" + fix)
    preds = read_predictions(path)
    counts = unit.result.get("prediction_rows")
    if isinstance(counts, dict):
        names, n = np.unique(preds.test_set, return_counts=True)
        got_counts = {str(k): int(c) for k, c in zip(names, n, strict=True)}
        if got_counts != {str(k): int(c) for k, c in counts.items()}:
            raise DataError(f"{path}: rows per test set {got_counts}, result.json recorded {counts}" + fix)
    return preds


def _unit(root: Path, entry: dict[str, Any]) -> UnitInfo:
    d = root / entry["unit"]
    if not (d / "result.json").is_file():
        raise DataError(
            f"{root}: manifest job {entry['id']!r} points at {d}, which is not a finished unit "
            "(no result.json); rerun the study"
        )
    spec = _read_json(d / "unit.json").get("spec", {}) if (d / "unit.json").is_file() else {}
    return UnitInfo(entry, d, spec, _read_json(d / "result.json"))


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
    """Read ``config.yaml``, ``data.yaml``, ``results.csv`` and the units ``manifest.json`` lists."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"run directory {root} does not exist")
    raw = _read_yaml(root / "config.yaml")
    if not isinstance(raw, dict):
        raise DataError(f"{root / 'config.yaml'}: expected a mapping (the resolved study config)")
    cfg = study_from_dict(raw, base=root, source_name=str(root / "config.yaml"))
    data = _read_yaml(root / "data.yaml")
    if not isinstance(data, dict) or not data:
        raise DataError(f"{root / 'data.yaml'}: expected a section per data set")
    results = read_results(root / "results.csv")
    jobs = read_manifest(root)["jobs"]
    units = {key: _unit(root, entry) for key, entry in jobs.items() if entry.get("kind") != "trial"}
    arms = _arms(cfg, units)
    if not arms:
        raise DataError(f"{root}: the manifest lists no finished cell; has the study run to the end?")
    return RunDir(root, cfg, data, results, units, arms)
