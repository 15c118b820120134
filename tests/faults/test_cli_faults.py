"""No traceback reaches a user of the command line (issue 26): ``export`` / ``predict --out`` onto
a folder or into a read-only one gets one line naming the path and what was expected; Ctrl-C
during a run prints "interrupted; rerun to resume", exits 130 and releases the run lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import yaml

from medtransfer.api import run_study
from medtransfer.cli import main
from medtransfer.study import study_from_dict
from medtransfer.study.lock import LOCK_NAME, run_lock

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
# SIGINT as a terminal sends it, even where the test runner's process ignores it
CLI = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
       "from medtransfer.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, class_folders, tiny_study_of) -> Path:
    root = tmp_path_factory.mktemp("cli_faults")
    cfg = tiny_study_of(root, class_folders, "faults", ("normal", "covid"))
    return run_study(study_from_dict(cfg), root / "run", echo=lambda m: None,
                     report=False)


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write into (root ignores permission bits: /sys then)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").write_text("")
    except OSError:
        return folder
    for candidate in (Path("/sys"), Path("/proc/sys")):
        try:
            (candidate / "medtransfer-probe").write_text("")
        except OSError:
            return candidate
    pytest.skip("no read-only folder to be had here")


@pytest.mark.parametrize("command", ["export", "predict"])
def test_out_onto_a_folder_or_a_read_only_folder_is_one_line(command, finished, tmp_path, capsys):
    images = next(finished.parent.glob("tgt"))
    extra = [str(images)] if command == "predict" else []
    folder = tmp_path / "a_folder"
    folder.mkdir()
    assert main([command, str(finished), *extra, "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --out {folder}: is a folder; expected a file name, e.g. {folder / 'out'}\n"
    locked = _read_only_folder(tmp_path) / "model.out"
    assert main([command, str(finished), *extra, "--out", str(locked)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {locked}: cannot write in {locked.parent} (")
    assert err.endswith("); expected a writable folder\n") and err.count("\n") == 1
    if command == "predict":
        a_file = tmp_path / "a_file"
        a_file.write_text("")
        csv_out = str(tmp_path / "p.csv")
        assert main([command, str(finished), *extra, "--out", csv_out, "--cam", str(a_file)]) == 2
        assert capsys.readouterr().err == f"error: --cam {a_file}: is a file; expected a folder\n"
    assert not list(tmp_path.glob("*.csv")) and not list(tmp_path.glob("*.json"))  # nothing half-written


def test_ctrl_c_during_a_run_says_rerun_and_releases_the_lock(tmp_path, class_folders, tiny_study_of):
    cfg = tiny_study_of(tmp_path, class_folders, "faults", ("normal", "covid"))
    cfg["pretrain"]["train"] = {**cfg["pretrain"]["train"], "epochs": 200}  # long enough to interrupt
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out = tmp_path / "run"
    argv = ["run", str(path), "--out", str(out), "--no-progress", "--no-report"]
    proc = subprocess.Popen([sys.executable, "-c", CLI, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 300
    while not list(out.glob("units/pretrain-*/history.csv")):  # training has begun
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr and stderr.strip().endswith("interrupted; rerun to resume")
    assert (out / LOCK_NAME).read_text() == ""  # released cleanly ...
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ... not merely freed by the process's death
        with run_lock(out):
            pass
