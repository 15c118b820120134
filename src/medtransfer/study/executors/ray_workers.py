"""The Ray actors that run a study's jobs, and the loop that hands jobs to them.

A worker is used once it has started (an actor still waiting for resources holds no job). A
worker lost with its process or node (killed, out of memory, a preempted node) is replaced by a
new actor, and the job it was running is run again on a live worker, up to ``retries`` times;
the log names the worker, where it ran, the job and the attempt. That is safe because units are
resumable on disk: a unit killed half-way is redone (its lock died with its process, a killed
pretraining resumes from its last finished epoch). An exception raised by the job itself is
not retried: it comes back once, class and message intact.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medtransfer.errors import ConfigError, MedTransferError
from medtransfer.study.executors.local import log_to, relay

__all__ = ["StudyWorker", "WorkerLostError", "Workers", "describe", "rebuild"]

OnDone = Callable[[Any, Any], None]
WAIT_NOTICE_S = 60.0  # jobs wait this long with no worker running: say why (then every 5 min)


class WorkerLostError(MedTransferError):
    """A job was lost with its Ray worker more often than ``retries`` allows, or workers keep
    failing to start."""


class StudyWorker:
    """Ray actor: builds its runner on its first job; keeps its messages (``echo`` lines, and
    the ``medtransfer`` loggers' records and warnings) until drained."""

    def __init__(self, factory: Callable[..., Any], out: str, threads: int,
                 level: int = logging.INFO) -> None:
        self.factory, self.out, self.threads, self.level = factory, out, threads, level
        self.runner: Any = None
        self.lines: list[Any] = []
        self.lock = threading.Lock()

    def where(self) -> tuple[str, str, int]:
        """Node id, the node's address on the cluster and process id: where this worker runs."""
        import ray

        node = ray.get_runtime_context().get_node_id()
        ip = next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node),
                  ray.util.get_node_ip_address())
        return node, ip, os.getpid()

    def put_nowait(self, item: Any) -> None:
        """An ``echo`` line or a log record (what :func:`~.local.log_to` hands on)."""
        with self.lock:
            self.lines.append(item)

    def drain(self) -> list[Any]:
        with self.lock:
            lines, self.lines = self.lines, []
        return lines

    def run_job(self, job: Any) -> tuple[bool, Any]:
        """``(True, result)`` or ``(False, (class, args, attributes, traceback))``: returned, not
        raised, as not every exception survives pickling (ImageDecodeError's ``__init__`` does not)."""
        try:
            if self.runner is None:
                self.runner = self._prepare()
            return True, self.runner.run_job(job)
        except Exception as exc:
            info = (type(exc), exc.args, vars(exc))
            try:
                pickle.loads(pickle.dumps(info))
            except Exception:
                info = (RuntimeError, (f"{type(exc).__name__}: {exc}",), {})
            return False, (*info, traceback.format_exc())

    def _prepare(self) -> Any:
        import ray

        if not (Path(self.out) / "config.yaml").is_file():
            raise ConfigError(f"run folder {self.out} is not visible on Ray node "
                              f"{ray.util.get_node_ip_address()}: with executor 'ray' the run folder, "
                              "data and cache_dir must be on storage all nodes share")
        torch.set_num_threads(self.threads)
        log_to(self, self.level)
        return self.factory(echo=self.put_nowait)


def rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any],
            tb: str) -> BaseException:
    """The worker's exception again: same class, message and attributes."""
    try:
        exc = cls(*args)
    except TypeError:  # an __init__ whose arguments differ from .args
        exc = cls.__new__(cls)
        BaseException.__init__(exc, *args)
    exc.__dict__.update(state)
    if tb:
        exc.add_note(f"raised in a Ray worker:\n{tb.rstrip()}")
    return exc


def describe(job: Any) -> str:
    """``pretrain 'bn'``, ``cell 'bn'``, ``trial 't3'``: a job as the log names it."""
    return f"{getattr(job, 'kind', 'pretrain')} {getattr(job, 'label', job)!r}"


def _reason(exc: BaseException, lines: int = 1) -> str:
    """The error's class and first ``lines`` lines (Ray's messages run on for a paragraph)."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines()[:lines])
    return f"{type(exc).__name__}: {text}"[: 300 * lines]


@dataclass(eq=False)
class _Slot:
    """One worker: its actor, whether it has started (``ready`` is its pending where() call),
    where it runs, the job it runs and its drain() call in flight."""

    number: int
    actor: Any
    ready: Any
    replaces: int | None = None
    place: str = "?"
    job: Any = None
    drain: Any = None


class Workers:
    """``n`` workers made by ``make()`` (a new actor each call), kept at ``n``: a lost one is
    replaced. ``waiting()`` says what a worker that has not started waits for."""

    def __init__(self, ray: Any, make: Callable[[], Any], n: int, echo: Callable[[str], None], *,
                 retries: int, out: Path, waiting: Callable[[], str] = lambda: "") -> None:
        self.ray, self.make, self.echo, self.retries, self.out = ray, make, echo, retries, out
        self.waiting = waiting
        self.slots: list[_Slot] = []
        self.count = 0
        self.failed_starts = 0  # in a row; reset by a worker that starts
        self.stalled_since: float | None = None
        self.next_notice = 0.0
        for _ in range(n):
            self._spawn()

    def _spawn(self, replaces: int | None = None) -> None:
        self.count += 1
        actor = self.make()
        self.slots.append(_Slot(self.count, actor, actor.where.remote(), replaces))

    def close(self) -> None:
        for slot in self.slots:
            self.ray.kill(slot.actor)
        self.slots = []

    def run(self, jobs: Sequence[Any], on_done: OnDone) -> dict[Any, Any]:
        """``{job: result}`` in the order of ``jobs``. Jobs go to started, idle workers; after
        a job's own error no further job starts, and the error is raised once the running jobs
        have finished."""
        ray = self.ray
        todo: deque[Any] = deque(jobs)
        running: dict[Any, _Slot] = {}
        results: dict[Any, Any] = {}
        lost: Counter[Any] = Counter()
        errors: list[BaseException] = []
        while running or (todo and not errors):
            for slot in self.slots:
                if slot.ready is None and slot.job is None and todo and not errors:
                    slot.job = todo.popleft()
                    running[slot.actor.run_job.remote(slot.job)] = slot
            starting = {slot.ready: slot for slot in self.slots if slot.ready is not None}
            waiting = [*starting, *running]
            if not waiting:  # cannot happen: a lost worker is replaced at once
                raise WorkerLostError("no Ray worker left to run the remaining jobs")
            done, _ = ray.wait(waiting, num_returns=len(waiting), timeout=0)  # everything ready now
            if not done:
                done, _ = ray.wait(waiting, num_returns=1, timeout=1.0)
            for ref in done:
                if ref in starting:
                    self._started(starting[ref])
                    continue
                slot = running.pop(ref)
                job, slot.job = slot.job, None
                try:
                    ok, value = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:  # the worker is alive: not a loss
                    errors.append(exc)
                    continue
                except ray.exceptions.RayError as exc:  # the worker died: killed, out of memory, node lost
                    self._lose(slot, exc, job)
                    lost[job] += 1
                    if lost[job] > self.retries:
                        errors.append(WorkerLostError(
                            f"{describe(job)} was lost with its Ray worker {lost[job]} times (last: "
                            f"{_reason(exc)}); not run again (retries: {self.retries}); units "
                            f"finished so far stay in {self.out / 'units'}"))
                    else:
                        self.echo(f"ray: {describe(job)} is run again on a live worker (retry "
                                  f"{lost[job]} of {self.retries}; its unit resumes or restarts)")
                        todo.appendleft(job)
                    continue
                if ok:
                    results[job] = value
                    on_done(job, value)
                else:
                    errors.append(rebuild(*value))
            self._relay(timeout=0)
            self._notice(bool(todo) and not running and not errors)
        for _ in range(2):  # a drain() sent before the last job ended may miss its last lines
            self._relay(timeout=60)
        if errors:
            raise errors[0]
        return {job: results[job] for job in jobs}

    def _started(self, slot: _Slot) -> None:
        """``slot``'s where() answered: the worker is ready, or failed to start."""
        try:
            node, ip, pid = self.ray.get(slot.ready)
        except self.ray.exceptions.RayError as exc:
            self.failed_starts += 1
            if self.failed_starts > max(self.retries, 1) * max(len(self.slots), 1):
                raise WorkerLostError(f"Ray workers keep failing to start ({self.failed_starts} in a "
                                      f"row; last: {_reason(exc, lines=5)})") from exc
            self._lose(slot, exc, None)
            return
        self.failed_starts = 0
        slot.ready, slot.place = None, f"node {node[:8]} ({ip}, pid {pid})"
        instead = f", replacing worker {slot.replaces}" if slot.replaces is not None else ""
        self.echo(f"ray: worker {slot.number} started on {slot.place}{instead}")

    def _lose(self, slot: _Slot, exc: BaseException, job: Any) -> None:
        """Say that ``slot``'s worker is lost (while running ``job``), and start another."""
        if slot not in self.slots:
            return
        self.slots.remove(slot)
        with contextlib.suppress(Exception):  # already gone
            self.ray.kill(slot.actor)  # a worker on a cut-off node might still be running
        doing = f" while running {describe(job)}" if job is not None else ""
        self.echo(f"ray: worker {slot.number} on {slot.place} was lost{doing} ({_reason(exc)}); "
                  f"worker {self.count + 1} replaces it")
        self._spawn(replaces=slot.number)

    def _notice(self, stalled: bool) -> None:
        """While jobs wait and no worker runs one (none has started), say every few minutes
        what the workers wait for."""
        now = time.monotonic()
        if not stalled:
            self.stalled_since = None
            return
        self.stalled_since = self.stalled_since or now
        if now - self.stalled_since >= WAIT_NOTICE_S and now >= self.next_notice:
            self.next_notice = now + 300.0
            self.echo(f"ray: no worker has started for {now - self.stalled_since:.0f} s; they wait "
                      f"for resources: {self.waiting()}")

    def _relay(self, timeout: float) -> None:
        """Echo what the started workers said since last asked (one drain() each at a time)."""
        for slot in self.slots:
            if slot.ready is None and slot.drain is None:
                slot.drain = slot.actor.drain.remote()
        pending = {slot.drain: slot for slot in self.slots if slot.drain is not None}
        if not pending:
            return
        ready, _ = self.ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
        for ref in ready:
            slot = pending[ref]
            slot.drain = None
            try:
                lines = self.ray.get(ref)
            except self.ray.exceptions.RayError as exc:
                if slot.job is None:  # idle: lost now; else its job's result says so
                    self._lose(slot, exc, None)
                continue
            for line in lines:
                relay(line, self.echo)
