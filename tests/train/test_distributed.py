"""DDP under torchrun: 2 CPU processes (gloo) train what one process trains, up to float rounding."""

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from medtransfer.errors import ConfigError
from medtransfer.train import load_checkpoint
from medtransfer.train.distributed import (
    LaunchEnv,
    Replicas,
    first_host,
    init_distributed,
    is_main_process,
    launch_env,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "ddp_train.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ddp_train_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 2, 5, 7, 8])
def test_rows_split_batches_contiguously(world: int, n: int):
    parts = [Replicas(rank, world).rows(n) for rank in range(world)]
    real = [rows for rows, is_real in parts if is_real]
    assert [i for rows in real for i in range(n)[rows]] == list(range(n))  # in rank order
    sizes = [rows.stop - rows.start for rows in real]
    assert max(sizes) - min(sizes) <= 1 and len(real) == min(world, n)
    assert all(rows == slice(0, 1) for rows, is_real in parts if not is_real)


def test_one_process_is_plain_arithmetic():
    reps = Replicas.current()
    assert (reps.rank, reps.world_size, reps.active, reps.is_main) == (0, 1, False, True)
    assert reps.seed(7) == 7 and Replicas(1, 2).seed(7) != 7
    losses, weights = torch.tensor([0.5, 1.5, 2.0]), torch.tensor([1.0, 2.0, 2.0])
    loss, loss_sum, weight_sum, mean = reps.batch_loss(losses, weights, torch.ones(3, 2), True, 0.0)
    assert torch.equal(loss, (losses * weights).sum() / weights.sum())
    assert (loss_sum, weight_sum, mean) == (7.5, 5.0, loss.item())
    assert reps.batch_loss(losses, weights, torch.full((3, 2), torch.nan), True, 0.0) is None
    parts = [np.ones((2, 2)), np.zeros((1, 2))]
    assert reps.gather_batches(parts).shape == (3, 2)
    assert reps.gather_eval(3.0, parts, 3)[0] == 1.0


LAUNCH_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID",
               "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_STEP_ID", "SLURM_STEP_NUM_TASKS",
               "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_JOB_ID")


def _no_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in LAUNCH_KEYS:
        monkeypatch.delenv(key, raising=False)


def test_launch_env(monkeypatch: pytest.MonkeyPatch):
    _no_launcher(monkeypatch)
    assert launch_env() is None
    assert init_distributed("cpu") == torch.device("cpu") and is_main_process()
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launch_env() == LaunchEnv(rank=1, world_size=2, local_rank=1)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match=r"RANK: got '2'; allowed: an integer >= 0 and < WORLD_SIZE \(2\)"):
        launch_env()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE: got 'two'; allowed: an integer >= 1"):
        launch_env()
    with pytest.raises(ConfigError, match="'device': got 'gpu'"):
        init_distributed("gpu")


def test_slurm_tasks_are_ranks_where_torchrun_set_none(monkeypatch: pytest.MonkeyPatch):
    _no_launcher(monkeypatch)
    # The batch script itself: SLURM_NTASKS counts tasks srun has not started; one process.
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_JOB_ID", "123456")
    assert launch_env() is None
    monkeypatch.setenv("SLURM_STEP_ID", "4294967294")  # the batch step, where Slurm sets it
    assert launch_env() is None
    # A task of `srun --ntasks 4` on gpu07, gpu08, ...
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_STEP_NODELIST", "gpu[07-09,12],cpu1")
    assert launch_env() == LaunchEnv(3, 4, 1, "slurm", ("gpu07", 15000 + 3456))
    monkeypatch.setenv("MASTER_ADDR", "10.1.2.3")
    monkeypatch.setenv("MASTER_PORT", "29400")
    assert launch_env() == LaunchEnv(3, 4, 1, "slurm", ("10.1.2.3", 29400))
    monkeypatch.setenv("SLURM_PROCID", "4")
    with pytest.raises(ConfigError, match=r"SLURM_PROCID: got '4'; allowed: an integer >= 0 and < "
                       r"SLURM_STEP_NUM_TASKS \(4\) \(srun sets it\)"):
        launch_env()
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun inside an srun task: torchrun's ranks
    monkeypatch.setenv("RANK", "1")
    assert launch_env() == LaunchEnv(1, 2, 0)


@pytest.mark.parametrize(("nodes", "first"), [
    ("gpu[07-09,12],cpu1", "gpu07"), ("node1,node2", "node1"), ("n[001-004]-ib", "n001-ib"),
    ("single", "single"), ("", ""),
])
def test_first_host_of_a_slurm_host_list(nodes: str, first: str):
    assert first_host(nodes) == first


def _history(path: Path) -> list[dict[str, float]]:
    with path.open() as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


@pytest.mark.slow
@pytest.mark.parametrize("augment", [False, True])
def test_torchrun_two_processes_match_one(tmp_path: Path, one_thread, augment: bool):
    # 50 images in batches of 7: shares of 4 and 3 images, and a last batch of one image, for
    # which rank 1 runs a zero-weight stand-in; balanced class weights weight the shares unevenly.
    flags = ["--epochs", "3", "--batch-size", "7", *(["--augment"] if augment else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(EXAMPLE), "--out", str(tmp_path / "ddp-{rank}"), *flags],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout  # only rank 0 prints
    ddp = lines[0]
    assert ddp["world_size"] == 2 and ddp["weight_spread_across_ranks"] == 0.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp-0"]  # rank 1 wrote nothing
    assert sorted(p.name for p in (tmp_path / "ddp-0").iterdir()) == ["best.pt", "history.csv", "last.pt"]

    single = _example().main(["--out", str(tmp_path / "single"), *flags])
    assert single["world_size"] == 1
    assert (ddp["best_epoch"], ddp["stop_reason"]) == (single["best_epoch"], single["stop_reason"])
    hist_ddp, hist_one = (_history(tmp_path / d / "history.csv") for d in ("ddp-0", "single"))
    assert len(hist_ddp) == len(hist_one) == 3
    for row_ddp, row_one in zip(hist_ddp, hist_one, strict=True):
        assert row_ddp == pytest.approx(row_one, abs=1e-5)
    for name in ("best.pt", "last.pt"):
        a, b = (load_checkpoint(tmp_path / d / name) for d in ("ddp-0", "single"))
        assert a["epoch"] == b["epoch"] and a["metrics"] == pytest.approx(b["metrics"], abs=1e-5)
        _close(a["model_state"], b["model_state"], atol=1e-5)
        if name == "last.pt":
            for i, state in b["optimizer_state"]["state"].items():
                _close(a["optimizer_state"]["state"][i], state, atol=1e-5)


@pytest.mark.slow
def test_two_srun_tasks_train_as_one_ddp_run(tmp_path: Path, one_thread, free_port):
    # What `srun --ntasks 2 python examples/ddp_train.py` starts, without Slurm: two processes that
    # know their ranks from SLURM_* variables alone (no torchrun, no WORLD_SIZE).
    flags = ["--epochs", "3", "--batch-size", "7"]
    base = {k: v for k, v in os.environ.items() if k not in LAUNCH_KEYS}
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = {**base, "OMP_NUM_THREADS": "1", "SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0",
               "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
               "SLURM_STEP_NODELIST": "localhost", "MASTER_PORT": port}
        procs.append(subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--out", str(tmp_path / "ddp-{rank}"), *flags],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path))
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    lines = [json.loads(line) for line in outputs[0].splitlines() if line.startswith("{")]
    assert len(lines) == 1 and not any(line.startswith("{") for line in outputs[1].splitlines())
    assert lines[0]["world_size"] == 2 and lines[0]["weight_spread_across_ranks"] == 0.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp-0"]
    single = _example().main(["--out", str(tmp_path / "single"), *flags])
    for row_ddp, row_one in zip(lines[0]["history"], single["history"], strict=True):
        assert row_ddp == pytest.approx(row_one, abs=1e-5)
