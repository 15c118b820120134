"""What a replicate of an arm is, and each arm's metric per replicate, from ``results.csv`` rows:
the repeats (each the mean over its test sets or folds) when the study has more than one repeat,
otherwise the test sets (or cross-validation folds) themselves."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from medtransfer.study.plan import NO_SOURCE

__all__ = ["ARM", "NO_SOURCE", "Key", "replicates"]

ARM = ("variant", "target", "source", "strategy")
Key = tuple[str, str, str, str]


def replicates(
    rows: Sequence[dict[str, Any]], metric: str, stage: str
) -> tuple[dict[Key, dict[Any, float]], str]:
    """Each arm's (``ARM``) metric per replicate, and what the replicates are (``repeats``,
    ``folds`` or ``test sets``)."""
    repeats = {str(r["repeat"]) for r in rows if r["stage"] == stage}
    over = (
        "repeats"
        if len(repeats) > 1
        else "folds"
        if any(r["fold"] not in ("", "-") for r in rows if r["stage"] == stage)
        else "test sets"
    )
    acc: dict[Key, dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["stage"] == stage and r["metric"] == metric:
            key = tuple(str(r[k]) for k in ARM)
            rep = r["repeat"] if over == "repeats" else (r["test_set"] if stage == "transfer" else r["fold"])
            acc[key][rep].append(float(r["value"]))  # type: ignore[index]
    return {k: {rep: float(np.mean(v)) for rep, v in d.items()} for k, d in acc.items()}, over
