"""A search's records: ``trials.csv`` (every trial of every arm), ``search.md`` (each arm's best
and top trials, its figures) and the figures of the score per hyperparameter value."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medtransfer.csvfile import write_csv
from medtransfer.document import Doc
from medtransfer.fileio import write_text_atomic
from medtransfer.plots import FigureDir, search_figures
from medtransfer.search.optimize import TrialRecord
from medtransfer.study.search_config import SearchConfig

__all__ = ["best_trials", "final_text", "write_trials"]


def best_trials(records: list[TrialRecord]) -> dict[str, TrialRecord | None]:
    """Each arm's best finished trial (rank 1 and complete), None where none finished."""
    out: dict[str, TrialRecord | None] = {}
    for r in records:
        out.setdefault(r.arm, None)
        if r.rank == 1 and r.value is not None:
            out[r.arm] = r
    return out


def final_text(keys: dict[str, Any]) -> str:
    """``search.final``'s keys of one arm as one line: ``key=value, …`` (values as JSON)."""
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in keys.items())


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _table(rows: list[TrialRecord], keys: list[str]) -> tuple[list[str], list[list[str]]]:
    head = ["rank", "trial", *keys, "val", "best epoch", "epochs", "state"]
    body = [[str(r.rank), r.trial, *(str(r.params.get(k, "–")) for k in keys), _fmt(r.value),
             "–" if r.best_epoch is None else str(r.best_epoch), str(r.epochs), r.state] for r in rows]
    return head, body


def write_trials(out: Path, records: list[TrialRecord], arms: list[str], search: SearchConfig,
                 final: dict[str, dict[str, Any]] | None = None,
                 formats: Sequence[str] = ("png", "svg")) -> None:
    """``trials.csv``, ``search.md`` and ``plots/search_*`` (in ``formats``) of a finished search;
    ``final``: each arm's ``search.final`` keys (what its final run sets beyond its best trial)."""
    metric, keys = search.objective.metric, list(search.space)
    flat: list[dict[str, Any]] = [
        {"arm": r.arm, "rank": r.rank, "trial": r.trial, **r.params,
         f"val_{metric}": math.nan if r.value is None else r.value,
         "best_epoch": "" if r.best_epoch is None else r.best_epoch, "epochs": r.epochs, "state": r.state}
        for r in records]
    write_csv(out / "trials.csv", flat, ["arm", "rank", "trial", *keys, f"val_{metric}", "best_epoch",
                                          "epochs", "state"])
    doc = Doc(markdown=True, base=out)
    per = "each arm on its own" if search.per == "arm" else "one setting for every arm"
    doc.title(f"Search: {len(records)} trials ({search.sampler}, {per}), objective validation {metric} "
              f"({search.objective.direction})")
    best = best_trials(records)
    doc.heading("Best of each arm")
    doc.table(["arm", "trial", *keys, f"val {metric}"],
              [[arm, "–" if b is None else b.trial, *("–" if b is None else str(b.params.get(k, "–"))
                                                       for k in keys), _fmt(None if b is None else b.value)]
               for arm, b in ((a, best.get(a)) for a in arms)])
    logs = [k for k, v in search.space.items() if isinstance(v, dict) and v.get("log")]
    for arm in arms:
        rows = [r for r in records if r.arm == arm]
        if not rows:
            doc.para(f"Arm {arm}: no searched key applies to it; it runs as configured.")
            continue
        head, body = _table(rows, keys)
        prefix = f"{arm}: " if len(arms) > 1 else ""
        doc.heading(f"{prefix}Top {min(search.top_k, len(body))}")
        doc.table(head, body[: search.top_k])
        doc.heading(f"{prefix}All trials")
        doc.table(head, body)
        plots = search_figures(FigureDir(out / "plots", tuple(formats)),
                               [{"params": r.params, "value": r.value} for r in rows],
                               [k for k in keys if any(k in r.params for r in rows)], metric, logs,
                               arm=arm if len(arms) > 1 else None)
        if plots:
            doc.heading(f"{prefix}Validation score per hyperparameter value")
            doc.para("Each key's values: the mean ± sd over the trials that used it (bar) and their "
                     "spread (box); a scatter for a sampled range. The other keys vary across each "
                     "value's trials.")
            doc.images([(p.caption, p.png) for p in plots])
    doc.para("Selected on the validation set only; `best.yaml` (each arm with its best point) is "
             "evaluated once on the test sets (results.csv, summary.md, report.html in this folder).")
    changed = {arm: keys for arm, keys in (final or {}).items() if keys}
    if changed:
        doc.heading("Final run")
        rest = "" if len(changed) == len(arms) else "; the other arms run as their best trial"
        doc.para("The tuned arms' run on the test sets sets these keys (`search.final`, `final_by_arm`) "
                 f"over the best trial's settings; the trials did not{rest}.")
        doc.table(["arm", "key", "value"], [[arm, k, json.dumps(v)] for arm, keys in changed.items()
                                            for k, v in keys.items()])
    write_text_atomic(out / "search.md", doc.render())
