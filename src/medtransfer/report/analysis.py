"""Uncertainty for a finished run: bootstrap CIs per (arm, test set, metric) and paired
comparisons of every arm of a target with that target's reference arm on the same test images.

Written as tidy CSVs, ``metrics_ci.csv`` and ``comparisons.csv``. Random draws are seeded per
(arm, test set, metric) from the study seed, so each number is reproducible on its own and does
not change when arms are added or reordered.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medtransfer.csvfile import write_csv
from medtransfer.errors import DataError
from medtransfer.stats import (
    BINARY_METRICS,
    MULTICLASS_METRICS,
    THRESHOLD_FREE,
    bootstrap_ci,
    delong_test,
    holm,
    mcnemar_test,
    paired_bootstrap,
)
from medtransfer.study.rundir import POOLED, Arm, Predictions, RunDir, load_run, youden_threshold

__all__ = [
    "CI_COLUMNS",
    "COMPARISON_COLUMNS",
    "comparison_rows",
    "metrics_ci_rows",
    "write_comparisons",
    "write_metrics_ci",
]

ARM_COLUMNS = ["target", "arm", "variant", "source", "strategy"]
CI_COLUMNS = [*ARM_COLUMNS, "test_set", "metric", "operating_point", "threshold", "estimate", "ci_low",
              "ci_high", "level", "method", "n_boot", "n"]
COMPARISON_COLUMNS = [*ARM_COLUMNS, "reference", "test_set", "metric", "estimate", "diff", "ci_low",
                      "ci_high", "p", "p_holm", "significant", "method", "reference_estimate", "n"]
# Re-evaluated at the threshold chosen on validation data (Youden's J).
OPERATING_METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1")


def _rng(seed: int, *key: str) -> np.random.Generator:
    tag = zlib.crc32("/".join(key).encode())
    return np.random.default_rng(np.random.SeedSequence([seed, tag]))


def _key(arm: Arm) -> tuple[str, ...]:
    """What seeds an arm's draws: its label alone where the run has one target (as before arms
    had targets), else target and label."""
    return (arm.label,) if arm.target == "target" else (arm.target, arm.label)


def _seed(run: RunDir, seed: int | None) -> int:
    return run.config.seed if seed is None else seed


def _parts(preds: Predictions) -> list[str]:
    """Test sets, plus all of them pooled when there are several, then the external sets;
    empty for a run without any."""
    tests = preds.tests()
    return [*tests, POOLED, *preds.externals()] if len(tests) > 1 else [*tests, *preds.externals()]


def metrics_ci_rows(
    run: RunDir, *, n_boot: int = 2000, level: float = 0.95, seed: int | None = None
) -> list[dict[str, Any]]:
    """Bootstrap CIs (stratified, percentile) of every metric per arm and test set (and all
    test sets pooled), at 0.5 / argmax and, for binary tasks, at the validation-Youden threshold."""
    seed = _seed(run, seed)
    rows: list[dict[str, Any]] = []
    for arm in (a for arms in run.arms.values() for a in arms):
        preds = run.predictions(arm)
        binary = preds.proba.shape[1] == 2
        chosen = youden_threshold(preds)
        for part in _parts(preds):
            p = preds.part(part)
            # recall is reported once, as sensitivity (macro recall for multiclass)
            names = tuple(m for m in (BINARY_METRICS if binary else MULTICLASS_METRICS) if m != "recall")
            runs = [("default", 0.5 if binary else math.nan, names)]
            if chosen is not None:
                runs.append(("youden_val", chosen, OPERATING_METRICS))
            for point, thr, metrics in runs:
                cis = bootstrap_ci(p.labels, p.proba, metrics, rng=_rng(seed, *_key(arm), part, point),
                                   threshold=0.5 if math.isnan(thr) else thr, n_boot=n_boot, level=level)
                for m, ci in cis.items():
                    free = m in THRESHOLD_FREE
                    rows.append({
                        **arm.ids, "test_set": part, "metric": m,
                        "operating_point": "" if free else point,
                        "threshold": math.nan if free or not binary else thr,
                        "estimate": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "level": level,
                        "method": ci.method, "n_boot": n_boot, "n": len(p.labels),
                    })
    return rows


def _compare(a: Predictions, b: Predictions, metric: str, rng: np.random.Generator, n_boot: int,
             level: float) -> dict[str, Any]:
    if metric == "auc" and a.proba.shape[1] == 2:
        d = delong_test(a.labels, a.proba[:, 1], b.proba[:, 1], level=level)
        return {"estimate": d.auc_a, "reference_estimate": d.auc_b, "diff": d.diff, "ci_low": d.low,
                "ci_high": d.high, "p": d.p, "method": "DeLong"}
    pb = paired_bootstrap(a.labels, a.proba, b.proba, metric, rng=rng, n_boot=n_boot, level=level)
    out = {"estimate": pb.estimate_a, "reference_estimate": pb.estimate_b, "diff": pb.diff,
           "ci_low": pb.low, "ci_high": pb.high, "p": pb.p, "method": "paired bootstrap"}
    if metric == "accuracy":
        k = a.proba.shape[1]
        pred_a = (a.proba[:, 1] >= 0.5) if k == 2 else a.proba.argmax(1)
        pred_b = (b.proba[:, 1] >= 0.5) if k == 2 else b.proba.argmax(1)
        mc = mcnemar_test(pred_a == a.labels, pred_b == b.labels)
        out.update(p=mc.p, method=f"paired bootstrap CI; {mc.method} p")
    elif metric == "auc":
        out["method"] = "paired bootstrap (macro one-vs-rest AUC)"
    return out


def comparison_rows(
    run: RunDir,
    reference: str | None = None,
    *,
    metrics: Sequence[str] = ("auc", "accuracy"),
    n_boot: int = 2000,
    level: float = 0.95,
    alpha: float = 0.05,
    seed: int | None = None,
) -> list[dict[str, Any]]:
    """Every arm of each target against that target's ``reference`` arm (default: its first —
    the first variant, or scratch in a matrix) on the same test images, per test set and pooled.
    AUC: DeLong (binary) or paired bootstrap; accuracy: paired-bootstrap CI and McNemar p.
    Holm's correction runs over the arms within each (target, test set, metric);
    ``significant`` means Holm p < ``alpha``."""
    seed = _seed(run, seed)
    rows: list[dict[str, Any]] = []
    for target, arms in run.arms.items():
        labels = [a.label for a in arms]
        if reference is not None and reference not in labels:
            raise DataError(f"reference: got {reference!r}; the arms on target {target!r} are "
                            f"{', '.join(labels)}")
        ref_arm = arms[labels.index(reference)] if reference is not None else arms[0]
        ref = run.predictions(ref_arm)
        for arm in arms:
            if arm is ref_arm:
                continue
            mine, theirs = run.predictions(arm).aligned(ref, f"{arm.label} vs {ref_arm.label}")
            for part in _parts(mine):
                a, b = mine.part(part), theirs.part(part)
                for metric in metrics:
                    rng = _rng(seed, *_key(arm), ref_arm.label, part, metric)
                    rows.append({**arm.ids, "reference": ref_arm.label, "test_set": part,
                                 "metric": metric, "n": len(a.labels),
                                 **_compare(a, b, metric, rng, n_boot, level)})
    for family_key in {(r["target"], r["test_set"], r["metric"]) for r in rows}:
        family = [r for r in rows if (r["target"], r["test_set"], r["metric"]) == family_key]
        for r, adj in zip(family, holm([r["p"] for r in family]), strict=True):
            r["p_holm"] = float(adj)
            r["significant"] = bool(adj < alpha)
    return rows


def write_metrics_ci(run_dir: str | Path, **kwargs: Any) -> Path:
    """Compute :func:`metrics_ci_rows` for a run directory and write ``metrics_ci.csv``."""
    run = load_run(run_dir)
    return write_csv(run.path / "metrics_ci.csv", metrics_ci_rows(run, **kwargs), CI_COLUMNS)


def write_comparisons(run_dir: str | Path, reference: str | None = None, **kwargs: Any) -> Path:
    """Compute :func:`comparison_rows` for a run directory and write ``comparisons.csv``."""
    run = load_run(run_dir)
    rows = comparison_rows(run, reference, **kwargs)
    return write_csv(run.path / "comparisons.csv", rows, COMPARISON_COLUMNS)
