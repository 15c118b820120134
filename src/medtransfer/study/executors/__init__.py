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

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from medtransfer.config import check_choice
from medtransfer.errors import ConfigError

__all__ = ["DEFAULT_RETRIES", "EXECUTORS", "ExecutorSettings", "JobRunner", "OnDone", "Session",
           "open_session", "preflight", "threads"]

EXECUTORS = ("local", "ray")
DEFAULT_RETRIES = 3
OnDone = Callable[[Any, Any], None]


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _name(key: str) -> str:
    """A setting as errors name it: the key and the command line's flag."""
    return f"'{key}' (--{key.replace('_', '-')})"


@dataclass(frozen=True)
class ExecutorSettings:
    """Where jobs run: ``kind`` ``local`` (this process, or ``workers`` spawned processes) or
    ``ray`` (``workers`` actors on the cluster at ``address``, else at ``RAY_ADDRESS``, else on
    a Ray started here).

    ``cpus_per_worker``: the CPUs each Ray actor asks for, and the threads each worker's torch
    uses (its whole part, at least 1; default: an equal share of this machine's CPUs where the
    workers run here, 1 CPU on a cluster joined). ``gpus_per_worker`` (Ray): the GPUs each
    actor asks for (fractions share one; default: 1 where the study's device is CUDA, or
    ``auto`` on a cluster with GPUs, else 0). ``retries`` (Ray): how often a job lost with its
    worker (a killed process, a lost node) is run again on another (default 3); an error raised
    by the job itself is never retried. ``runtime_env`` (Ray): the job's runtime environment
    (``working_dir``, ``py_modules``, ``pip``, ``env_vars``, ...) for every actor.
    """

    kind: Literal["local", "ray"] = "local"
    workers: int = 1
    address: str | None = None
    cpus_per_worker: float | None = None
    gpus_per_worker: float | None = None
    retries: int | None = None
    runtime_env: Mapping[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        check_choice("executor", self.kind, EXECUTORS)
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"'workers': got {self.workers!r}; allowed: an integer >= 1")
        wrong = {
            "cpus_per_worker": (self.cpus_per_worker is not None
                                and not (_number(self.cpus_per_worker) and self.cpus_per_worker > 0),
                                "a number > 0"),
            "gpus_per_worker": (self.gpus_per_worker is not None
                                and not (_number(self.gpus_per_worker) and self.gpus_per_worker >= 0),
                                "a number >= 0"),
            "retries": (self.retries is not None and not (isinstance(self.retries, int)
                                                          and not isinstance(self.retries, bool)
                                                          and self.retries >= 0), "an integer >= 0"),
            "runtime_env": (self.runtime_env is not None and not isinstance(self.runtime_env, Mapping),
                            "a mapping such as {'working_dir': '.', 'pip': [...]}"),
        }
        for key, (bad, allowed) in wrong.items():
            if bad:
                raise ConfigError(f"{_name(key)}: got {getattr(self, key)!r}; allowed: {allowed}")
        for key in ("address", "gpus_per_worker", "retries", "runtime_env"):
            if getattr(self, key) is not None and self.kind != "ray":
                raise ConfigError(f"{_name(key)}: got {getattr(self, key)!r}, but it is only used with "
                                  "executor 'ray'")

    @property
    def max_retries(self) -> int:
        """How often a job lost with its worker is run again."""
        return DEFAULT_RETRIES if self.retries is None else self.retries

    def cluster(self) -> tuple[str | None, str]:
        """The Ray cluster to join and who named it: ``address``, else ``RAY_ADDRESS`` (as
        ``ray job submit`` and ``ray start`` set it); ``(None, "")`` to start a Ray here."""
        if self.kind != "ray":
            return None, ""
        if self.address is not None:
            return self.address, "--address"
        env = os.environ.get("RAY_ADDRESS", "").strip()
        return (env, "RAY_ADDRESS") if env and env != "local" else (None, "")


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


def threads(cpus: float | None, workers: int) -> int:
    """Torch threads of each of ``workers`` workers on this machine: ``cpus`` (its whole part, at
    least 1), else an equal share of the CPUs."""
    return max(1, int(cpus) if cpus is not None else (os.cpu_count() or 1) // workers)


@contextmanager
def _threads_here(count: int | None) -> Iterator[None]:
    """Jobs run in this process with ``count`` torch threads (unchanged when None)."""
    if count is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def preflight(settings: ExecutorSettings, out: Path) -> None:
    """Check that a Ray address (``address`` or ``RAY_ADDRESS``) answers before any data is loaded."""
    address, named_by = settings.cluster()
    if address is not None:
        from medtransfer.study.executors.ray import check_address

        check_address(address, out, named_by)


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
        return
    # A local worker's threads, also for the jobs that run here (a batch of one job).
    here = None if settings.cpus_per_worker is None else threads(settings.cpus_per_worker, 1)
    with _threads_here(here):
        if settings.workers == 1:
            yield InProcess(runner)
        else:
            from medtransfer.study.executors.local import ProcessPool

            with ProcessPool(runner, factory, settings.workers, echo, settings.cpus_per_worker) as pool:
                yield pool
