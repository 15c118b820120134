"""Where a study's jobs run: in this process, in worker processes on this machine
(:mod:`.local`), or on a Ray cluster (:mod:`.ray`).

:class:`ExecutorSettings` says where (one object from the command line to here). An executor
*session* (:func:`open_session`) is opened once per run or search and runs batches of jobs: its
workers (processes or Ray actors) are started once and kept for every batch. Each worker builds
its own :class:`~medtransfer.study.runner.Runner` with a *factory* — a picklable callable for the
same study and run folder — and runs whole jobs; a job carries the spec of a variant the study
does not list (a search trial), so one worker serves every trial. Units land in the run folder's
unit store, so a killed run resumes as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from medtransfer.config import check_choice
from medtransfer.errors import ConfigError

__all__ = ["EXECUTORS", "ExecutorSettings", "JobRunner", "OnDone", "Session", "open_session", "preflight"]

EXECUTORS = ("local", "ray")
OnDone = Callable[[Any, Any], None]


@dataclass(frozen=True)
class ExecutorSettings:
    """Where jobs run: ``kind`` ``local`` (this process, or ``workers`` spawned processes) or
    ``ray`` (``workers`` actors on the cluster at ``address``, else on a Ray started here)."""

    kind: Literal["local", "ray"] = "local"
    workers: int = 1
    address: str | None = None

    def __post_init__(self) -> None:
        check_choice("executor", self.kind, EXECUTORS)
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"'workers': got {self.workers!r}; allowed: an integer >= 1")
        if self.address is not None and self.kind != "ray":
            raise ConfigError(f"'address': got {self.address!r}, but it is only used with executor 'ray'")


class JobRunner(Protocol):
    """What executors need of a runner."""

    @property
    def out(self) -> Path: ...

    @property
    def device_name(self) -> str: ...

    def run_job(self, job: Any) -> Any: ...


class Session(Protocol):
    """Runs batches of jobs on workers started once."""

    def run(self, jobs: Sequence[Any], on_done: OnDone) -> dict[Any, Any]:
        """``{job: result}`` in the order of ``jobs``; ``on_done(job, result)`` is called in this
        process as each job finishes."""
        ...


class InProcess:
    """Every job in this process, one after another, with ``runner``."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner

    def run(self, jobs: Sequence[Any], on_done: OnDone) -> dict[Any, Any]:
        results = {}
        for job in jobs:
            results[job] = self.runner.run_job(job)
            on_done(job, results[job])
        return results


def preflight(settings: ExecutorSettings, out: Path) -> None:
    """Check that a Ray address answers before any data is loaded."""
    if settings.address is not None:
        from medtransfer.study.executors.ray import check_address

        check_address(settings.address, out)


@contextmanager
def open_session(settings: ExecutorSettings, runner: JobRunner,
                 factory: Callable[..., JobRunner]) -> Iterator[Session]:
    """A session on ``settings``' workers, closed (workers stopped) on exit. With one local worker
    jobs run here with ``runner``; otherwise each worker builds its runner with ``factory``."""
    echo: Callable[[str], None] = getattr(runner, "echo", print)
    if settings.kind == "ray":
        from medtransfer.study.executors.ray import RaySession

        with RaySession(runner, factory, settings, echo) as ray_session:
            yield ray_session
    elif settings.workers == 1:
        yield InProcess(runner)
    else:
        from medtransfer.study.executors.local import ProcessPool

        with ProcessPool(runner, factory, settings.workers, echo) as pool:
            yield pool
