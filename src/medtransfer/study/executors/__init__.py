"""Where a study's jobs run: in this process, in worker processes on this machine
(:mod:`.local`), or on a Ray cluster (:mod:`.ray`).

An executor receives a runner *factory* — a picklable callable that builds and prepares a
:class:`~medtransfer.study.runner.Runner` for the same study and run folder — and the jobs.
Workers build their own runner (reloading the data through the image cache) and run whole
jobs; units land in the run folder's unit store, so a killed run resumes as usual.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from medtransfer.config import check_choice
from medtransfer.errors import ConfigError

__all__ = ["EXECUTORS", "JobRunner", "OnDone", "preflight", "run_jobs"]

EXECUTORS = ("local", "ray")
OnDone = Callable[[Any, Any], None]


class JobRunner(Protocol):
    """What executors need of a runner."""

    @property
    def out(self) -> Path: ...

    @property
    def device_name(self) -> str: ...

    def run_job(self, job: Any) -> Any: ...


def _check(executor: str, workers: int, address: str | None) -> None:
    check_choice("executor", executor, EXECUTORS)
    if workers < 1:
        raise ConfigError(f"'workers': got {workers!r}; allowed: an integer >= 1")
    if address is not None and executor != "ray":
        raise ConfigError(f"'address': got {address!r}, but it is only used with executor 'ray'")


def preflight(executor: str, workers: int, address: str | None, out: Path) -> None:
    """Check the executor settings (and that a Ray address answers) before any data is loaded."""
    _check(executor, workers, address)
    if address is not None:
        from medtransfer.study.executors.ray import check_address

        check_address(address, out)


def run_jobs(runner: JobRunner, factory: Callable[..., JobRunner], jobs: Sequence[Any], *,
             executor: str = "local", workers: int = 1, address: str | None = None,
             on_done: OnDone | None = None) -> dict[Any, Any]:
    """``{job: result}`` — in this process with ``runner`` (1 local worker), in ``workers``
    local processes, or by Ray actors, each building its runner with ``factory``.
    ``on_done(job, result)`` is called in this process as each job finishes."""
    _check(executor, workers, address)
    done = on_done or (lambda job, result: None)
    if executor == "ray":
        from medtransfer.study.executors.ray import run_jobs_on_ray

        return run_jobs_on_ray(runner, factory, list(jobs), address=address, workers=workers, on_done=done)
    if workers == 1 or len(jobs) < 2:
        results = {}
        for job in jobs:
            results[job] = runner.run_job(job)
            done(job, results[job])
        return results
    from medtransfer.study.executors.local import run_jobs_in_processes

    return run_jobs_in_processes(factory, list(jobs), workers, done, echo=getattr(runner, "echo", print))
