"""``medtransfer check`` of a search config: each arm's trials (kept from the run folder's journal,
left running, to run), what a trial trains, and the points of its space that cannot run; nothing
trained, nothing written."""

from __future__ import annotations

import csv
from pathlib import Path

import optuna
import yaml

from medtransfer.cli import main
from medtransfer.search import run_search
from medtransfer.search.arms import search_arms
from medtransfer.search.optimize import JOURNAL, _study_name, fingerprint
from medtransfer.study import study_from_dict
from medtransfer.study.pruning import open_storage


def _listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_check_lists_each_arms_trials_and_what_the_journal_keeps(tmp_path, capsys, matrix_search):
    cfg = matrix_search(tmp_path, final={"strategies.head.train.epochs": 1})
    path, out = _write(tmp_path / "search.yaml", cfg), tmp_path / "run"
    assert main(["check", str(path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert not out.exists()  # nothing written, not even the folder
    assert "# data" in text and "t (target):" in text
    assert "2 arm(s), each tuned on its own; sampler grid, ranked by validation auc" in text
    for arm in ("a.head", "b.head"):
        assert f"  {arm}: 2 trial(s); 0 finished in the journal (kept), 2 to run" in text
    assert "tunes strategies.head.train.optimizer.lr" in text and "each trial trains 1 cell(s)" in text
    assert "its final run only: strategies.head.train.epochs=1" in text
    assert "trials to run: 4;" in text and "warning" not in text

    assert main(["run", str(path), "--out", str(out), "--no-progress", "--no-report"]) == 0
    capsys.readouterr()
    before = _listing(out)
    assert main(["check", str(path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "a.head: 2 trial(s); 2 finished in the journal (kept), 0 to run" in text
    assert "trials to run: 0;" in text
    # a larger grid continues the same Optuna studies only where what decides a trial is unchanged:
    # a third learning rate is another space, so another study
    more = ["--set", "search.space={strategies.head.train.optimizer.lr: [1.0e-4, 1.0e-2, 1.0e-3]}"]
    assert main(["check", str(path), "--out", str(out), *more]) == 0
    assert "a.head: 3 trial(s); 0 finished in the journal (kept), 3 to run" in capsys.readouterr().out
    assert _listing(out) == before  # the run folder and its journal are only read


def test_check_counts_the_trials_a_killed_search_left_running(tmp_path, capsys, matrix_search):
    raw = matrix_search(tmp_path)
    path, out = _write(tmp_path / "search.yaml", raw), tmp_path / "run"
    cfg = study_from_dict(raw)
    arm = search_arms(cfg, cfg.search)[0]
    out.mkdir()
    study = optuna.create_study(study_name=_study_name(cfg, arm, fingerprint(cfg, cfg.search)),
                                storage=open_storage(str(out / JOURNAL)), direction="maximize")
    study.tell(study.ask({"strategies.head.train.optimizer.lr": optuna.distributions.CategoricalDistribution(
        [1.0e-4, 1.0e-2])}), 0.5)
    study.ask()  # a trial asked and never told: the search was killed while it ran
    assert main(["check", str(path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert ("a.head: 2 trial(s); 1 finished in the journal (kept), 1 to run "
            "(1 left running by a stopped search)") in text
    assert "b.head: 2 trial(s); 0 finished in the journal (kept), 2 to run" in text


def test_check_warns_of_points_that_cannot_run_and_fails_when_none_can(tmp_path, capsys, matrix_search):
    cfg = matrix_search(tmp_path)
    cfg["search"]["space"]["strategies.head.freeze.trainable_layers"] = [2, 99]
    path = _write(tmp_path / "search.yaml", cfg)
    assert main(["check", str(path), "--out", str(tmp_path / "run")]) == 0
    text = capsys.readouterr().out
    assert "a.head: 4 trial(s)" in text
    assert "warning: 2 of 4 point(s) cannot run, so their trials would fail (e.g. " in text
    assert "strategies.head.freeze.trainable_layers=99" in text and "(with the warnings above)" in text

    cfg["search"]["space"] = {"strategies.head.freeze.trainable_layers": [98, 99]}
    _write(path, cfg)
    assert main(["check", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: search arm a.head: none of its 2 point(s) can run" in err
    assert not (tmp_path / "run").exists()


def test_a_search_says_which_points_cannot_run_and_refuses_an_arm_with_none(tmp_path, capsys, matrix_search):
    cfg = matrix_search(tmp_path)
    cfg["search"]["space"]["strategies.head.freeze.trainable_layers"] = [2, 99]
    logs: list[str] = []
    out = run_search(cfg, tmp_path / "run", echo=logs.append, progress=False, report=False)
    said = [m for m in logs if "point(s) cannot run" in m]
    assert [m.split(":")[1].strip() for m in said] == ["arm a.head", "arm b.head"]
    assert logs.index(said[-1]) < next(i for i, m in enumerate(logs) if m.startswith("search: 2 arm(s)"))
    with (out / "trials.csv").open() as fh:
        assert sum(row["state"].startswith("failed:") for row in csv.DictReader(fh)) == 4  # told, as before

    cfg["search"]["space"] = {"strategies.head.freeze.trainable_layers": [98, 99]}
    path = _write(tmp_path / "search.yaml", cfg)
    assert main(["run", str(path), "--out", str(tmp_path / "dead"), "--no-progress"]) == 2
    assert f"{path}: search arm a.head: none of its 2 point(s) can run" in capsys.readouterr().err
    assert not (tmp_path / "dead").exists()  # refused before anything was written or trained
