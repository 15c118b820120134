"""``manifest.json``: what a run did — every job with its place in the study (variant, source,
target, strategy, repeat, fold), the unit folder that holds it, that unit's spec key and its
result. Written as jobs finish, with a digest of its own content; the report reads it instead of
guessing from folder names."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medtransfer.errors import IntegrityError
from medtransfer.integrity import read_record, write_record
from medtransfer.study.plan import CellJob, Job, PretrainJob
from medtransfer.study.rundir.layout import MANIFEST, UNIT_SPEC
from medtransfer.study.rundir.run import manifest_record, read_manifest
from medtransfer.study.rundir.unit_result import UnitResult, result_to_json

__all__ = ["MANIFEST", "Manifest", "job_entry", "read_manifest"]

FORMAT = 1
log = logging.getLogger("medtransfer")


def job_entry(job: Job, result: UnitResult, out: Path) -> dict[str, Any]:
    """The manifest's record of one finished job (``result`` as the unit returned it)."""
    unit = result.dir
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
    spec_file = unit / UNIT_SPEC
    entry["key"] = read_record(spec_file, out)["key"] if spec_file.is_file() else None
    entry["result"] = result_to_json(result)
    return entry


class Manifest:
    """The run's manifest; ``record`` adds a finished job and rewrites the file atomically."""

    def __init__(self, out: Path, study: str, *, keep_trials: bool = True) -> None:
        self.path = out / MANIFEST
        self.out = out
        self.study = study
        self.jobs: dict[str, dict[str, Any]] = {}
        if keep_trials and self.path.is_file():
            # A search's trials stay listed when the best configuration runs into the same folder;
            # a damaged manifest is rewritten from the units as they finish.
            try:
                jobs = manifest_record(self.path)["jobs"]
            except IntegrityError as exc:
                log.warning("%s; it is written anew as this run's jobs finish (a search's earlier "
                            "trials are no longer listed in it)", exc)
                jobs = {}
            self.jobs = {k: e for k, e in jobs.items() if e.get("kind") == "trial"}

    def record(self, job: Job, result: UnitResult) -> None:
        kind = "pretrain" if isinstance(job, PretrainJob) else job.kind
        self.jobs[f"{kind}:{job.label}"] = job_entry(job, result, self.out)
        write_record(self.path, {"format": FORMAT, "study": self.study, "jobs": self.jobs})
