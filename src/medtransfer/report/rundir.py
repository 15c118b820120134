"""Read a finished run directory: config, data summary, results, the units of each variant and
their predictions. Everything the report shows is derived from these files alone."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medtransfer.config import to_dict
from medtransfer.errors import DataError
from medtransfer.study.config import StudyConfig, resolve_variants, study_from_dict

__all__ = ["POOLED", "Predictions", "RunDir", "UnitInfo", "load_run"]

log = logging.getLogger("medtransfer")
POOLED = "pooled"  # name of all test sets taken together


@dataclass(frozen=True)
class UnitInfo:
    """One finished unit folder."""

    kind: str
    variant: str
    dir: Path
    spec: dict[str, Any]
    result: dict[str, Any]
    note: str = ""

    @property
    def checkpoint(self) -> Path:
        """``best.pt`` if it was written, else ``last.pt``."""
        best = self.dir / "best.pt"
        return best if best.is_file() else self.dir / "last.pt"


@dataclass(frozen=True)
class Predictions:
    """Per-image predictions of one transfer unit: ``test_set`` (val, test_1...), ids, labels
    and (N, K) class probabilities in the order of ``classes``."""

    test_set: np.ndarray
    ids: np.ndarray
    labels: np.ndarray
    proba: np.ndarray
    classes: list[str]

    def part(self, name: str) -> Predictions:
        """Rows of one test set, or of every test set for :data:`POOLED`."""
        mask = self.test_set != "val" if name == POOLED else self.test_set == name
        return Predictions(self.test_set[mask], self.ids[mask], self.labels[mask], self.proba[mask],
                           self.classes)

    def tests(self) -> list[str]:
        """Test set names (not ``val``) in natural order (test_2 before test_10)."""
        names = {str(t) for t in self.test_set if t != "val"}
        return sorted(names, key=lambda s: (len(s), s))

    def aligned(self, other: Predictions, where: str) -> tuple[Predictions, Predictions]:
        """Both prediction sets restricted to, and ordered by, the same (test_set, id) pairs."""
        mine = {(t, i): k for k, (t, i) in enumerate(zip(self.test_set, self.ids, strict=True))}
        theirs = {(t, i): k for k, (t, i) in enumerate(zip(other.test_set, other.ids, strict=True))}
        if set(mine) != set(theirs):
            raise DataError(f"{where}: the two units were not evaluated on the same images")
        keys = sorted(mine)
        a = np.array([mine[k] for k in keys], dtype=np.int64)
        b = np.array([theirs[k] for k in keys], dtype=np.int64)
        if not np.array_equal(self.labels[a], other.labels[b]):
            raise DataError(f"{where}: the same image ids carry different labels")
        pick = lambda p, i: Predictions(p.test_set[i], p.ids[i], p.labels[i], p.proba[i], p.classes)  # noqa: E731
        return pick(self, a), pick(other, b)


@dataclass
class RunDir:
    """A finished run directory, read."""

    path: Path
    config: StudyConfig
    data: dict[str, Any]
    results: list[dict[str, Any]]
    variants: list[str]
    transfer: dict[str, UnitInfo]
    pretrain: dict[str, UnitInfo]
    # cross-validation: every fold's transfer unit per variant (``transfer`` holds fold 1's)
    folds: dict[str, list[UnitInfo]] = field(default_factory=dict)
    _predictions: dict[str, Predictions] = field(default_factory=dict, repr=False)

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.data["target"]["classes"]]

    def predictions(self, variant: str) -> Predictions:
        """Predictions of the variant's transfer unit (read once). Cross-validation: every
        fold's held-out predictions together (each image once, ``test_set`` fold_i); the folds'
        validation rows are left out, so thresholds stay at the default."""
        if variant in self._predictions:
            return self._predictions[variant]
        if variant not in self.folds:
            preds = _read_predictions(self.transfer[variant].dir / "predictions.csv")
        else:
            parts = [_read_predictions(u.dir / "predictions.csv").part(POOLED) for u in self.folds[variant]]
            cat = lambda k: np.concatenate([getattr(p, k) for p in parts])  # noqa: E731
            preds = Predictions(cat("test_set"), cat("ids"), cat("labels"), cat("proba"), parts[0].classes)
        self._predictions[variant] = preds
        return preds


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


def _read_results(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc}); has the study finished?") from exc
    need = {"variant", "stage", "test_set", "metric", "value"}
    if rows and not need <= set(rows[0]):
        raise DataError(f"{path}: expected columns {sorted(need)}, got {sorted(rows[0])}")
    return [{**r, "value": float(r["value"])} for r in rows]


def _read_predictions(path: Path) -> Predictions:
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
    cols = list(zip(*rows, strict=True))
    try:
        proba = np.array(cols[3:], dtype=np.float64).T
        labels = np.array(cols[2], dtype=np.int64)
    except ValueError as exc:
        raise DataError(f"{path}: non-numeric label or probability: {exc}") from exc
    classes = [h[2:] if h.startswith("p_") else h for h in header[3:]]
    return Predictions(np.array(cols[0]), np.array(cols[1]), labels, proba, classes)


def _agrees(a: Any, b: Any) -> bool:
    """Equal where both define a key: settings added to or dropped from the config format
    since the unit ran do not make it a different unit."""
    if isinstance(a, dict) and isinstance(b, dict):
        return all(_agrees(a[k], b[k]) for k in a.keys() & b.keys())
    return bool(a == b)


def _pick(root: Path, kind: str, variant: str, expect: dict[str, Any]) -> UnitInfo:
    """The finished unit of ``kind``/``variant`` whose spec matches ``expect``; if none matches
    (e.g. the spec format changed), the newest finished one, with a note saying so."""
    found = []
    for d in sorted((root / "units").glob(f"{kind}-{variant}-*")):
        if d.name.rsplit("-", 1)[0] != f"{kind}-{variant}" or not (d / "result.json").is_file():
            continue
        unit = _read_json(d / "unit.json") if (d / "unit.json").is_file() else {"spec": {}}
        found.append(UnitInfo(kind, variant, d, unit.get("spec", {}), _read_json(d / "result.json")))
    if not found:
        raise DataError(f"{root}: no finished {kind} unit for variant '{variant}' in units/")
    match = [u for u in found if _agrees(u.spec, expect)]
    if len(match) == 1:
        return match[0]
    newest = max(match or found, key=lambda u: (u.dir / "result.json").stat().st_mtime_ns)
    why = f"{len(match)} units match config.yaml" if match else "no unit's spec matches config.yaml"
    note = f"{kind} '{variant}': {why}; the newest finished one ({newest.dir.name}) was used"
    log.warning("%s: %s", root, note)
    return UnitInfo(newest.kind, newest.variant, newest.dir, newest.spec, newest.result, note)


def load_run(path: str | Path) -> RunDir:
    """Read ``config.yaml``, ``data.yaml``, ``results.csv`` and each variant's units."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"run directory {root} does not exist")
    raw = _read_yaml(root / "config.yaml")
    if not isinstance(raw, dict):
        raise DataError(f"{root / 'config.yaml'}: expected a mapping (the resolved study config)")
    cfg = study_from_dict(raw, base=root, source_name=str(root / "config.yaml"))
    data = _read_yaml(root / "data.yaml")
    if not isinstance(data, dict) or "target" not in data:
        raise DataError(f"{root / 'data.yaml'}: expected 'source' and 'target' sections")
    results = _read_results(root / "results.csv")
    transfer, pretrain, folds = {}, {}, {}
    k = cfg.task("target").split.folds
    for v in resolve_variants(cfg):
        expect = {"model": to_dict(v.model), "transfer": to_dict(v.transfer), "seed": cfg.seed,
                  "data": data["target"].get("fingerprint")}
        if k:
            folds[v.name] = [_pick(root, "transfer", f"{v.name}-fold{i + 1}", {**expect, "fold": i})
                             for i in range(k)]
        unit = folds[v.name][0] if k else _pick(root, "transfer", v.name, expect)
        transfer[v.name] = unit
        source = unit.spec.get("source_unit")
        if source and (root / "units" / source / "result.json").is_file():
            d = root / "units" / source
            spec = _read_json(d / "unit.json").get("spec", {}) if (d / "unit.json").is_file() else {}
            pretrain[v.name] = UnitInfo("pretrain", v.name, d, spec, _read_json(d / "result.json"))
        else:
            pexpect = {"model": to_dict(v.model), "pretrain": to_dict(v.pretrain), "seed": cfg.seed}
            pretrain[v.name] = _pick(root, "pretrain", v.name, pexpect)
    return RunDir(root, cfg, data, results, [v.name for v in cfg.variants], transfer, pretrain, folds)
