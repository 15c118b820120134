"""Executor settings: one object from the command line to the executors; which Ray cluster
(``--address``, else ``RAY_ADDRESS``); what each worker asks for; checks that fail at once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medtransfer.cli import main
from medtransfer.errors import ConfigError
from medtransfer.study import ExecutorSettings
from medtransfer.study.executors import InProcess, open_session, preflight


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cpus_per_worker": 0}, r"'cpus_per_worker' \(--cpus-per-worker\): got 0; allowed: a number > 0"),
    ({"kind": "ray", "gpus_per_worker": -1},
     r"'gpus_per_worker' \(--gpus-per-worker\): got -1; allowed: a number >= 0"),
    ({"kind": "ray", "retries": -1}, r"'retries' \(--retries\): got -1; allowed: an integer >= 0"),
    ({"kind": "ray", "retries": True}, r"'retries' \(--retries\): got True"),
    ({"kind": "ray", "runtime_env": ["pip"]},
     r"'runtime_env' \(--runtime-env\): got \['pip'\]; allowed: a mapping"),
    ({"gpus_per_worker": 1},
     r"'gpus_per_worker' \(--gpus-per-worker\): got 1, but it is only used with executor 'ray'"),
    ({"retries": 2}, r"'retries' \(--retries\): got 2, but it is only used with executor 'ray'"),
    ({"runtime_env": {"pip": ["x"]}}, r"'runtime_env' \(--runtime-env\): .* only used with executor 'ray'"),
])
def test_bad_settings_fail_naming_the_setting_and_flag(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ExecutorSettings(**kwargs)


def test_the_cluster_is_the_address_else_RAY_ADDRESS(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ExecutorSettings("ray").cluster() == (None, "")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert ExecutorSettings("ray").cluster() == ("10.0.0.5:6379", "RAY_ADDRESS")
    assert ExecutorSettings("ray", address="h:1").cluster() == ("h:1", "--address")
    assert ExecutorSettings("local").cluster() == (None, "")  # the local executor ignores Ray's variable
    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert ExecutorSettings("ray").cluster() == (None, "")
    assert ExecutorSettings("ray").max_retries == 3 and ExecutorSettings("ray", retries=0).max_retries == 0


def test_a_dead_RAY_ADDRESS_fails_at_once_naming_it(monkeypatch, tmp_path, free_port):
    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=rf"RAY_ADDRESS: no Ray cluster reachable at {address}"):
        preflight(ExecutorSettings("ray", 2), tmp_path)
    assert time.monotonic() - t0 < 30
    preflight(ExecutorSettings("local", 2), tmp_path)  # not used by the local executor


def test_a_dashboard_address_is_refused_with_what_to_give_instead(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    with pytest.raises(ConfigError, match=r"RAY_ADDRESS: got 'http://127.0.0.1:8265', a Ray dashboard "
                       r"\(job submission\) address; give the cluster's address HOST:PORT"):
        preflight(ExecutorSettings("ray"), tmp_path)


def test_workers_fitting_on_nodes():
    pytest.importorskip("ray")
    from medtransfer.study.executors.ray import fitting

    nodes = [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 1.0}, {"CPU": 0.0}]
    assert fitting(nodes, 1.0, 0.0) == 5
    assert fitting(nodes, 2.0, 0.0) == 2
    assert fitting(nodes, 1.0, 0.5) == 2  # two workers share the one GPU
    assert fitting(nodes, 0.25, 0.0) == 20


class _Threads:
    out = Path(".")
    device_name = "cpu"

    def run_job(self, job: int) -> int:
        return torch.get_num_threads()


def test_cpus_per_worker_are_the_local_workers_threads():
    before = torch.get_num_threads()
    with open_session(ExecutorSettings(cpus_per_worker=1), _Threads(), _Threads) as session:
        assert isinstance(session, InProcess)
        assert session.run([1], lambda job, result: None) == {1: 1}
    assert torch.get_num_threads() == before


def test_the_command_line_refuses_ray_flags_with_the_local_executor(tmp_path, capsys):
    assert main(["run", str(tmp_path / "study.yaml"), "--gpus-per-worker", "1"]) == 2
    err = capsys.readouterr().err
    assert "'gpus_per_worker' (--gpus-per-worker): got 1.0, but it is only used with executor 'ray'" in err


def test_python_dash_m_medtransfer_is_the_command():
    proc = subprocess.run([sys.executable, "-m", "medtransfer", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("medtransfer "), proc.stderr
