"""Run a study's jobs on Ray: one actor per worker builds the runner once, then runs jobs.

The run folder, the data folders and ``cache_dir`` must be on storage all Ray nodes share, under
the same paths, and every node needs the same medtransfer installed: actors reload the data and
write each unit straight into ``<run>/units``, so what finished before a failure stays there and
a rerun reuses it.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medtransfer.errors import ConfigError
from medtransfer.study.executors.local import log_to, relay

if TYPE_CHECKING:
    from medtransfer.study.executors import ExecutorSettings, JobRunner, OnDone


class _Worker:
    """Ray actor: builds its runner on its first job; keeps its messages (``echo`` lines, and
    the ``medtransfer`` loggers' records and warnings) until drained."""

    def __init__(self, factory: Callable[..., Any], out: str, threads: int,
                 level: int = logging.INFO) -> None:
        self.factory, self.out, self.threads, self.level = factory, out, threads, level
        self.runner: Any = None
        self.lines: list[Any] = []
        self.lock = threading.Lock()

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


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any],
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


def _share(per_node: list[float], n: int) -> float:
    """The most of a resource each of ``n`` actors can get with all placed at once: whole units
    where the nodes have enough, else 1/k of one."""
    whole = [int(x) for x in per_node]
    for c in range(max(whole, default=0), 0, -1):
        if sum(w // c for w in whole) >= n:
            return float(c)
    return 1.0 / -(-n // max(1, sum(whole)))


def check_address(address: str, out: Path) -> None:
    """Fail at once, naming the address, when nothing listens there (before any data is loaded)."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    kept = f"nothing was run; units finished earlier stay in {out / 'units'}"
    if sep and port.isdigit():
        # ray.init retries a dead address for minutes: fail at once instead.
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
        except OSError as exc:
            raise ConfigError(f"'address': no Ray cluster reachable at {address} ({exc}); start one "
                              f"with `ray start --head` or check the address ({kept})") from exc


def _connect(ray: Any, address: str, out: Path) -> None:
    check_address(address, out)
    kept = f"nothing was run; units finished earlier stay in {out / 'units'}"
    try:
        ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError) as exc:
        # Ray passes the cause on as text inside a RuntimeError.
        hint = ("; it uses token authentication: set RAY_AUTH_MODE=token and its token in "
                "RAY_AUTH_TOKEN or ~/.ray/auth_token" if "AuthenticationError" in repr(exc.__cause__) else "")
        raise ConfigError(f"'address': cannot connect to the Ray cluster at {address}: {exc}{hint} "
                          f"({kept})") from exc


class RaySession:
    """A session of ``settings.workers`` Ray actors (each building its runner with
    ``factory(echo=...)`` on its first job), on the cluster at ``settings.address``
    (``HOST:PORT``), else on a Ray started here for the session and stopped at its end.

    ``runner.out``, the data and the cache must be on storage all Ray nodes share. Each actor gets
    an equal share of CPUs (and of GPUs unless the device is ``cpu``) such that all fit at once.
    In a batch, the first failing job's exception is raised again, class and message intact, once
    the jobs already running have finished; no further jobs are started.
    """

    def __init__(self, runner: JobRunner, factory: Callable[..., Any], settings: ExecutorSettings,
                 echo: Callable[[str], None] = print) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError("executor 'ray' needs Ray: pip install 'medtransfer[ray]'") from exc
        self.ray, self.runner, self.factory, self.settings, self.echo = ray, runner, factory, settings, echo
        self.actors: list[Any] = []
        self.started = False

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> list[Any]:
        if self.actors:
            return self.actors
        ray, address, n = self.ray, self.settings.address, self.settings.workers
        self.started = not ray.is_initialized()
        if self.started and address is None:
            ray.init(address="local", num_cpus=max(n, os.cpu_count() or 1), include_dashboard=False,
                     log_to_driver=True, logging_level=logging.WARNING)
        elif self.started and address is not None:
            _connect(ray, address, self.runner.out)
        nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        cpus = _share([r.get("CPU", 0.0) for r in nodes], n)
        node_gpus = [r.get("GPU", 0.0) for r in nodes]
        gpus = _share(node_gpus, n) if self.runner.device_name != "cpu" and sum(node_gpus) else 0.0
        self.echo(f"ray: {n} workers × {cpus:g} CPUs{f' + {gpus:g} GPU' if gpus else ''} on "
                  f"{len(nodes)} node(s) ({address or 'started here'})")
        # Two threads per actor: one runs a job while the other answers drain().
        remote = ray.remote(_Worker).options(num_cpus=cpus, num_gpus=gpus, max_concurrency=2)
        level = logging.getLogger("medtransfer").getEffectiveLevel()
        self.actors = [remote.remote(self.factory, str(self.runner.out), max(1, int(cpus)), level)
                       for _ in range(n)]
        return self.actors

    def run(self, jobs: Sequence[Any], on_done: OnDone) -> dict[Any, Any]:
        """``{job: result}`` in the order of ``jobs``."""
        if not jobs:
            return {}
        return _schedule(self.ray, self.echo, self.runner.out, self._start(), list(jobs), on_done)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        if self.started:
            self.ray.shutdown()
            self.started = False


def run_jobs_on_ray(runner: JobRunner, factory: Callable[..., Any], jobs: list[Any], *,
                    address: str | None, workers: int, on_done: OnDone) -> dict[Any, Any]:
    """``{job: result}`` of ``jobs`` run by a :class:`RaySession` of at most ``workers`` actors."""
    from medtransfer.study.executors import ExecutorSettings

    settings = ExecutorSettings("ray", max(1, min(workers, len(jobs))), address)
    with RaySession(runner, factory, settings, getattr(runner, "echo", print)) as session:
        return session.run(jobs, on_done)


def _schedule(ray: Any, echo: Callable[[str], None], out: Path, actors: list[Any],
              jobs: list[Any], on_done: OnDone) -> dict[Any, Any]:
    """Hand jobs to idle actors and relay their messages; after a failure, start no more jobs."""
    todo, idle, live = list(reversed(jobs)), list(actors), list(actors)
    running: dict[Any, tuple[Any, Any]] = {}
    drains: dict[Any, Any] = {}
    results: dict[Any, Any] = {}
    error: BaseException | None = None
    while running or (todo and error is None):
        while idle and todo and error is None:
            actor, job = idle.pop(), todo.pop()
            running[actor.run_job.remote(job)] = (actor, job)
        done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
        _relay(ray, echo, live, drains, timeout=0)
        for ref in done:
            actor, job = running.pop(ref)
            idle.append(actor)
            try:
                ok, value = ray.get(ref)
            except ray.exceptions.RayError as exc:  # the actor died: killed, out of memory, node lost
                ok, value = False, (RuntimeError, (f"job {job.label!r} failed on Ray: {exc}\nunits "
                                    f"finished so far stay in {out / 'units'}",), {}, "")
            if ok:
                results[job] = value
                on_done(job, value)
            else:
                error = error or _rebuild(*value)
    for _ in range(2):  # a drain() sent before the last job ended may miss its last lines
        _relay(ray, echo, live, drains, timeout=60)
    if error is not None:
        raise error
    return {job: results[job] for job in jobs}


def _relay(ray: Any, echo: Callable[[str], None], live: list[Any], drains: dict[Any, Any],
           timeout: float) -> None:
    """Echo what the actors said since last asked. One drain() per actor at a time, as an actor
    still waiting for resources answers only once it starts."""
    for actor in live:
        if actor not in drains:
            drains[actor] = actor.drain.remote()
    ready, _ = ray.wait(list(drains.values()), num_returns=len(drains), timeout=timeout)
    for actor, ref in list(drains.items()):
        if ref in ready:
            del drains[actor]
            try:
                lines = ray.get(ref)
            except ray.exceptions.RayError:
                live.remove(actor)  # it died; its job's result says why
                continue
            for line in lines:
                relay(line, echo)
