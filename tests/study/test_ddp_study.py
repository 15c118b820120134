"""One study on two data-parallel processes, as ``torchrun --nproc-per-node 2 -m medtransfer run``
starts it (gloo on the CPU): every unit is trained by both, each taking its share of every batch,
and ends with the weights one process trains with the same global batch; rank 0 alone writes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import medtransfer
from medtransfer.api import run_study
from medtransfer.errors import ConfigError
from medtransfer.study import ExecutorSettings, study_from_dict
from medtransfer.study.lockstep import data_parallel
from medtransfer.train import load_checkpoint

LAUNCH_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
               "SLURM_PROCID", "SLURM_STEP_ID")


def _matrix(base: dict[str, Any]) -> dict[str, Any]:
    """Every kind of unit a rank follows: a pretraining handing on its last epoch, a frozen base
    (cached activations), a two-stage fine-tuning, features with an SVM (no training) and with an
    MLP. SGD and no dropout: DDP equals one process up to float rounding (Adam magnifies the
    rounding of near-zero gradients; dropout masks are drawn per process)."""
    sgd = {**base["transfer"]["train"], "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9}}
    return {
        "name": "ddp", "seed": 3, "device": "cpu", "cache_dir": base["cache_dir"], "audit": False,
        "preprocess": base["preprocess"], "model": base["model"],
        "pretrain": {"train": {**sgd, "epochs": 3}, "transfer_from": "last"},
        "sources": {"src": base["source"]}, "targets": {"tgt": base["target"]},
        "strategies": {
            "freeze": {"kind": "freeze", "freeze": {"trainable_layers": 3}, "train": sgd},
            "finetune": {"kind": "finetune", "head_fit": "train", "head": sgd,
                         "finetune": {**sgd, "optimizer": {"name": "sgd", "lr": 0.002, "momentum": 0.9}}},
            "svm": {"kind": "features", "classifier": "svm", "calibration_folds": 3},
            "mlp": {"kind": "features", "classifier": "mlp",
                    "mlp": {"hidden": 8, "dropout": 0.0, "train": sgd}},
        },
    }


def _torchrun(config: Path, out: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    src = str(Path(medtransfer.__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_KEYS}
    env.update(OMP_NUM_THREADS="1", TMPDIR=str(tmp),
               PYTHONPATH=os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p))
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "medtransfer", "run", str(config), "--out", str(out), "--no-report", "--no-progress"],
        capture_output=True, text=True, timeout=600, env=env, cwd=config.parent)


def _states(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every checkpoint's weights under ``folder``: ``unit/file`` → state dict."""
    states = {}
    for path in sorted(folder.rglob("*.pt")):
        data = torch.load(path, map_location="cpu", weights_only=False) if path.name == "backbone.pt" \
            else load_checkpoint(path)["model_state"]
        states[str(path.relative_to(folder))] = data
    return states


def _values(path: Path) -> dict[tuple[str, ...], float]:
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    return {tuple(r[:-1]): float(r[-1]) for r in rows[1:]}


@pytest.mark.slow
def test_two_processes_train_each_unit_as_one_process_does(tmp_path, tiny_study_config, one_thread):
    cfg = _matrix(tiny_study_config(tmp_path))
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(cfg))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = _torchrun(config, tmp_path / "ddp", scratch)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("table:") == 1  # rank 1 says nothing either
    one = run_study(study_from_dict(cfg), tmp_path / "one", report=False, progress=False, echo=lambda m: None)
    ddp = tmp_path / "ddp"

    def files(run: Path) -> list[str]:
        return sorted(str(p.relative_to(run)) for p in run.rglob("*") if ".locks" not in p.parts)

    assert files(ddp) == files(one)  # the same records and units: rank 1 wrote nowhere else
    assert list(scratch.glob("medtransfer-rank*")) == []  # and its scratch folders are gone
    got, want = _states(ddp / "units"), _states(one / "units")
    assert got.keys() == want.keys() and len(got) >= 6
    for name, state in want.items():
        for key, value in state.items():
            torch.testing.assert_close(got[name][key], value, atol=1e-5, rtol=0, msg=f"{name}: {key}")
    assert _values(ddp / "results.csv") == pytest.approx(_values(one / "results.csv"), abs=1e-5)
    log = (ddp / "run.log").read_text()
    assert log.count("[baseline.src] pretraining on 64 source images") == 1

    # Rerun: rank 0 finds every unit done and tells rank 1; nothing is trained again.
    before = {p: p.stat().st_mtime_ns for p in ddp.glob("units/*/result.json")}
    again = _torchrun(config, ddp, scratch)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert (ddp / "run.log").read_text().count("done earlier, reused") == 5
    assert before == {p: p.stat().st_mtime_ns for p in ddp.glob("units/*/result.json")}


def test_a_data_parallel_run_refuses_what_cannot_run_in_step(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match=r"--executor ray --workers 2: a run as 2 data-parallel processes "
                       r"\(torchrun\) trains each unit on all of them"), \
            data_parallel("cpu", ExecutorSettings("ray", 2)):
        pass
    with pytest.raises(ConfigError, match=r"'device': got 'cuda:1'; in a run as 2 data-parallel processes "
                       r"\(torchrun\) each process uses the CPU or the GPU of its local rank"), \
            data_parallel("cuda:1"):
        pass
    assert not torch.distributed.is_initialized()


def test_a_search_is_not_run_as_data_parallel_copies(monkeypatch, tmp_path, capsys):
    from medtransfer.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump({"name": "s", "search": {}}))
    assert main(["run", str(config)]) == 2
    assert "a search runs its trials one process each; it cannot run as 2 data-parallel processes" \
        in capsys.readouterr().err
