"""Run a study's variants in parallel worker processes on this machine.

Each worker rebuilds the runner from the resolved config and reloads the (cached) data, then runs
whole variants (pretrain → transfer); units land in the same store, so a killed run resumes as usual.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medtransfer.config import to_dict

if TYPE_CHECKING:
    from medtransfer.study.runner import StudyRunner

_RUNNER: StudyRunner | None = None


def _init_worker(cfg_data: dict[str, Any], out: str, threads: int) -> None:
    from medtransfer.study.config import study_from_dict
    from medtransfer.study.runner import StudyRunner

    global _RUNNER
    torch.set_num_threads(threads)
    runner = StudyRunner(study_from_dict(cfg_data), Path(out), progress=False,
                         echo=lambda m: print(m, flush=True))
    runner.prepare(write=False)
    _RUNNER = runner


def _run_variant(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    assert _RUNNER is not None, "worker not initialised"
    return _RUNNER.run_variant(name)


def run_variants_in_processes(
    runner: StudyRunner, workers: int
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """``{variant: (pretrain result, transfer result)}``, computed by ``workers`` processes."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn, not fork: forking a process whose OpenMP/CUDA runtime is initialised can hang.
    ctx = get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_init_worker,
        initargs=(to_dict(runner.cfg), str(runner.out), threads),
    ) as pool:
        futures = {pool.submit(_run_variant, v.name): v.name for v in runner.variants}
        return {futures[f]: f.result() for f in as_completed(futures)}
