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


def test_launch_env(monkeypatch: pytest.MonkeyPatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
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
