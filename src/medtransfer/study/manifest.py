"""``manifest.json``: what a run did — every job with its place in the study (variant, source,
target, strategy, repeat, fold), the unit folder that holds it, that unit's spec key and its
result. Written as jobs finish; the report reads it instead of guessing from folder names."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medtransfer.errors import DataError
from medtransfer.fileio import write_json_atomic
from medtransfer.study.plan import CellJob, Job, PretrainJob

__all__ = ["MANIFEST", "Manifest", "job_entry"]

MANIFEST = "manifest.json"
FORMAT = 1


def job_entry(job: Job, result: dict[str, Any], out: Path) -> dict[str, Any]:
    """The manifest's record of one finished job (``result`` as the unit returned it)."""
    unit = Path(result["dir"])
    entry: dict[str, Any] = {
        "id": job.label,
        "kind": "pretrain" if isinstance(job, PretrainJob) else job.kind,
    }
    fields = asdict(job)
    fields.pop("label")
    fields.pop("spec", None)
    fields.pop("pruning", None)
    pre = fields.pop("pretrain", None)
    up = fields.pop("upstream", None)
    entry.update(fields)
    if up is not None:
        entry["upstream_id"] = up["label"]  # the cell whose trained model is this one's backbone
    entry["unit"] = str(unit.relative_to(out)) if unit.is_relative_to(out) else str(unit)
    if isinstance(job, CellJob):
        entry["pretrain_id"] = pre["label"] if pre else None
    spec_file = unit / "unit.json"
    entry["key"] = json.loads(spec_file.read_text(encoding="utf-8"))["key"] if spec_file.is_file() else None
    entry["result"] = {k: v for k, v in result.items() if k != "dir"}
    return entry


class Manifest:
    """The run's manifest; ``record`` adds a finished job and rewrites the file atomically."""

    def __init__(self, out: Path, study: str, *, keep_trials: bool = True) -> None:
        self.path = out / MANIFEST
        self.out = out
        self.study = study
        self.jobs: dict[str, dict[str, Any]] = {}
        if keep_trials and self.path.is_file():
            # A search's trials stay listed when the best configuration runs into the same folder.
            self.jobs = {k: e for k, e in read_manifest(out)["jobs"].items() if e.get("kind") == "trial"}

    def record(self, job: Job, result: dict[str, Any]) -> None:
        kind = "pretrain" if isinstance(job, PretrainJob) else job.kind
        self.jobs[f"{kind}:{job.label}"] = job_entry(job, result, self.out)
        write_json_atomic(self.path, {"format": FORMAT, "study": self.study, "jobs": self.jobs})


def read_manifest(out: Path) -> dict[str, Any]:
    """The manifest of run folder ``out`` (errors name the file and what is wrong)."""
    path = out / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(
            f"{path}: cannot read ({exc.strerror or exc}); is {out} a finished run "
            "directory of this medtransfer version?"
        ) from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); rerun the study to rewrite it") from exc
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), dict):
        raise DataError(f"{path}: expected a mapping with 'jobs'")
    return data
