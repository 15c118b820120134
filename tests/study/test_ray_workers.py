"""The Ray job loop on a stand-in for Ray (fast, deterministic): lost workers are replaced and
their jobs run again, a bounded number of times; a job's own error comes back once; a worker
still waiting for resources gets no job. Real Ray, real kills: test_ray_cluster.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from medtransfer.study.executors.ray_workers import WorkerLostError, Workers

ray_exceptions = pytest.importorskip("ray.exceptions")


@dataclass(frozen=True)
class Job:
    label: str
    kind: str = "cell"


class Ref:
    """An object ref: its value is computed when fetched; ``ready`` is False for a call that
    never answers (an actor waiting for resources)."""

    def __init__(self, compute: Callable[[], Any], ready: bool = True) -> None:
        self.compute, self.ready = compute, ready


class Method:
    def __init__(self, fn: Callable[..., Any], ready: bool = True) -> None:
        self.fn, self.ready = fn, ready

    def remote(self, *args: Any) -> Ref:
        return Ref(lambda: self.fn(*args), self.ready)


@dataclass(eq=False)
class Actor:
    """A worker: ``lose`` says which jobs kill it (the call fails as Ray's would),
    ``placed`` whether it ever starts."""

    number: int
    ray: FakeRay
    placed: bool = True
    ran: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.where = Method(lambda: (f"node{self.number:04d}", "10.0.0.1", 100 + self.number), self.placed)
        self.drain = Method(lambda: [])
        self.run_job = Method(self._run)

    def _run(self, job: Job) -> tuple[bool, Any]:
        self.ran.append(job.label)
        self.ray.calls.append(job.label)
        if job.label in self.ray.lose_on(self):
            raise ray_exceptions.ActorDiedError()
        if job.label == "boom":
            return False, (ValueError, ("bad pixel in img.png",), {}, "Traceback ...")
        return True, f"result of {job.label}"


class FakeRay:
    exceptions = ray_exceptions

    def __init__(self, lose: Callable[[Actor, FakeRay], set[str]] = lambda a, r: set(),
                 unplaced: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.lose, self.unplaced = lose, unplaced
        self.actors: list[Actor] = []
        self.killed: list[int] = []
        self.calls: list[str] = []

    def lose_on(self, actor: Actor) -> set[str]:
        return self.lose(actor, self)

    def make(self) -> Actor:
        number = len(self.actors) + 1
        actor = Actor(number, self, placed=number not in self.unplaced)
        self.actors.append(actor)
        return actor

    def wait(self, refs: list[Ref], num_returns: int, timeout: float) -> tuple[list[Ref], list[Ref]]:
        ready = [r for r in refs if r.ready][:num_returns]
        return ready, [r for r in refs if r not in ready]

    def get(self, ref: Ref) -> Any:
        return ref.compute()

    def kill(self, actor: Actor) -> None:
        self.killed.append(actor.number)


def _workers(ray: FakeRay, n: int, retries: int, lines: list[str]) -> Workers:
    return Workers(ray, ray.make, n, lines.append, retries=retries, out=Path("/run"))


def test_a_job_lost_with_its_worker_runs_again_on_a_new_worker():
    # the worker that first runs job "b" dies; its replacement (worker 3) takes its place
    ray = FakeRay(lose=lambda actor, r: {"b"} if r.calls.count("b") == 1 else set())
    lines: list[str] = []
    workers = _workers(ray, 2, 3, lines)
    jobs = [Job("a"), Job("b"), Job("c"), Job("d")]
    done: list[str] = []
    results = workers.run(jobs, lambda job, result: done.append(job.label))
    assert list(results) == jobs and results[Job("b")] == "result of b"
    assert sorted(done) == ["a", "b", "c", "d"]
    assert ray.calls.count("b") == 2 and len(ray.killed) == 1
    lost = ray.actors[ray.killed[0] - 1]
    assert lost.ran[-1] == "b"
    assert len(workers.slots) == 2 and 3 in {s.number for s in workers.slots}
    assert (f"ray: worker {lost.number} on node node000{lost.number} (10.0.0.1, pid 10{lost.number}) was "
            "lost while running cell 'b' (ActorDiedError: The actor died unexpectedly before finishing "
            "this task.); worker 3 replaces it") in lines
    assert any(line.startswith("ray: cell 'b' is run again on a live worker (retry 1 of 3") for line in lines)
    # the replacement serves the next batch
    workers.run([Job("e"), Job("f"), Job("g")], lambda job, result: None)
    started = f"ray: worker 3 started on node node0003 (10.0.0.1, pid 103), replacing worker {lost.number}"
    assert started in lines
    assert ray.actors[2].ran and ray.killed == [lost.number]


@pytest.mark.parametrize("retries", [0, 2])
def test_retries_are_bounded(retries):
    ray = FakeRay(lose=lambda actor, r: {"b"})  # job "b" kills every worker that runs it
    lines: list[str] = []
    with pytest.raises(WorkerLostError, match=rf"cell 'b' was lost with its Ray worker {retries + 1} times "
                       rf"\(last: ActorDiedError: .*\); not run again \(retries: {retries}\)"):
        _workers(ray, 2, retries, lines).run([Job("a"), Job("b")], lambda job, result: None)
    assert ray.calls.count("b") == retries + 1
    assert sum("was lost while running cell 'b'" in line for line in lines) == retries + 1


def test_a_jobs_own_error_comes_back_once_and_is_not_retried():
    ray = FakeRay()
    with pytest.raises(ValueError, match="bad pixel in img.png") as info:
        _workers(ray, 2, 3, []).run([Job("boom"), Job("a")], lambda job, result: None)
    assert ray.calls.count("boom") == 1
    assert any("raised in a Ray worker" in note for note in info.value.__notes__)


def test_a_worker_waiting_for_resources_gets_no_job():
    ray = FakeRay(unplaced={2})  # worker 2 never starts (no room on the cluster)
    lines: list[str] = []
    results = _workers(ray, 2, 3, lines).run([Job("a"), Job("b"), Job("c")], lambda job, result: None)
    assert len(results) == 3
    assert ray.actors[0].ran == ["a", "b", "c"] and ray.actors[1].ran == []
    assert [line for line in lines if "started" in line] == [
        "ray: worker 1 started on node node0001 (10.0.0.1, pid 101)"]


def test_workers_that_never_start_fail_with_the_reason():
    def broken() -> Any:
        raise ray_exceptions.RuntimeEnvSetupError("pip install of 'nosuchpkg' failed")

    ray = FakeRay()
    make = ray.make

    def make_broken() -> Actor:
        actor = make()
        actor.where = Method(broken)
        return actor

    workers = Workers(ray, make_broken, 2, lambda line: None, retries=1, out=Path("/run"))
    with pytest.raises(WorkerLostError, match=r"Ray workers keep failing to start .*nosuchpkg"):
        workers.run([Job("a")], lambda job, result: None)
