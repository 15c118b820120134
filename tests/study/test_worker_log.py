"""What worker processes say reaches the run's ``run.log`` (issue 15): their progress lines, the
``medtransfer`` loggers' records and their warnings, relayed through a queue to the parent."""

from __future__ import annotations

import os
import re

from medtransfer.api import run_study
from medtransfer.study import ExecutorSettings, study_from_dict

# Imported by every process that reads the study (its `imports:`), a worker's first job included.
PROBE = """
import logging, os, warnings
logging.getLogger("medtransfer.probe").info("probe imported in pid %d", os.getpid())
warnings.warn(f"probe warning in pid {os.getpid()}", UserWarning, stacklevel=1)
"""


def test_two_local_workers_log_into_run_log(tmp_path, tiny_study_config, monkeypatch):
    (tmp_path / "mt_worker_probe.py").write_text(PROBE)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers get this sys.path too
    tiny = tiny_study_config(tmp_path)
    train = {**tiny["pretrain"]["train"], "epochs": 1}
    # one pretraining (run here), then its cell's two repeats in one pool of two workers
    cfg = {key: tiny[key] for key in ("name", "seed", "cache_dir", "preprocess", "model")}
    cfg.update(imports=["mt_worker_probe"], audit=False, repeats=2, pretrain={"train": train},
               sources={"src": tiny["source"]}, targets={"tgt": tiny["target"]},
               strategies={"freeze": {"kind": "freeze", "train": train}})
    out = run_study(study_from_dict(cfg), tmp_path / "run", executor=ExecutorSettings(workers=2),
                    report=False, progress=False, echo=lambda m: None)
    log = (out / "run.log").read_text(encoding="utf-8")
    here = str(os.getpid())
    assert set(re.findall(r"probe imported in pid (\d+)", log)) - {here}  # a worker's record
    assert set(re.findall(r"UserWarning: probe warning in pid (\d+)", log)) - {here}  # its warning
    assert len(re.findall(r"\] freeze on \d+ target images", log)) == 2  # the workers' progress lines
