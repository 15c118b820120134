"""What a search would run, without running it (``medtransfer check`` of a search config).

Per arm: the keys it tunes, how many trials it runs, how many a run folder's journal already holds
(kept by a rerun) or left running (run again), and which points of its space cannot run: every
grid point (or, for ranges, every combination of their ends) is laid over the arm's variant and
checked as a trial is, so a combination that would fail trial after trial is seen before any
training. A search tells such trials as failed and goes on, so they are warnings; an arm none of
whose points can run is an error, as the search would end in one.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtransfer.errors import ConfigError
from medtransfer.search.arms import SearchArm, checked_arms, final_params, trial_specs
from medtransfer.search.optimize import JournalCount, budget, journal_counts
from medtransfer.search.tables import final_text
from medtransfer.study import StudyConfig, make_plan, resolve_variants
from medtransfer.study.search_config import SearchConfig

__all__ = ["MAX_POINTS", "ArmPreview", "SearchPreview", "format_search", "point_warnings", "preview_arms",
           "preview_search"]

MAX_POINTS = 500  # points checked per arm (about 20 ms each); a larger space: its first ones


@dataclass(frozen=True)
class Failing:
    """Points of an arm's space that cannot run, for one reason."""

    why: str
    count: int
    example: dict[str, Any]


@dataclass(frozen=True)
class ArmPreview:
    """One arm of a search as a run would take it."""

    label: str
    space: tuple[str, ...]
    trials: int  # trials the arm runs in all
    finished: int  # in the run folder's journal: kept
    running: int  # left running by a killed search: run again with their parameters
    checked: int  # points of its space checked
    points: int  # points of its space (a range counts its two ends)
    exhaustive: bool  # every point a trial could take was checked (lists only, all checked)
    units: tuple[int, int]  # a trial's pretrainings and cells (0, 0: no point could run)
    failing: tuple[Failing, ...]
    final: dict[str, Any]  # what the arm's final run alone sets

    @property
    def to_run(self) -> int:
        return self.running + max(0, self.trials - self.finished - self.running)


@dataclass(frozen=True)
class SearchPreview:
    """A search's settings and its arms."""

    per: str
    sampler: str
    objective: str
    pruner: str
    arms: list[ArmPreview]

    @property
    def warnings(self) -> int:
        """Points of the arms' spaces that cannot run."""
        return sum(f.count for a in self.arms for f in a.failing)


def _values(spec: Any) -> list[Any]:
    """A searched key's values to check: a list's, or a range's two ends."""
    return list(spec) if isinstance(spec, list) else [spec["low"], spec["high"]]


def _arm(cfg: StudyConfig, search: SearchConfig, arm: SearchArm, finished: int, running: int) -> ArmPreview:
    values = [_values(search.space[k]) for k in arm.space]
    points = 1
    for v in values:
        points *= len(v)
    failing: dict[str, Failing] = {}
    checked, units = 0, (0, 0)
    for point in itertools.islice(itertools.product(*values), MAX_POINTS) if arm.space else ():
        params = dict(zip(arm.space, point, strict=True))
        checked += 1
        try:
            specs = trial_specs(cfg, arm, "check", params)
            if units == (0, 0):
                plan = make_plan(cfg, resolve_variants(dataclasses.replace(cfg, variants=specs, search=None)),
                                 evaluate="val")
                units = (len(plan.pretrains), len(plan.cells))
        except ConfigError as exc:
            why = str(exc)
            seen = failing.get(why)
            failing[why] = Failing(why, 1 + (seen.count if seen else 0), seen.example if seen else params)
    exhaustive = checked == points and all(isinstance(search.space[k], list) for k in arm.space)
    return ArmPreview(arm.label, arm.space, budget(search, arm), finished, running, checked,
                      points if arm.space else 0, exhaustive, units, tuple(failing.values()),
                      final_params(search, arm))


def _point(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def preview_arms(cfg: StudyConfig, search: SearchConfig, arms: list[SearchArm], *, out: Path | None = None,
                 source: str = "") -> list[ArmPreview]:
    """Each arm's points checked as its trials' would be (and, with ``out``, its trials in that
    run folder's journal); a ConfigError, prefixed with ``source``, for an arm whose every point
    fails: the search could only end in an error, after the other arms' trials."""
    counts = journal_counts(out, cfg, search, arms) if out is not None else {}
    previews = []
    for a in arms:
        count = counts.get(a.label, JournalCount())
        previews.append(_arm(cfg, search, a, count.finished, count.running))
    dead = [p for p in previews
            if p.exhaustive and p.checked and sum(f.count for f in p.failing) == p.checked]
    if dead:
        p, first = dead[0], dead[0].failing[0]
        raise ConfigError(f"{source + ': ' if source else ''}search arm {p.label}: none of its "
                          f"{p.points} point(s) can run (e.g. {_point(first.example)}): {first.why}")
    return previews


def preview_search(cfg: StudyConfig, out: Path, *, source: str = "") -> SearchPreview:
    """What a search of ``cfg`` into ``out`` would run; raises the search's own ConfigError on a
    combination that cannot work, or on an arm whose every point fails."""
    search = cfg.search
    if search is None:
        raise ConfigError(f"{source or '<config>'}: no 'search' section")
    previews = preview_arms(cfg, search, checked_arms(cfg, search, source), out=Path(out), source=source)
    return SearchPreview(search.per, search.sampler,
                         f"validation {search.objective.metric} ({search.objective.direction})",
                         search.pruner.name, previews)


def _warning(a: ArmPreview, f: Failing) -> str:
    return (f"{f.count} of {a.points} point(s) cannot run, so their trials would fail (e.g. "
            f"{_point(f.example)}): {f.why}")


def point_warnings(previews: list[ArmPreview]) -> list[str]:
    """One line per arm and reason its points cannot run, as a search's log says them."""
    return [f"search: arm {a.label}: {_warning(a, f)}" for a in previews for f in a.failing]


def format_search(preview: SearchPreview, out: Path) -> list[str]:
    """The search part of ``medtransfer check``'s output, as lines."""
    how = (f"{len(preview.arms)} arm(s), each tuned on its own" if preview.per == "arm"
           else "one setting tuned for every arm")
    lines = [f"# search (run folder {out})",
             f"{how}; sampler {preview.sampler}, ranked by {preview.objective}, pruner {preview.pruner}"]
    for a in preview.arms:
        if not a.space:
            lines.append(f"  {a.label}: no searched key applies; runs as configured")
            continue
        stale = f" ({a.running} left running by a stopped search)" if a.running else ""
        lines.append(f"  {a.label}: {a.trials} trial(s); {a.finished} finished in the journal (kept), "
                     f"{a.to_run} to run{stale}")
        lines.append(f"    tunes {', '.join(a.space)}")
        pre, cells = a.units
        if cells:
            lines.append(f"    each trial trains {cells} cell(s)" + (
                f" after {pre} pretraining(s) (a trial that leaves the pretraining as it was reuses it)"
                if pre else ""))
        if a.final:
            lines.append(f"    its final run only: {final_text(a.final)}")
        if a.checked < a.points:
            lines.append(f"    checked the first {a.checked} of its {a.points} points")
        for f in a.failing:
            lines.append(f"    warning: {_warning(a, f)}")
    total = sum(a.to_run for a in preview.arms)
    tuned = ("the tuned study (one variant per arm, each with its best point)" if preview.per == "arm"
             else "the study with the best point")
    lines.append(f"trials to run: {total}; then {tuned} runs once on the test sets")
    return lines
