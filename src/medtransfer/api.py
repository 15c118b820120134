"""The Python API in one place: run a study or a search into a run folder and write its tables
and report, as ``medtransfer run`` does."""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medtransfer.config import config_error
from medtransfer.data import DataConfig
from medtransfer.data.index import missing_path_message
from medtransfer.errors import ConfigError
from medtransfer.report import summarize, write_report
from medtransfer.study import ExecutorSettings, Runner, StudyConfig, load_study
from medtransfer.study.lock import run_lock
from medtransfer.study.lockstep import data_parallel

__all__ = ["LogEcho", "check_data_paths", "load_study", "missing_data_paths", "run_log", "run_study"]

RUN_LOG = "run.log"
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class LogEcho:
    """An ``echo`` that logs each progress line at INFO (to the console handler the CLI sets up,
    and to ``run.log`` while a run is open)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger("medtransfer.run")

    def __call__(self, msg: str) -> None:
        self.logger.info(msg)


@contextmanager
def run_log(out: str | Path, level: int = logging.DEBUG) -> Iterator[logging.Handler]:
    """``out/run.log`` (appended) receives the ``medtransfer`` loggers' records and the warnings
    shown while the block runs; nested calls for the same folder share one handler."""
    path = (Path(out) / RUN_LOG).resolve()
    logger = logging.getLogger("medtransfer")
    for existing in logger.handlers:
        if isinstance(existing, logging.FileHandler) and Path(existing.baseFilename) == path:
            yield existing
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.setLevel(level)
    old_level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # the file gets progress even when the console is quiet
    shown = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        shown(message, category, filename, lineno, file, line)
        handler.handle(logging.LogRecord("py.warnings", logging.WARNING, filename, lineno,
                                         f"{category.__name__}: {message}", None, None))

    warnings.showwarning = show
    logger.addHandler(handler)
    try:
        yield handler
    except KeyboardInterrupt:
        handler.handle(logging.LogRecord("medtransfer.run", logging.ERROR, __file__, 0,
                                         "interrupted; rerun to resume", None, None))
        raise
    except Exception as exc:  # what ended the run (a full disk, a bad image, ...) is in the log too
        handler.handle(logging.LogRecord("medtransfer.run", logging.ERROR, __file__, 0,
                                         f"{type(exc).__name__}: {exc}", None, None))
        raise
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        if warnings.showwarning is show:
            warnings.showwarning = shown
        handler.close()


def _tee(echo: Callable[[str], None], handler: logging.Handler) -> Callable[[str], None]:
    """``echo``, and each line into ``handler`` too unless ``echo`` logs already."""
    if isinstance(echo, LogEcho):
        return echo

    def both(msg: str) -> None:
        echo(msg)
        handler.handle(logging.LogRecord("medtransfer.run", logging.INFO, __file__, 0, msg, None, None))

    return both


def missing_data_paths(cfg: StudyConfig) -> list[str]:
    """One message per data path of ``cfg`` that does not exist, naming its key
    (``target.data.path``, ``targets.<name>.split.test_from``, ...)."""
    found: list[str] = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, DataConfig):
            path = str(value.path)
            if not path.startswith("demo:") and not value.path.exists():
                found.append(f"'{where}.path': {missing_path_message(value.path)}")
            return
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                item = getattr(value, f.name)
                if f.name == "test_from" and isinstance(item, Path) and not item.exists():
                    found.append(f"'{where}.test_from': {missing_path_message(item)}")
                else:
                    walk(item, f"{where}.{f.name}" if where else f.name)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}")

    walk(cfg, "")
    return found


def check_data_paths(cfg: StudyConfig, source: str = "") -> None:
    """A ConfigError naming every missing data path's key (and ``source``, the config file)."""
    missing = missing_data_paths(cfg)
    if missing:
        raise config_error(missing, source)


def run_study(cfg: StudyConfig | str | Path, out: str | Path | None = None, *, report: bool = True,
              progress: bool = True, executor: ExecutorSettings | None = None,
              echo: Callable[[str], None] = print, **report_options: Any) -> Path:
    """Run a study (a config or the path of its YAML) into ``out`` (default ``runs/<name>``) on
    ``executor``'s workers (default: this process), then write ``summary.md``/``summary.csv``
    and, with ``report``, ``report.html`` (``report_options`` go to
    :func:`medtransfer.report.write_report`). Progress goes to ``echo`` and to ``out/run.log``.
    Returns ``out``."""
    source = ""
    if not isinstance(cfg, StudyConfig):
        source = str(cfg)
        cfg = load_study(cfg)
    if cfg.search is not None:
        raise ConfigError(f"study {cfg.name!r} has a 'search' section: run it with `medtransfer run` "
                          "or medtransfer.search.run_search, which tune it before the tests")
    check_data_paths(cfg, source)  # before the run folder is made: a bad path leaves nothing behind
    out = Path(out) if out is not None else Path("runs") / cfg.name
    # under torchrun / srun: one unit on several processes, rank 0 writing (study.lockstep)
    with data_parallel(cfg.device, executor) as ranks:
        if not ranks.is_main:
            Runner(cfg, out, progress=False, echo=lambda msg: None).follow()
            return out
        # held from the first unit to the report: no second run writes here
        with run_lock(out), run_log(out) as handler:
            echo = _tee(echo, handler)
            Runner(cfg, out, progress=progress, echo=echo).run(executor)
            echo(f"summary: {summarize(out)}")
            if report:
                echo(f"report: {write_report(out, **report_options)}")
    return out
