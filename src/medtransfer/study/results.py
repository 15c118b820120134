"""``results.csv``: one tidy schema for every study shape — a row per (variant, source,
target, strategy, repeat, fold, stage, test set, metric) and its value."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medtransfer.csvfile import write_csv
from medtransfer.study.plan import CellJob, Job, Plan
from medtransfer.study.rundir.unit_result import CellResult, UnitResult
from medtransfer.study.tasks import LoadedTask

__all__ = ["COLUMNS", "metric_rows", "result_rows", "write_results"]

COLUMNS = ("variant", "source", "target", "strategy", "repeat", "fold", "stage", "test_set", "metric",
           "value")
BLANK = ""  # not applicable: an empty cell, which pandas reads as NaN (older runs wrote "-")


def metric_rows(ids: Mapping[str, Any], stage: str, test_set: str,
                metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per metric, sorted by name; identifying columns not in ``ids`` are empty."""
    base = {**dict.fromkeys(COLUMNS[:6], BLANK), **ids}
    return [{**base, "stage": stage, "test_set": test_set, "metric": k, "value": float(v)}
            for k, v in sorted(metrics.items())]


def _cell_ids(job: CellJob) -> dict[str, Any]:
    return {"variant": job.variant, "source": job.source, "target": job.target, "strategy": job.strategy,
            "repeat": job.repeat, "fold": BLANK if job.fold is None else job.fold + 1}


def result_rows(plan: Plan, outcomes: Mapping[Job, UnitResult],
                tasks: Mapping[str, LoadedTask], audits: Mapping[str, Mapping[str, int]],
                *, repeat_pretraining: bool) -> list[dict[str, Any]]:
    """Data rows (skipped images, audit counts per data set), the pretrainings' validation
    metrics, and every cell's validation and test metrics."""
    rows: list[dict[str, Any]] = []
    for name, t in tasks.items():
        counts = {"skipped_images": len(t.images.skipped),
                  **{f"audit_{k}": n for k, n in audits.get(name, {}).items()}}
        rows += metric_rows({"variant": "*", t.role: name}, "data", name, counts)
        for ext, images in t.externals.items():
            counts = {"skipped_images": len(images.skipped),
                      **{f"audit_{k}": n for k, n in audits.get(f"{name}.{ext}", {}).items()}}
            rows += metric_rows({"variant": "*", t.role: name}, "data", ext, counts)
    for job in plan.pretrains:
        ids = {"variant": job.variant, "source": job.source,
               "repeat": job.repeat if repeat_pretraining else BLANK}
        rows += metric_rows(ids, "pretrain", "val", outcomes[job].val)
    for cell in plan.cells:
        result = outcomes[cell]
        if not isinstance(result, CellResult):
            raise TypeError(f"{cell.label}: the result of a cell is not a CellResult ({result.dir})")
        rows += metric_rows(_cell_ids(cell), "val", "val", result.val)
        for test_set, metrics in result.tests.items():
            rows += metric_rows(_cell_ids(cell), "transfer", test_set, metrics)
    return rows


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    """``rows`` as CSV, values with 6 significant digits (NaN as ``nan``)."""
    write_csv(path, rows, COLUMNS, nan="nan")
