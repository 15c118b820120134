"""Hyperparameter search over any study key of any study shape (seeds 001 and 004), with
Optuna's samplers and pruners.

``search.space`` maps dotted keys of the ``model``, ``pretrain``, ``transfer`` and ``strategies``
sections to a list (grid values, or choices for random/TPE) or a range ``{low, high, log, step}``.
By default (``search.per: arm``) every arm of the study — variant × source × target × strategy —
is tuned on its own (:mod:`.arms`); trials are pretrained and transferred by the study's runner,
up to ``--workers`` at once on its executor, scored on the validation sets only (test images are
never looked at), optionally pruned after any epoch, and kept in the run folder's Optuna journal
so a killed search resumes (:mod:`.optimize`). The trials go to ``trials.csv`` and ``search.md``
(:mod:`.tables`); the tuned study — each arm with its best point — is written back as a runnable
``best.yaml`` and run once on the test sets into the same folder, so the report compares the
tuned arms like any study's. ``search.final`` (every arm) and ``final_by_arm`` (one arm) set keys
for that final run alone (seed 001 stopped its final ImageNet run early on the validation loss);
search.md, best.yaml and the report say which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medtransfer.config import to_dict
from medtransfer.errors import ConfigError, MedTransferError
from medtransfer.fileio import write_text_atomic
from medtransfer.search.arms import SearchArm, checked_arms, final_params, tuned_config
from medtransfer.search.optimize import JOURNAL, TrialRecord, optimize
from medtransfer.search.preview import point_warnings, preview_arms
from medtransfer.search.tables import best_trials, final_text, write_trials
from medtransfer.study import ExecutorSettings, StudyConfig, study_from_dict
from medtransfer.study.search_config import SearchConfig, nested

__all__ = ["JOURNAL", "SearchArm", "SearchConfig", "SearchPlan", "TrialRecord", "nested", "plan_search",
           "run_search"]


@dataclass(frozen=True)
class SearchPlan:
    """A search's config checked: the study, its arms, and what to say of points that cannot run."""

    cfg: StudyConfig
    arms: list[SearchArm]
    warnings: list[str]


def plan_search(raw: dict[str, Any], *, base: Path | None = None,
                source_name: str = "<config>") -> SearchPlan:
    """Check the search ``raw`` declares without running or writing anything: its keys, its arms
    and every point of their spaces as a trial would check it. An arm none of whose points can run
    is an error now, not after the other arms' trials."""
    cfg = study_from_dict(raw, base=base, source_name=source_name)
    if cfg.search is None:
        raise ConfigError(f"{source_name}: no 'search' section; run it with medtransfer run")
    arms = checked_arms(cfg, cfg.search, source_name)
    return SearchPlan(cfg, arms, point_warnings(preview_arms(cfg, cfg.search, arms, source=source_name)))


def run_search(raw: dict[str, Any], out: Path, *, base: Path | None = None, progress: bool = True,
               report: bool = True, echo: Callable[[str], None] = print, source_name: str = "<config>",
               executor: ExecutorSettings | None = None, plan: SearchPlan | None = None) -> Path:
    """Run the search that ``raw`` (a study config with a ``search`` section) declares on
    ``executor``'s workers, then the tuned study on the tests, holding ``out``'s run lock
    throughout; returns ``out``. ``plan``: :func:`plan_search`'s, when the caller checked first."""
    from medtransfer.study.executors import preflight
    from medtransfer.study.lock import run_lock

    plan = plan or plan_search(raw, base=base, source_name=source_name)
    assert plan.cfg.search is not None
    executor = executor or ExecutorSettings()
    preflight(executor, Path(out))
    with run_lock(out):
        for line in plan.warnings:  # points whose trials will be told as failed
            echo(line)
        return _search(raw, plan.cfg, plan.cfg.search, plan.arms, Path(out), base=base, progress=progress,
                       report=report, echo=echo, executor=executor)


def _search(raw: dict[str, Any], cfg: StudyConfig, search: SearchConfig, arms: list[SearchArm], out: Path,
            *, base: Path | None, progress: bool, report: bool, echo: Callable[[str], None],
            executor: ExecutorSettings) -> Path:
    from medtransfer.api import run_study
    from medtransfer.study import Runner

    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "search.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
    runner = Runner(cfg, out, progress=progress, echo=echo)
    runner.prepare()
    echo(f"search: {len(arms)} arm(s) tuned {'each on its own' if search.per == 'arm' else 'together'}, "
         f"up to {executor.workers} trial(s) at once ({executor.kind})")
    with runner.session(executor):
        records = optimize(runner, search, arms, out, workers=executor.workers, echo=echo)
    write_trials(out, records, [a.label for a in arms], search,
                 {a.label: final_params(search, a) for a in arms}, cfg.report.figure_formats)
    best = best_trials(records)
    failed = [a.label for a in arms if a.space and best.get(a.label) is None]
    if failed:
        raise MedTransferError(f"search: no trial of arm(s) {', '.join(failed)} gave a finite validation "
                               f"{search.objective.metric}; see {out / 'trials.csv'}")
    chosen = {a.name: {} if not a.space else dict(best[a.label].params)  # type: ignore[union-attr]
              for a in arms}
    tuned = tuned_config(raw, cfg, search, chosen, arms)
    header = _header(cfg.name, search, len(records), [(a.label, best.get(a.label)) for a in arms],
                     {a.label: final_params(search, a) for a in arms})
    best_cfg = study_from_dict(tuned, base=base)
    write_text_atomic(out / "best.yaml", header + yaml.safe_dump(to_dict(best_cfg, skip_defaults=True),
                                                                 sort_keys=False))
    echo(f"best: {out / 'best.yaml'}; evaluating the tuned arms once on the test sets")
    return run_study(best_cfg, out, progress=progress, report=report, echo=echo, executor=executor)


def _header(name: str, search: SearchConfig, n: int, best: list[tuple[str, TrialRecord | None]],
            final: dict[str, dict[str, Any]]) -> str:
    """best.yaml's comment: what was tuned, each arm's chosen trial and what search.final set."""
    how = "each arm on its own" if search.per == "arm" else "one setting for every arm"
    lines = [f"# The study as tuned by search '{name}' ({n} trials, {how}, by validation "
             f"{search.objective.metric}):"]
    for label, b in best:
        if b is None or b.value is None:
            lines.append(f"# arm {label}: no searched key applies; as configured")
            continue
        chosen = ", ".join(f"{k}={v}" for k, v in b.params.items())
        lines.append(f"# arm {label}: {b.trial} ({chosen}; {b.value:.4f})")
    for label, keys in final.items():
        if keys:
            lines.append(f"# arm {label}, its final run only (search.final, final_by_arm; not the trials): "
                         f"{final_text(keys)}")
    lines.append("# Settings at their default value are left out. Run: medtransfer run best.yaml")
    return "\n".join([*lines, ""])
