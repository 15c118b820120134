"""A Ray cluster of two nodes on this machine, started as a user starts one (``ray start --head``,
then ``ray start --address`` for the second node; 1 CPU each), a study submitted to it as a
``ray job submit`` entrypoint runs (``RAY_ADDRESS`` set, ``medtransfer run`` in a process of its
own), and a worker killed in the middle of a job. Only this module's cluster is stopped after."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import medtransfer
from medtransfer.api import run_study
from medtransfer.study import study_from_dict
from medtransfer.train import load_checkpoint
from medtransfer.train.checkpoint import CheckpointError

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

EPOCHS = 20  # pretraining epochs: time enough to kill a worker half-way through one


@pytest.fixture(scope="module")
def cluster(ray_node, free_port, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a head and a second node, 1 CPU each: two workers of 1 CPU can only run
    one per node."""
    port = free_port()
    logs = tmp_path_factory.mktemp("ray-cluster")
    address = f"127.0.0.1:{port}"
    with ray_node(logs / "head.log", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                  "--num-cpus", "1", "--include-dashboard", "false"), \
         ray_node(logs / "node.log", "--address", address, "--node-ip-address", "127.0.0.1",
                  "--num-cpus", "1"):
        yield address


@pytest.fixture(scope="module")
def study(tiny_study_config, tmp_path_factory) -> tuple[Path, dict[str, Any], bytes]:
    """(data root, the tiny study with longer pretrainings, its results.csv run here in one
    process with one thread, as each 1-CPU Ray worker runs: thread counts change last digits)."""
    root = tmp_path_factory.mktemp("study")
    cfg = tiny_study_config(root)
    cfg["pretrain"] = {**cfg["pretrain"], "train": {**cfg["pretrain"]["train"], "epochs": EPOCHS}}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = run_study(study_from_dict(cfg), root / "local", report=False, progress=False,
                        echo=lambda m: None)
    finally:
        torch.set_num_threads(before)
    return root, cfg, (out / "results.csv").read_bytes()


def _submit(cfg: dict[str, Any], out: Path, address: str, *flags: str, cwd: Path | None = None,
            ) -> subprocess.Popen[str]:
    """``medtransfer run`` as the entrypoint of a submitted Ray job: RAY_ADDRESS names the cluster."""
    config = out.parent / f"{out.name}.yaml"
    config.write_text(yaml.safe_dump(cfg))
    src = str(Path(medtransfer.__file__).resolve().parents[1])
    env = {**os.environ, "RAY_ADDRESS": address, "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    cmd = [sys.executable, "-m", "medtransfer", "run", str(config), "--out", str(out), "--executor", "ray",
           "--workers", "2", "--no-report", "--no-progress", *flags]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=cwd or out.parent)


def _finish(proc: subprocess.Popen[str], out: Path) -> str:
    """The run's log, once it ended well."""
    try:
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-4000:]
    return (out / "run.log").read_text()


def test_a_submitted_run_joins_the_cluster_at_RAY_ADDRESS(cluster, study, tmp_path):
    _, cfg, local = study
    # An --import module only the runtime_env's working_dir brings to the workers.
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "mt_cluster_probe.py").write_text(
        "import logging, os\n"
        "logging.getLogger('medtransfer.probe').info('probe imported in pid %d', os.getpid())\n")
    (tmp_path / "env.yaml").write_text(yaml.safe_dump({"working_dir": str(shipped)}))
    out = tmp_path / "ray"
    log = _finish(_submit(cfg, out, cluster, "--import", "mt_cluster_probe", "--runtime-env",
                          str(tmp_path / "env.yaml"), cwd=shipped), out)
    assert f"ray: joined the Ray cluster at {cluster} (named by RAY_ADDRESS): 2 node(s), 2 CPUs, 0 GPUs" \
        in log
    assert "ray: 2 workers, each asking 1 CPU(s) and 0 GPU(s)" in log
    nodes = set(re.findall(r"ray: worker \d+ started on node (\w+) \([\d.]+, pid \d+\)", log))
    assert len(nodes) == 2, log  # one worker on each node
    # imported in both workers (the driver imported it before run.log was opened)
    assert len(re.findall(r"probe imported in pid \d+", log)) == 2
    assert (out / "results.csv").read_bytes() == local


def _running_pretraining(out: Path, proc: subprocess.Popen[str]) -> tuple[str, int]:
    """(unit, pid of the Ray worker computing it) just after a pretraining's last.pt took a
    finished epoch (the one written at its start holds none): the next epoch has begun."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        for last in out.glob("units/pretrain-*/last.pt"):
            unit = last.parent
            holder = out / ".locks" / f"pretrain-{unit.name.rsplit('-', 1)[1]}.lock"
            found = re.search(r"pid=(\d+)", holder.read_text()) if holder.is_file() else None
            try:
                epoch = load_checkpoint(last)["epoch"]
            except (OSError, CheckpointError):  # replaced while read
                continue
            if found and 1 <= epoch < EPOCHS - 2 and not (unit / "result.json").exists():
                return unit.name, int(found.group(1))
        time.sleep(0.02)
    output = proc.communicate()[0][-3000:] if proc.poll() is not None else ""
    pytest.fail(f"no pretraining was seen running: {output}")


def test_a_worker_killed_mid_job_is_replaced_and_its_job_retried(cluster, study, tmp_path):
    _, cfg, local = study
    out = tmp_path / "ray"
    proc = _submit(cfg, out, cluster)
    unit, pid = _running_pretraining(out, proc)
    assert pid != proc.pid
    assert "ray::" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")  # a Ray worker
    os.kill(pid, signal.SIGKILL)
    log = _finish(proc, out)
    label = unit.split("-")[1]
    lost = re.search(rf"ray: worker (\d+) on node \w+ \([\d.]+, pid {pid}\) was lost while running "
                     rf"pretrain '{label}' \(ActorDiedError: .*\); worker \d+ replaces it", log)
    assert lost, log
    assert f"ray: pretrain '{label}' is run again on a live worker (retry 1 of 3" in log
    # its unit resumes from last.pt (unless the kill fell between the epoch's best.pt and last.pt)
    assert re.search(rf"{unit}: resumed from epoch \d+ of {EPOCHS} \(last\.pt\)", log) \
        or re.search(rf"{unit}/last\.pt: not resumed from, as best\.pt holds epoch", log), log
    assert (out / "results.csv").read_bytes() == local
