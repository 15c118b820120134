"""Run a study's jobs on Ray: one actor per worker builds the runner once, then runs jobs
(:mod:`.ray_workers`: retries of jobs lost with their worker, replacement workers).

Which Ray: the cluster at ``--address``, else at ``RAY_ADDRESS`` (as ``ray job submit`` sets it
for the job it starts, and as users export it), else a Ray started here for the run. What each
worker asks for is stated, not guessed from a snapshot of the cluster: ``--cpus-per-worker`` /
``--gpus-per-worker``, with defaults the log states. The run folder, the data folders and
``cache_dir`` must be on storage all Ray nodes share, under the same paths; medtransfer and the
``imports`` modules must be importable on every node (installed there, or shipped with a
``runtime_env``): actors reload the data and write each unit straight into ``<run>/units``, so
what finished before a failure stays there and a rerun reuses it.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medtransfer.errors import ConfigError
from medtransfer.study.executors import threads
from medtransfer.study.executors.ray_workers import StudyWorker, Workers

if TYPE_CHECKING:
    from medtransfer.study.executors import ExecutorSettings, JobRunner, OnDone

__all__ = ["RaySession", "check_address", "fitting", "run_jobs_on_ray"]


def _kept(out: Path) -> str:
    return f"nothing was run; units finished earlier stay in {out / 'units'}"


def check_address(address: str, out: Path, named_by: str = "--address") -> None:
    """Fail at once, naming the address and where it came from, when nothing listens there
    (before any data is loaded)."""
    key = "'address'" if named_by == "--address" else named_by
    if address.startswith(("http://", "https://")):
        raise ConfigError(f"{key}: got {address!r}, a Ray dashboard (job submission) address; give the "
                          "cluster's address HOST:PORT (the port of `ray start --head`, 6379 by default), "
                          f"or submit the run with `ray job submit -- medtransfer run ...` ({_kept(out)})")
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if sep and port.isdigit():
        # ray.init retries a dead address for minutes: fail at once instead.
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
        except OSError as exc:
            raise ConfigError(f"{key}: no Ray cluster reachable at {address} ({exc}); start one "
                              f"with `ray start --head` or check the address ({_kept(out)})") from exc


def _connect(ray: Any, address: str, out: Path, named_by: str, runtime_env: dict[str, Any] | None) -> None:
    check_address(address, out, named_by)
    key = "'address'" if named_by == "--address" else named_by
    try:
        ray.init(address=address, log_to_driver=True, logging_level=logging.WARNING,
                 **({"runtime_env": runtime_env} if runtime_env else {}))
    except ValueError as exc:  # in a submitted job: --runtime-env names a field the job's env sets too
        raise ConfigError(f"--runtime-env: {exc} ({_kept(out)})") from exc
    except (ConnectionError, RuntimeError) as exc:
        # Ray passes the cause on as text inside a RuntimeError.
        hint = ("; it uses token authentication: set RAY_AUTH_MODE=token and its token in "
                "RAY_AUTH_TOKEN or ~/.ray/auth_token" if "AuthenticationError" in repr(exc.__cause__) else "")
        raise ConfigError(f"{key}: cannot connect to the Ray cluster at {address}: {exc}{hint} "
                          f"({_kept(out)})") from exc


def fitting(nodes: Sequence[dict[str, float]], cpus: float, gpus: float) -> int:
    """How many workers asking ``cpus`` and ``gpus`` each fit on ``nodes`` (their total
    resources) at once."""
    count = 0
    for node in nodes:
        k = int(node.get("CPU", 0.0) / cpus + 1e-9)
        if gpus > 0:
            k = min(k, int(node.get("GPU", 0.0) / gpus + 1e-9))
        count += k
    return count


def _amount(resources: dict[str, float]) -> str:
    return f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs"


class RaySession:
    """A session of ``settings.workers`` Ray actors (each building its runner with
    ``factory(echo=...)`` on its first job), on the cluster :meth:`ExecutorSettings.cluster`
    names, else on a Ray started here for the session and stopped at its end.

    ``runner.out``, the data and the cache must be on storage all Ray nodes share. In a batch,
    a job lost with its worker runs again (``settings.max_retries`` times at most); the first
    job's own exception is raised again, class and message intact, once the jobs already
    running have finished; no further jobs are started.
    """

    def __init__(self, runner: JobRunner, factory: Callable[..., Any], settings: ExecutorSettings,
                 echo: Callable[[str], None] = print) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError("executor 'ray' needs Ray: pip install 'medtransfer[ray]'") from exc
        self.ray, self.runner, self.factory, self.settings, self.echo = ray, runner, factory, settings, echo
        self.workers: Workers | None = None
        self.started = False

    def __enter__(self) -> RaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _join(self) -> bool:
        """Join or start Ray and say which; True when the Ray was started here."""
        ray, settings = self.ray, self.settings
        address, named_by = settings.cluster()
        env = dict(settings.runtime_env) if settings.runtime_env else None
        self.started = not ray.is_initialized()
        n, cpus = settings.workers, settings.cpus_per_worker
        if not self.started:
            where = "the Ray this process has joined"
        elif address is None:
            need = math.ceil(n * cpus) if cpus is not None else n
            ray.init(address="local", num_cpus=max(need, os.cpu_count() or 1), include_dashboard=False,
                     log_to_driver=True, logging_level=logging.WARNING,
                     **({"runtime_env": env} if env else {}))
            where = "a Ray started on this machine for this run (no --address, RAY_ADDRESS unset)"
        else:
            _connect(ray, address, self.runner.out, named_by, env)
            where = f"the Ray cluster at {address} (named by {named_by})"
        nodes = [node for node in ray.nodes() if node["Alive"]]
        self.echo(f"ray: joined {where}: {len(nodes)} node(s), {_amount(ray.cluster_resources())}")
        return self.started and address is None

    def _ask(self, here: bool) -> tuple[float, float]:
        """CPUs and GPUs each worker asks for, said in the log with where defaults came from."""
        settings, ray = self.settings, self.ray
        n = settings.workers
        cpus = settings.cpus_per_worker
        why = []
        if cpus is None:
            cpus = float(threads(None, n)) if here else 1.0
            why.append("an equal share of this machine's CPUs" if here else "1 CPU on a cluster")
        gpus = settings.gpus_per_worker
        if gpus is None:
            device, total = self.runner.device_name, ray.cluster_resources().get("GPU", 0.0)
            gpus = 1.0 if device.startswith("cuda") or (device == "auto" and total > 0) else 0.0
            why.append(f"{gpus:g} GPU for device {device!r}" + (" on a cluster with GPUs" if gpus and
                                                                 device == "auto" else ""))
        nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
        fit = fitting(nodes, cpus, gpus)
        say = (f"ray: {n} workers, each asking {cpus:g} CPU(s) and {gpus:g} GPU(s)"
               + (f" (default: {'; '.join(why)}; set --cpus-per-worker / --gpus-per-worker)" if why else ""))
        if fit < n:
            if here and fit == 0:
                raise ConfigError(f"executor 'ray': a worker asks {cpus:g} CPU(s) and {gpus:g} GPU(s), more "
                                  f"than this machine has ({_amount(ray.cluster_resources())}); lower "
                                  f"--cpus-per-worker / --gpus-per-worker ({_kept(self.runner.out)})")
            say += (f"; {fit} fit on the cluster's nodes as they are now, the others start when resources "
                    "are freed or added")
        self.echo(say)
        return cpus, gpus

    def _waiting(self, cpus: float, gpus: float) -> Callable[[], str]:
        def text() -> str:
            ray = self.ray
            return (f"each asks {cpus:g} CPU(s) and {gpus:g} GPU(s); the cluster has "
                    f"{_amount(ray.cluster_resources())}, free now {_amount(ray.available_resources())}")

        return text

    def _start(self) -> Workers:
        if self.workers is not None:
            return self.workers
        ray, settings = self.ray, self.settings
        cpus, gpus = self._ask(self._join())
        options: dict[str, Any] = {"num_cpus": cpus, "num_gpus": gpus, "max_concurrency": 2}
        if settings.runtime_env and not self.started:  # joined earlier: the env goes with each actor
            options["runtime_env"] = dict(settings.runtime_env)
        # Two threads per actor: one runs a job while the other answers drain().
        remote = ray.remote(StudyWorker).options(**options)
        level = logging.getLogger("medtransfer").getEffectiveLevel()
        out = str(Path(self.runner.out).resolve())
        self.workers = Workers(ray, lambda: remote.remote(self.factory, out, threads(cpus, 1), level),
                               settings.workers, self.echo, retries=settings.max_retries,
                               out=Path(self.runner.out), waiting=self._waiting(cpus, gpus))
        return self.workers

    def run(self, jobs: Sequence[Any], on_done: OnDone) -> dict[Any, Any]:
        """``{job: result}`` in the order of ``jobs``."""
        if not jobs:
            return {}
        return self._start().run(list(jobs), on_done)

    def close(self) -> None:
        if self.workers is not None:
            self.workers.close()
            self.workers = None
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
