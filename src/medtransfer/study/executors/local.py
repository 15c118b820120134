"""Run jobs in worker processes on this machine.

What a worker says (its runner's ``echo`` lines, the ``medtransfer`` loggers' records and its
warnings) goes through a queue to this process, which echoes the lines and hands the records to
its own loggers — so they reach the console and the run's ``run.log`` as in a one-process run.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from logging.handlers import QueueHandler, QueueListener
from multiprocessing import get_context
from typing import Any

import torch

from medtransfer.study.executors import threads

__all__ = ["ProcessPool", "log_to", "relay"]

_RUNNER: Any = None


def log_to(sink: Any, level: int) -> None:
    """In a worker process: the ``medtransfer`` loggers' records at ``level`` and up, and warnings,
    go to ``sink`` (anything with ``put_nowait``) instead of this process's streams."""
    logger = logging.getLogger("medtransfer")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.addHandler(QueueHandler(sink))  # its prepare() makes records picklable
    logger.setLevel(level)
    logger.propagate = False
    warned = logging.getLogger("medtransfer.warnings")

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        warned.warning("%s: %s (%s:%d)", category.__name__, message, filename, lineno)

    warnings.showwarning = show


def relay(item: Any, echo: Callable[[str], None]) -> None:
    """In the parent: a worker's ``echo`` line (a str) is echoed, a log record goes to the
    logger of its name here (and so to the console and ``run.log``)."""
    if isinstance(item, str):
        echo(item)
    else:
        logging.getLogger(item.name).handle(item)


class _Relay(QueueListener):
    """Takes the workers' lines and records off the queue in a thread of the parent."""

    def __init__(self, queue: Any, echo: Callable[[str], None]) -> None:
        super().__init__(queue)
        self.echo = echo

    def handle(self, record: Any) -> None:
        relay(record, self.echo)


def _init_worker(factory: Callable[..., Any], threads: int, queue: Any, level: int) -> None:
    global _RUNNER
    torch.set_num_threads(threads)
    log_to(queue, level)
    _RUNNER = factory(echo=queue.put)


def _run_job(job: Any) -> Any:
    assert _RUNNER is not None, "worker not initialised"
    return _RUNNER.run_job(job)


class ProcessPool:
    """A session of ``workers`` spawned processes, each building its runner with
    ``factory(echo=...)`` once and using ``cpus`` torch threads (default: an equal share of the
    CPUs); their lines go to ``echo``, their log records to the loggers here. The pool starts at
    the first batch of two or more jobs; a batch of one job runs in this process with ``runner``
    (no worker would start sooner)."""

    def __init__(self, runner: Any, factory: Callable[..., Any], workers: int,
                 echo: Callable[[str], None] = print, cpus: float | None = None) -> None:
        self.runner, self.factory, self.workers, self.echo = runner, factory, workers, echo
        self.threads = threads(cpus, workers)
        self._pool: ProcessPoolExecutor | None = None
        self._listener: _Relay | None = None

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: forking a process whose OpenMP/CUDA runtime is initialised can hang.
            ctx = get_context("spawn")
            queue = ctx.Queue()
            self._listener = _Relay(queue, self.echo)
            self._listener.start()
            level = logging.getLogger("medtransfer").getEffectiveLevel()
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx,
                                             initializer=_init_worker,
                                             initargs=(self.factory, self.threads, queue, level))
        return self._pool

    def run(self, jobs: Sequence[Any], on_done: Callable[[Any, Any], None]) -> dict[Any, Any]:
        """``{job: result}`` in the order of ``jobs``."""
        results: dict[Any, Any] = {}
        if len(jobs) < 2:
            for job in jobs:
                results[job] = self.runner.run_job(job)
                on_done(job, results[job])
            return results
        pool = self._start()
        futures = {pool.submit(_run_job, job): job for job in jobs}
        try:
            for future in as_completed(futures):
                job = futures[future]
                results[job] = future.result()
                on_done(job, results[job])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return {job: results[job] for job in jobs}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._listener is not None:
            self._listener.stop()  # after the workers have exited: everything they said is relayed
            self._listener = None
