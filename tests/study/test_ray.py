"""Studies on a real Ray cluster: one head on loopback, started for this module (two nodes, a
submitted run and a killed worker: test_ray_cluster.py)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from medtransfer.api import run_study
from medtransfer.errors import ConfigError, ImageDecodeError
from medtransfer.study import ExecutorSettings, study_from_dict
from medtransfer.study.executors.ray import run_jobs_on_ray
from medtransfer.study.plan import make_plan
from medtransfer.study.runner import Runner

pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_address(ray_node, free_port, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``HOST:PORT`` of a 2-CPU Ray head of this module's own, stopped after."""
    port = free_port()
    log = tmp_path_factory.mktemp("ray-head") / "head.log"
    with ray_node(log, "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                  "--include-dashboard", "false"):
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def ray_run(ray_address, tiny_study_config, tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """The tiny study run through Ray: (data root, run folder, messages)."""
    root = tmp_path_factory.mktemp("study")
    logs: list[str] = []
    out = run_study(study_from_dict(tiny_study_config(root)), root / "ray",
                    executor=ExecutorSettings("ray", 2, ray_address), report=False, progress=False,
                    echo=logs.append)
    return root, out, logs


@pytest.mark.slow
def test_ray_results_equal_local_results(ray_run, ray_address, tiny_study_config, one_thread):
    # one_thread: like each Ray worker here (1 of 2 CPUs); other thread counts change the last digits.
    root, out, logs = ray_run
    assert any(m.startswith(f"ray: joined the Ray cluster at {ray_address} (named by --address): 1 node(s), "
                            "2 CPUs") for m in logs)
    assert any(m.startswith("ray: 2 workers, each asking 1 CPU(s) and 0 GPU(s) (default: 1 CPU on a cluster")
               for m in logs)
    assert any(m.startswith("[bn] pretraining on") for m in logs)  # workers' messages are relayed
    local = run_study(study_from_dict(tiny_study_config(root)), root / "local", report=False,
                      progress=False, echo=lambda m: None)
    assert (out / "results.csv").read_bytes() == (local / "results.csv").read_bytes()


@pytest.mark.slow
def test_a_search_runs_its_trials_on_ray_workers_as_a_local_search_does(ray_address, tiny_study_config,
                                                                       tmp_path, one_thread):
    """Two arms (variants) searched each on its own, two trials at once on two Ray workers: the
    same trials, scores and tuned study as in this process."""
    from medtransfer.search import run_search

    def raw() -> dict:
        cfg = tiny_study_config(tmp_path)
        cfg.update(audit=False, search={"space": {"transfer.train.optimizer.lr": [1.0e-3, 1.0e-2]}})
        return cfg

    logs: list[str] = []
    on_ray = run_search(raw(), tmp_path / "ray", executor=ExecutorSettings("ray", 2, ray_address),
                        report=False, progress=False, echo=logs.append)
    here = run_search(raw(), tmp_path / "here", report=False, progress=False, echo=lambda m: None)
    assert any("up to 2 trial(s) at once (ray)" in m for m in logs)
    assert any(m.startswith("[baseline-trial-001] pretraining on") for m in logs)  # on a worker
    assert (on_ray / "trials.csv").read_bytes() == (here / "trials.csv").read_bytes()
    assert (on_ray / "results.csv").read_bytes() == (here / "results.csv").read_bytes()


@pytest.mark.slow
def test_ray_rerun_reuses_every_unit(ray_run, ray_address, tiny_study_config):
    root, out, _ = ray_run
    results = sorted((out / "units").glob("*/result.json"))
    assert len(results) == 4
    before = {p: p.stat().st_mtime_ns for p in results}
    logs: list[str] = []
    run_study(study_from_dict(tiny_study_config(root)), out, executor=ExecutorSettings("ray", 2, ray_address),
              report=False, progress=False, echo=logs.append)
    assert sum("done earlier, reused" in m for m in logs) == 4
    assert before == {p: p.stat().st_mtime_ns for p in results}


@pytest.mark.slow
def test_job_error_comes_back_with_its_class_and_message(ray_address, tiny_study_config, tmp_path):
    runner = Runner(study_from_dict(tiny_study_config(tmp_path)), tmp_path / "run",
                    progress=False, echo=lambda m: None)
    runner.prepare()
    plan = make_plan(runner.cfg)
    # Written after prepare(): only the Ray worker, loading the data again, meets it.
    broken = tmp_path / "tgt" / "covid" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    with pytest.raises(ImageDecodeError, match=r"cannot read image .*broken\.png") as info:
        run_jobs_on_ray(runner, runner.factory(), plan.cells[:1], address=ray_address, workers=1,
                        on_done=lambda job, result: None)
    assert info.value.path == str(broken)
    assert any("raised in a Ray worker" in note for note in info.value.__notes__)


def test_unreachable_address_fails_fast_and_names_it(tiny_study_config, tmp_path, free_port):
    address = f"127.0.0.1:{free_port()}"
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            run_study(study_from_dict(tiny_study_config(tmp_path)), tmp_path / "run",
                      executor=ExecutorSettings("ray", 2, address), report=False, progress=False,
                      echo=lambda m: None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "connecting to a dead address hung"
    assert len(outcome) == 1 and isinstance(outcome[0], ConfigError)
    assert f"no Ray cluster reachable at {address}" in str(outcome[0])
    assert not (tmp_path / "run" / "units").exists()


def test_missing_ray_asks_for_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'medtransfer\[ray\]'"):
        run_jobs_on_ray(None, None, ["a"], address=None, workers=1,  # type: ignore[arg-type]
                        on_done=lambda job, result: None)
