"""Each ``medtransfer run`` writes ``run.log`` into its folder; ``-q`` silences the console only."""

from __future__ import annotations

import logging

import yaml

from medtransfer.api import run_log
from medtransfer.cli import main


def test_quiet_run_writes_its_progress_to_run_log_only(tmp_path, capsys, tiny_study_config):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(tiny_study_config(tmp_path)))
    out = tmp_path / "run"
    assert main(["-q", "run", str(path), "--out", str(out), "--no-progress", "--no-report",
                 "--set", "variants=[{name: only}]"]) == 0
    console = capsys.readouterr().out
    log = (out / "run.log").read_text(encoding="utf-8")
    assert "pretraining on" in log and "results:" in log and "summary:" in log
    assert "pretraining on" not in console and "table:" in console
    assert not logging.getLogger("medtransfer").handlers[1:], "the run's file handler stays attached"


def test_run_log_records_warnings_and_echo_of_the_python_api(tmp_path):
    import warnings

    with run_log(tmp_path) as handler, warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.getLogger("medtransfer.study").info("an info line")
        warnings.warn("a cache entry was discarded", UserWarning, stacklevel=1)
        with run_log(tmp_path) as inner:
            assert inner is handler  # nested runs into one folder share the handler
    text = (tmp_path / "run.log").read_text(encoding="utf-8")
    assert "an info line" in text and "UserWarning: a cache entry was discarded" in text
