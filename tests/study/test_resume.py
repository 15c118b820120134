"""Kill a study with SIGKILL at several points, rerun it, and get the uninterrupted results."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from medtransfer.api import run_study
from medtransfer.study import study_from_dict
from medtransfer.study.units import Context
from medtransfer.train import Callback, TrainState, load_checkpoint


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"study finished (rc={proc.returncode}) before the kill point")
        if time.monotonic() > deadline:
            raise AssertionError("kill point not reached in time")
        time.sleep(0.02)


def _results(out: Path) -> list[str]:
    return (out / "results.csv").read_text().splitlines()


def _done_units(out: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in out.glob("units/*/result.json")}


KILL_POINTS = {
    # while the first unit trains (its folder exists, nothing finished)
    "first_unit_running": lambda out: any(out.glob("units/pretrain-*/history.csv")),
    # right after the first unit finished
    "after_first_unit": lambda out: len(list(out.glob("units/*/result.json"))) >= 1,
    # in the middle: the second variant's pretraining has started
    "second_variant": lambda out: any(out.glob("units/pretrain-bn-*/unit.json")),
}


def _killable(root: Path, tiny_study_config) -> dict:
    cfg = tiny_study_config(root)
    cfg["pretrain"]["train"]["epochs"] = 4  # long enough to be caught mid-unit
    return cfg


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_study_config) -> list[str]:
    """results.csv of the study run once without interruption (the same images in every test:
    the tiny study's folders are drawn from fixed seeds)."""
    root = tmp_path_factory.mktemp("reference")
    out = run_study(study_from_dict(_killable(root, tiny_study_config)), root / "run", echo=lambda m: None,
                    report=False)
    return _results(out)


@pytest.mark.slow
@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_sigkill_then_rerun_equals_uninterrupted(tmp_path, point, tiny_study_config, reference):
    cfg = _killable(tmp_path, tiny_study_config)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "medtransfer.cli", "run", str(path), "--out", str(out), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        _wait_for(lambda: KILL_POINTS[point](out), proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    finished = _done_units(out)

    logs: list[str] = []
    run_study(study_from_dict(cfg), out, echo=logs.append, report=False)
    after = _done_units(out)
    for unit, mtime in finished.items():  # nothing finished before the kill was recomputed
        assert after[unit] == mtime, unit
    assert sum("done earlier, reused" in m for m in logs) == len(finished)
    assert len(after) == 4
    assert _results(out) == reference


def test_a_pretraining_stopped_after_epoch_3_resumes_there(tmp_path, tiny_study_config, monkeypatch):
    """Mid-unit resume through a study: the rerun continues the pretraining from its last.pt
    (epoch 3 of 6), says so in run.log, and ends with the uninterrupted run's results.csv."""
    cfg = tiny_study_config(tmp_path)
    cfg["variants"], cfg["audit"] = [{"name": "baseline"}], False
    cfg["pretrain"] = {"train": {**cfg["pretrain"]["train"], "epochs": 6}}
    ref = run_study(study_from_dict(cfg), tmp_path / "reference", echo=lambda m: None, report=False)

    class Stop(Callback):
        def on_epoch_start(self, state: TrainState) -> None:
            if state.epoch == 4 and state.max_epochs == 6:
                raise RuntimeError("injected")

    real = Context.callbacks
    monkeypatch.setattr(Context, "callbacks", lambda self, *args: [*real(self, *args), Stop()])
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="injected"):
        run_study(study_from_dict(cfg), out, echo=lambda m: None, report=False)
    (unit,) = out.glob("units/pretrain-*")
    assert load_checkpoint(unit / "last.pt")["epoch"] == 3 and not (unit / "result.json").exists()
    monkeypatch.undo()

    run_study(study_from_dict(cfg), out, echo=lambda m: None, report=False)
    assert "resumed from epoch 3 of 6" in (out / "run.log").read_text()
    assert _results(out) == _results(ref)
    assert not (unit / "last.pt").exists()  # a finished unit keeps best.pt only
