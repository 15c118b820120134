"""``medtransfer check STUDY.yaml``: what a run would do, without doing it.

The config is read and checked as ``run`` reads it, every data set is loaded and split (through
the image cache, as a run would), every model is built, and the plan is laid against the run
folder: which units would be trained and which are done there already and would be reused. Of a
search: its arms, their trials (kept from the run folder's journal or to run) and the points of
each arm's space that cannot run (:mod:`medtransfer.search.preview`). The run folder is only
read; nothing is trained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from medtransfer.api import check_data_paths
from medtransfer.config import to_dict
from medtransfer.models import check_model
from medtransfer.study import Runner, StudyConfig, make_plan
from medtransfer.study.plan import CellJob, Plan, PretrainJob
from medtransfer.study.store import Unit
from medtransfer.study.tasks import data_summary
from medtransfer.study.units import cell_spec, pretrain_spec

if TYPE_CHECKING:
    from medtransfer.search.preview import SearchPreview

__all__ = ["CheckReport", "UnitPlan", "check_search", "check_study", "format_check"]

# a unit keeps best.pt and last.pt (with the optimiser's state: up to two more copies of the
# weights with Adam); float32 weights
_BYTES_PER_PARAM_PER_UNIT = 4 * 4


@dataclass(frozen=True)
class UnitPlan:
    """One unit of the plan: its label, kind, folder and whether a finished one is there."""

    label: str
    kind: str
    folder: str
    reused: bool


@dataclass(frozen=True)
class CheckReport:
    """What ``check`` found: the resolved config, data counts per data set and split, the units
    to train or reuse, and the disk their checkpoints would take."""

    config: dict[str, Any]
    data: dict[str, dict[str, Any]]
    units: list[UnitPlan]
    disk_bytes: int
    search: SearchPreview | None = None  # a search's arms (then ``units`` is empty)

    @property
    def to_train(self) -> list[UnitPlan]:
        return [u for u in self.units if not u.reused]

    @property
    def reused(self) -> list[UnitPlan]:
        return [u for u in self.units if u.reused]


def _units(runner: Runner, plan: Plan) -> list[tuple[PretrainJob | CellJob, Unit]]:
    """Each job's unit in the run folder, its key computed as the run computes it."""
    cfg, out = runner.cfg, runner.out
    dirs: dict[PretrainJob | CellJob, str] = {}
    found: list[tuple[PretrainJob | CellJob, Unit]] = []
    for job in plan.pretrains:
        spec = pretrain_spec(cfg, plan.variant(job.variant), job, runner.tasks[job.source])
        unit = Unit(out, "pretrain", job.label, spec, share=True)
        dirs[job] = unit.dir.name
        found.append((job, unit))
    for wave in plan.cell_waves():
        for cell in wave:
            pre = dirs.get(cell.pretrain) if cell.pretrain is not None else None
            up = dirs.get(cell.upstream) if cell.upstream is not None else None
            spec = cell_spec(cfg, plan.variant(cell.variant), cell, runner.target(cell.target, cell.repeat),
                             pre, up)
            unit = Unit(out, cell.kind, cell.label, spec, share=True)
            dirs[cell] = unit.dir.name
            found.append((cell, unit))
    return found


def _params(cfg: StudyConfig, plan: Plan, variant: str) -> int:
    model = check_model(plan.variant(variant).model, hw=cfg.preprocess.hw, in_chans=cfg.preprocess.channels)
    return 0 if model is None else sum(p.numel() for p in model.parameters())


def _prepared(cfg: StudyConfig, out: Path, source: str, echo: Callable[[str], None]) -> Runner:
    """A runner whose data sets are loaded and split, the run folder untouched."""
    check_data_paths(cfg, source)
    runner = Runner(cfg, out, progress=False, echo=echo)
    runner.prepare(write=False)
    return runner


def _data(runner: Runner) -> dict[str, dict[str, Any]]:
    return {name: data_summary(task) for name, task in runner.tasks.items()}


def check_search(cfg: StudyConfig, out: Path, *, source: str = "",
                 echo: Callable[[str], None] = lambda msg: None) -> CheckReport:
    """Check the search ``cfg`` declares as a search into ``out`` would, without training or
    writing there: its keys and arms, its data, the points each arm's trials could take."""
    from medtransfer.search.preview import preview_search

    preview = preview_search(cfg, out, source=source)  # before the data: config mistakes first
    return CheckReport(config=to_dict(cfg), data=_data(_prepared(cfg, out, source, echo)), units=[],
                       disk_bytes=0, search=preview)


def check_study(cfg: StudyConfig, out: Path, *, source: str = "",
                echo: Callable[[str], None] = lambda msg: None) -> CheckReport:
    """Check ``cfg`` as a run into ``out`` would, without training or writing there; raises the
    run's own errors (ConfigError, DataError) on the first problem."""
    runner = _prepared(cfg, out, source, echo)
    plan = make_plan(cfg)
    units = _units(runner, plan)
    sizes: dict[str, int] = {}
    disk = 0
    for job, unit in units:
        if not unit.done():
            if job.variant not in sizes:
                sizes[job.variant] = _params(cfg, plan, job.variant)
            disk += sizes[job.variant] * _BYTES_PER_PARAM_PER_UNIT
    return CheckReport(
        config=to_dict(cfg),
        data=_data(runner),
        units=[UnitPlan(job.label, unit.kind, unit.dir.name, unit.done()) for job, unit in units],
        disk_bytes=disk,
    )


def format_check(report: CheckReport, out: Path) -> str:
    """The report as ``medtransfer check`` prints it."""
    lines = ["# resolved config", yaml.safe_dump(report.config, sort_keys=False).rstrip(), "", "# data"]
    for name, summary in report.data.items():
        lines.append(f"{name} ({summary['role']}): {summary['path']}")
        for part, counts in summary["split"].items():
            per_class = {c: n for c, n in counts.items() if c != "total"}
            total = counts.get("total", sum(per_class.values()))
            classes = ", ".join(f"{c} {n}" for c, n in per_class.items())
            lines.append(f"  {part:<10} {total:>6} images  {classes}")
        if summary["skipped_images"]:
            lines.append(f"  skipped: {len(summary['skipped_images'])} unreadable images")
    if report.search is not None:
        from medtransfer.search.preview import format_search

        return "\n".join([*lines, "", *format_search(report.search, out)])
    lines += ["", f"# plan (run folder {out})"]
    for title, group in (("to train", report.to_train), (f"reused from {out}", report.reused)):
        lines.append(f"{title}: {len(group)} units")
        lines += [f"  {u.kind:<8} {u.label}" for u in group]
    lines.append(f"estimated disk for the units to train: {report.disk_bytes / 2**20:.1f} MiB "
                 "(best.pt and last.pt per unit)")
    return "\n".join(lines)
