"""The Python API in one place: run a study or a search into a run folder and write its tables
and report, as ``medtransfer run`` does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from medtransfer.report import summarize, write_report
from medtransfer.study import StudyConfig, load_study
from medtransfer.study import run_study as _run_plan
from medtransfer.study.lock import run_lock

__all__ = ["load_study", "run_study"]


def run_study(cfg: StudyConfig | str | Path, out: str | Path | None = None, *, report: bool = True,
              progress: bool = True, workers: int = 1, executor: str = "local", address: str | None = None,
              echo: Callable[[str], None] = print, **report_options: Any) -> Path:
    """Run a study (a config or the path of its YAML) into ``out`` (default ``runs/<name>``),
    then write ``summary.md``/``summary.csv`` and, with ``report``, ``report.html``
    (``report_options`` go to :func:`medtransfer.report.write_report`). Returns ``out``."""
    if not isinstance(cfg, StudyConfig):
        cfg = load_study(cfg)
    out = Path(out) if out is not None else Path("runs") / cfg.name
    with run_lock(out):  # held from the first unit to the report: no second run writes here
        _run_plan(cfg, out, progress=progress, workers=workers, executor=executor, address=address,
                  echo=echo)
        echo(f"summary: {summarize(out)}")
        if report:
            echo(f"report: {write_report(out, **report_options)}")
    return out
