"""Run a study's jobs in parallel worker processes on this machine (or on Ray).

Each worker rebuilds the runner from the resolved config and reloads the (cached) data, then runs
whole jobs (e.g. pretrain → transfer); units land in the same store, so a killed run resumes as usual.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from medtransfer.config import check_choice, to_dict
from medtransfer.errors import ConfigError

if TYPE_CHECKING:
    from medtransfer.study.config import StudyConfig


class JobRunner(Protocol):
    """What executors need of a runner (StudyRunner and MatrixRunner both are)."""

    cfg: StudyConfig
    out: Path

    def job_names(self) -> list[str]: ...

    def run_job(self, name: str) -> Any: ...


_RUNNER: JobRunner | None = None


def _init_worker(cfg_data: dict[str, Any], out: str, threads: int) -> None:
    from medtransfer.study.config import study_from_dict
    from medtransfer.study.runner import make_runner

    global _RUNNER
    torch.set_num_threads(threads)
    runner = make_runner(study_from_dict(cfg_data), Path(out), progress=False,
                         echo=lambda m: print(m, flush=True))
    runner.prepare(write=False)
    _RUNNER = runner


EXECUTORS = ("local", "ray")


def _run_job(name: str) -> Any:
    assert _RUNNER is not None, "worker not initialised"
    return _RUNNER.run_job(name)


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
        from medtransfer.study.ray_executor import check_address

        check_address(address, out)


def run_jobs(runner: JobRunner, names: list[str], *, executor: str = "local", workers: int = 1,
             address: str | None = None) -> dict[str, Any]:
    """``{job: runner.run_job(job)}`` — in this process (1 local worker), in ``workers`` local
    processes, or as Ray tasks (``address``: an existing cluster, else a local one)."""
    _check(executor, workers, address)
    if executor == "ray":
        from medtransfer.study.ray_executor import run_jobs_on_ray

        return run_jobs_on_ray(runner, names, address=address, workers=workers)
    if workers == 1 or len(names) < 2:
        return {name: runner.run_job(name) for name in names}
    return run_jobs_in_processes(runner, names, workers)


def run_jobs_in_processes(runner: JobRunner, names: list[str], workers: int) -> dict[str, Any]:
    """``{job: result}``, computed by ``workers`` spawned processes."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn, not fork: forking a process whose OpenMP/CUDA runtime is initialised can hang.
    ctx = get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker,
        initargs=(to_dict(runner.cfg), str(runner.out), threads),
    ) as pool:
        futures = {pool.submit(_run_job, name): name for name in names}
        return {futures[f]: f.result() for f in as_completed(futures)}
