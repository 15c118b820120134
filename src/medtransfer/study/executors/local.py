"""Run jobs in worker processes on this machine."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

import torch

__all__ = ["run_jobs_in_processes"]

_RUNNER: Any = None


def _init_worker(factory: Callable[[], Any], threads: int) -> None:
    global _RUNNER
    torch.set_num_threads(threads)
    _RUNNER = factory()


def _run_job(job: Any) -> Any:
    assert _RUNNER is not None, "worker not initialised"
    return _RUNNER.run_job(job)


def run_jobs_in_processes(factory: Callable[[], Any], jobs: list[Any], workers: int,
                          on_done: Callable[[Any, Any], None]) -> dict[Any, Any]:
    """``{job: result}``, computed by ``workers`` spawned processes."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn, not fork: forking a process whose OpenMP/CUDA runtime is initialised can hang.
    ctx = get_context("spawn")
    results: dict[Any, Any] = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(factory, threads)) as pool:
        futures = {pool.submit(_run_job, job): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            results[job] = future.result()
            on_done(job, results[job])
    return {job: results[job] for job in jobs}
