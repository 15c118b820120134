"""Nothing lost, nothing silently wrong (issue 13): the run-folder and unit locks, units that
are redone when their files are damaged, predictions checked against result.json, and ids that
round-trip through every CSV however they are spelled."""

from __future__ import annotations

import csv
import errno
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from medtransfer.api import run_study
from medtransfer.audit import AuditConfig, run_audit
from medtransfer.errors import DataError
from medtransfer.report.rundir import load_run
from medtransfer.study import study_from_dict
from medtransfer.study.lock import LOCK_NAME, RunLockedError, run_lock, unit_lock
from medtransfer.study.store import Unit

WEIRD = ["a,=b", "=c"]  # a comma, and a cell a spreadsheet would run as a formula


def _config(root: Path, folders: Any, *, epochs: int = 1) -> dict[str, Any]:
    """One variant, one pretraining and one cell on a target whose classes are named oddly, with
    exact copies of images (which a split puts into different parts)."""
    tgt = root / "tgt"
    if not tgt.exists():
        plain = folders(root / "plain", {"normal": 24, "covid": 24}, seed=2)
        for src_name, name in zip(["normal", "covid"], WEIRD, strict=True):
            (tgt / name).mkdir(parents=True)
            for i, f in enumerate(sorted((plain / src_name).iterdir())):
                shutil.copy(f, tgt / name / f"{'=' if i % 2 else '+'}{i},x.png")
            for k in range(4):  # copies of one image: some land in other parts than the original
                shutil.copy(tgt / name / "+0,x.png", tgt / name / f"-copy{k}.png")
    train = {"epochs": epochs, "batch_size": 16, "progress": False,
             "optimizer": {"name": "adam", "lr": 0.001}}
    return {
        "name": "weird", "seed": 3, "cache_dir": str(root / "cache"), "preprocess": {"size": 16},
        "source": {"data": {"path": str(folders(root / "src", {"neg": 30, "pos": 30}, seed=1))},
                   "split": {"val_fraction": 0.2}},
        "target": {"data": {"path": str(tgt)},
                   "split": {"test_sets": 1, "test_per_class": 6, "val_fraction": 0.2}},
        "model": {"name": "alexnet_small", "options": {"base": 4, "dense": [8, 8]}},
        "pretrain": {"train": train}, "transfer": {"freeze": {"trainable_layers": 3}, "train": train},
        "variants": [{"name": "baseline"}],
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory, class_folders) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("integrity")
    cfg = _config(root, class_folders)
    out = run_study(study_from_dict(cfg), root / "run", echo=lambda m: None, report=False)
    return out, cfg


def _copy(finished: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    return out


def _unit(out: Path, kind: str) -> Path:
    return next(p for p in (out / "units").iterdir() if p.name.startswith(kind))


# -- 2. CSVs --------------------------------------------------------------------------------------
def test_odd_ids_round_trip_through_every_csv_and_audit_split_finds_the_leak(finished):
    out, cfg = finished
    text = (out / "splits" / "target.csv").read_text(encoding="utf-8")
    rows = list(csv.reader(text.splitlines()))
    assert all(len(r) == 3 for r in rows)
    assert not any(cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r)
    ids = {r[1] for r in rows[1:]}
    assert any(i.startswith("'=") for i in ids) and any(",x.png" in i for i in ids)

    from medtransfer.audit.core import read_split_csv
    parts = read_split_csv(out / "splits" / "target.csv")
    assert "=c/=1,x.png" in parts and "a,=b/+0,x.png" in parts and "=c/-copy0.png" in parts
    assert {cls.split("/")[0] for cls in parts} == set(WEIRD)

    arm = load_run(out).arms["target"][0]
    preds = load_run(out).predictions(arm)
    assert set(map(str, preds.ids)) <= set(parts)
    with (_unit(out, "cell") / "predictions.csv").open(newline="", encoding="utf-8") as fh:
        cells = [r[1] for r in csv.reader(fh)][1:]
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells)

    # The in-run audit found copies in different parts; so does auditing the data with --split.
    in_run = json.loads((out / "audit" / "target" / "audit.json").read_text())
    assert any(f["code"] == "exact_duplicate_cross_split" for f in in_run["findings"])
    again = run_audit(Path(cfg["target"]["data"]["path"]), cfg=AuditConfig(probe=False), split=out)
    assert again.find("exact_duplicate_cross_split")


# -- 4. predictions checked against result.json ---------------------------------------------------
@pytest.mark.parametrize("cut", ["mid_line", "whole_lines"])
def test_truncated_predictions_are_refused_naming_the_file(finished, tmp_path, cut):
    out = _copy(finished, tmp_path)
    path = _unit(out, "cell") / "predictions.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:-3]) + (lines[-3][:7] if cut == "mid_line" else ""), encoding="utf-8")
    run = load_run(out)
    with pytest.raises(DataError, match=r"predictions\.csv.*(truncated|rerun)") as info:
        run.predictions(run.arms["target"][0])
    assert str(path) in str(info.value)


# -- 3. unit integrity -----------------------------------------------------------------------------
def _rerun(out: Path, cfg: dict[str, Any]) -> list[str]:
    logs: list[str] = []
    run_study(study_from_dict(cfg), out, echo=logs.append, report=False)
    return logs


def test_damaged_result_json_is_redone_saying_why(finished, tmp_path):
    out = _copy(finished, tmp_path)
    ref = (out / "results.csv").read_text()
    cell = _unit(out, "cell")
    (cell / "result.json").write_text("{}")
    logs = _rerun(out, finished[1])
    assert any("redone" in m and "lacks" in m for m in logs), logs
    assert any("pretraining: done earlier, reused" in m for m in logs)
    assert (out / "results.csv").read_text() == ref

    text = (cell / "result.json").read_text()
    (cell / "result.json").write_text(text[: len(text) // 2])  # truncated
    logs = _rerun(out, finished[1])
    assert any("redone" in m and "unreadable" in m for m in logs), logs
    assert (out / "results.csv").read_text() == ref


def test_truncated_pretraining_checkpoint_is_redone_not_an_error_on_every_rerun(finished, tmp_path):
    out = _copy(finished, tmp_path)
    ref = (out / "results.csv").read_text()
    pre = _unit(out, "pretrain")
    best = pre / "best.pt"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    shutil.rmtree(_unit(out, "cell"))
    logs = _rerun(out, finished[1])
    assert any("redone" in m and "best.pt" in m for m in logs), logs
    assert (out / "results.csv").read_text() == ref
    logs = _rerun(out, finished[1])  # and now everything is sound again
    assert sum("reused" in m for m in logs) == 2


def test_result_records_size_and_sha256_of_its_files(finished):
    out, _ = finished
    for kind, names in [("pretrain", {"best.pt", "history.csv"}), ("cell", {"predictions.csv"})]:
        result = json.loads((_unit(out, kind) / "result.json").read_text())
        assert names <= set(result["files"])
        for name, rec in result["files"].items():
            assert (_unit(out, kind) / name).stat().st_size == rec["size"] and len(rec["sha256"]) == 64


# -- 1. locks --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_second_run_into_the_same_folder_fails_at_once_naming_the_holder(tmp_path, class_folders):
    cfg = _config(tmp_path, class_folders)
    cfg["pretrain"]["train"]["epochs"] = 5
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "medtransfer.cli", "run", str(path), "--out", str(out), "--no-progress",
           "--no-report"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not any(out.glob("units/pretrain-*/unit.json")):
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # paused mid-training, its lock held, while the second runs
        try:
            second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        finally:
            first.send_signal(signal.SIGCONT)
        assert second.returncode != 0
        err = second.stdout + second.stderr
        assert "data:" not in err and "audit" not in err  # at once: no data loaded, nothing trained
        assert str(out.resolve()) in err and f"pid {first.pid}" in err, err
        assert first.poll() is None  # the first run goes on ...
    finally:
        log = first.communicate(timeout=600)[0]
    assert first.returncode == 0, log  # ... and finishes intact
    for hist in out.glob("units/*/history.csv"):
        assert hist.read_text().count("epoch") == 1, hist
    load_run(out)
    assert (out / LOCK_NAME).read_text() == ""  # released cleanly


def _hold_unit(root: str, name: str, ready: Any, seconds: float) -> None:
    with unit_lock(Path(root), name):
        ready.set()
        time.sleep(seconds)


def test_unit_lock_makes_a_second_process_wait_and_start_needs_the_lock(tmp_path):
    unit = Unit(tmp_path, "cell", "x", {"a": 1})
    with pytest.raises(RuntimeError, match="lock"):
        unit.start()
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_unit, args=(str(tmp_path), f"cell-{unit.key}", ready, 1.5))
    proc.start()
    try:
        assert ready.wait(60)
        t0 = time.monotonic()
        with unit.claimed():
            waited = time.monotonic() - t0
            unit.start()
    finally:
        proc.join(30)
    assert waited > 0.5


def test_run_lock_is_reentrant_and_a_dead_holder_is_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text("pid=999999 host=elsewhere started=yesterday\n")
    with (pytest.warns(UserWarning, match=r"pid 999999 on host elsewhere.*no longer running"),
          run_lock(out), run_lock(out)):
        assert f"pid={os.getpid()}" in (out / LOCK_NAME).read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with run_lock(out):
            pass


def _try_lock(out: str, q: Any) -> None:
    try:
        with run_lock(Path(out)):
            q.put("acquired")
    except RunLockedError as exc:
        q.put(str(exc))


def test_run_lock_refuses_another_process(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    with run_lock(tmp_path):
        proc = ctx.Process(target=_try_lock, args=(str(tmp_path), q))
        proc.start()
        msg = q.get(timeout=60)
        proc.join(30)
    assert "in use by pid" in msg and str(tmp_path.resolve()) in msg and str(os.getpid()) in msg


def test_prediction_rows_recorded(finished):
    result = json.loads((_unit(finished[0], "cell") / "result.json").read_text())
    assert set(result["prediction_rows"]) == {"val", "test_1"}
    assert np.sum(list(result["prediction_rows"].values())) > 0


# -- 8. a full disk --------------------------------------------------------------------------------
def test_full_disk_is_a_clear_error_removes_the_partial_unit_and_a_rerun_resumes(
        finished, tmp_path, class_folders, monkeypatch):
    from medtransfer.errors import DiskFullError
    from medtransfer.study import units

    cfg = _config(tmp_path, class_folders)
    out = tmp_path / "run"

    def full(path: Path, *args: Any) -> None:
        path.write_text("test_set,id,label,p_a\n")  # a partial file, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(units, "write_unit_predictions", full)
    with pytest.raises(DiskFullError, match=r"cell-baseline-.*no space left.*MiB free.*rerun") as info:
        run_study(study_from_dict(cfg), out, echo=lambda m: None, report=False)
    assert "partial files were removed" in str(info.value)
    assert not list(out.glob("units/cell-*"))  # nothing half-written left behind
    pre = _unit(out, "pretrain")
    assert (pre / "result.json").is_file()  # the finished pretraining is kept
    monkeypatch.undo()
    logs = _rerun(out, cfg)
    assert any("pretraining: done earlier, reused" in m for m in logs)
    assert (out / "results.csv").read_text() == (finished[0] / "results.csv").read_text()


def test_torch_serialization_error_of_a_full_disk_is_recognised(tmp_path):
    from medtransfer.errors import DiskFullError
    from medtransfer.fileio import disk_full_error, is_disk_full, write_text_atomic

    torch_error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 19110464 "
                               "vs 19110352")
    assert is_disk_full(torch_error) and not is_disk_full(RuntimeError("shape mismatch"))
    msg = str(disk_full_error(tmp_path / "u", torch_error))
    assert str(tmp_path / "u") in msg and "MiB free" in msg and "unexpected pos" in msg
    real = os.fdopen

    def no_space(fd: int, mode: str) -> Any:
        fh = real(fd, mode)
        fh.write = lambda data: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))
        return fh

    (tmp_path / "x.json").write_text("old")
    import medtransfer.fileio as fileio_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fileio_module.os, "fdopen", no_space)
        with pytest.raises(DiskFullError, match=r"x\.json.*no space left"):
            write_text_atomic(tmp_path / "x.json", "new")
    assert (tmp_path / "x.json").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]
