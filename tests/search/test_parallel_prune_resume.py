"""Trials in parallel on the study's executor, pruning, and a search killed with SIGKILL that
resumes with its finished trials and its sampler's history."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import yaml

from medtransfer.search import JOURNAL, run_search
from medtransfer.study import ExecutorSettings


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _grid(tmp_path: Path, matrix_search) -> dict:
    raw = matrix_search(tmp_path)
    raw["search"]["space"]["strategies.head.train.batch_size"] = [8, 16]
    return raw


def _values(rows: list[dict[str, str]]) -> dict[tuple[str, str, str], str]:
    return {(r["arm"], r["strategies.head.train.optimizer.lr"], r["strategies.head.train.batch_size"]):
            r["val_auc"] for r in rows}


def test_two_workers_run_the_same_grid_and_find_the_same_best(tmp_path, matrix_search, one_thread):
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    run_search(_grid(tmp_path, matrix_search), serial, echo=lambda m: None, progress=False, report=False)
    logs: list[str] = []
    run_search(_grid(tmp_path, matrix_search), parallel, echo=logs.append, progress=False, report=False,
               executor=ExecutorSettings(workers=2))
    assert any("up to 2 trial(s) at once (local)" in m for m in logs)
    one, two = _csv(serial / "trials.csv"), _csv(parallel / "trials.csv")
    assert len(one) == 8 and _values(one) == _values(two)  # each grid point once, the same score
    assert (serial / "best.yaml").read_text() == (parallel / "best.yaml").read_text()
    assert (serial / "results.csv").read_bytes() == (parallel / "results.csv").read_bytes()


def _pruned_search(tmp_path: Path, matrix_search, pruner: str) -> dict:
    """A case built to be clear: learning rate 1e-7 does not move the head (its validation AUC
    stays where it starts) while 0.01 separates the classes within two epochs; the median pruner
    starts after two finished trials, one of each."""
    raw = matrix_search(tmp_path)
    raw["sources"].pop("b")
    raw["strategies"]["head"]["train"]["epochs"] = 6
    raw["search"] = {"space": {"strategies.head.train.optimizer.lr": [0.01, 1.0e-7],
                               "strategies.head.train.batch_size": [8, 16, 24]},
                     "objective": {"metric": "auc"},
                     "pruner": {"name": pruner, "startup_trials": 2, "warmup_epochs": 1}}
    return raw


def test_a_pruned_search_trains_fewer_epochs_and_finds_the_same_best(tmp_path, matrix_search, one_thread):
    full, pruned = tmp_path / "full", tmp_path / "pruned"
    run_search(_pruned_search(tmp_path, matrix_search, "none"), full, echo=lambda m: None, progress=False,
               report=False)
    logs: list[str] = []
    run_search(_pruned_search(tmp_path, matrix_search, "median"), pruned, echo=logs.append, progress=False,
               report=False)
    a, b = _csv(full / "trials.csv"), _csv(pruned / "trials.csv")
    states = [t["state"] for t in b]
    assert any(s.startswith("pruned after epoch") for s in states), states
    assert all(t["state"] == "complete" for t in a)
    assert sum(int(t["epochs"]) for t in b) < sum(int(t["epochs"]) for t in a)
    best = lambda rows: next((t["strategies.head.train.optimizer.lr"], t["strategies.head.train.batch_size"])  # noqa: E731
                             for t in rows if t["rank"] == "1")
    assert best(a) == best(b)
    assert any("pruned after epoch" in m for m in logs)
    assert "pruned after epoch" in (pruned / "search.md").read_text()


# The search, run as the CLI runs it, but its third trial stops at the start of its second epoch
# (one epoch trained, its unit.json written, no result) and says so: the test kills it there, and
# does not race a trial that takes a fraction of a second.
PAUSED = """
import sys, time
from pathlib import Path
from medtransfer.study.units import Context
from medtransfer.train import Callback

marker = Path(sys.argv[1])


class Pause(Callback):
    def on_epoch_start(self, state):
        if state.epoch == 2:
            marker.write_text("paused")
            time.sleep(600)


real = Context.callbacks
Context.callbacks = lambda self, unit_dir, name, spec: [
    *real(self, unit_dir, name, spec), *([Pause()] if "trial-003" in Path(unit_dir).name else [])]
from medtransfer.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _wait_for(path: Path, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert proc.poll() is None, f"the search ended before it could be killed (rc {proc.returncode})"
        assert time.monotonic() < deadline, "timed out waiting for the search"
        time.sleep(0.2)


def _finished(out: Path) -> int:
    """Trials told to the journal so far."""
    if not (out / JOURNAL).is_file():
        return 0
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / JOURNAL)))
    return sum(t.state.is_finished() for s in storage.get_all_studies()
               for t in storage.get_all_trials(s._study_id))


def test_a_search_killed_mid_trial_resumes_with_its_trials_and_sampler_history(tmp_path, matrix_search):
    raw = matrix_search(tmp_path, sampler="tpe", trials=4)
    raw["sources"].pop("b")
    raw["search"]["space"] = {"strategies.head.train.optimizer.lr": {"low": 1e-4, "high": 0.1, "log": True}}
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(raw))
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    args = ["run", str(config), "--no-report", "--no-progress"]
    cmd = [sys.executable, "-m", "medtransfer.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    marker = tmp_path / "paused"
    proc = subprocess.Popen([sys.executable, "-c", PAUSED, str(marker), *args, "--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # kill -9 while the third trial trains: two told, a third asked and running
        _wait_for(marker, 300, proc)
        assert any((u / "unit.json").is_file() and not (u / "result.json").is_file()
                   for u in (killed / "units").glob("trial-a-head-trial-003*"))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert _finished(killed) == 2
    done = sorted((killed / "units").glob("*/result.json"))
    stamps = {p: p.stat().st_mtime_ns for p in done}
    rerun = subprocess.run([*cmd, "--out", str(killed)], env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming 1 trial(s) that were running" in rerun.stderr + rerun.stdout
    assert {p: p.stat().st_mtime_ns for p in done} == stamps  # finished trials were not trained again
    subprocess.run([*cmd, "--out", str(whole)], env=env, check=True, capture_output=True, timeout=600)
    resumed, uninterrupted = _csv(killed / "trials.csv"), _csv(whole / "trials.csv")
    # the sampler's history survived: the resumed search proposed what an uninterrupted one did
    assert [(t["trial"], t["strategies.head.train.optimizer.lr"], t["val_auc"]) for t in resumed] == \
        [(t["trial"], t["strategies.head.train.optimizer.lr"], t["val_auc"]) for t in uninterrupted]
    assert (killed / "results.csv").read_bytes() == (whole / "results.csv").read_bytes()
    assert json.loads((killed / "manifest.json").read_text())["jobs"]
