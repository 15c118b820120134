"""A study trained in bf16 records it; fp32 unit keys do not change; finished units are lean."""

from __future__ import annotations

import json

import pytest

from medtransfer.api import run_study
from medtransfer.errors import ConfigError
from medtransfer.study import study_from_dict
from medtransfer.study.units import spec_key
from medtransfer.train import TrainConfig
from medtransfer.train.checkpoint import load_checkpoint


def _results(out, kind: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob(f"units/{kind}-*/result.json"))]


def test_bf16_study_records_precision_and_keeps_lean_units(tmp_path, tiny_study_config):
    cfg = tiny_study_config(tmp_path)
    cfg["variants"] = cfg["variants"][:1]
    cfg["pretrain"]["train"]["precision"] = "bf16"
    cfg["transfer"]["train"] = {**cfg["transfer"]["train"], "precision": "bf16", "keep_optimizer": True}
    out = run_study(study_from_dict(cfg), tmp_path / "run", echo=lambda m: None, report=False)
    (pre,), (cell,) = _results(out, "pretrain"), _results(out, "cell")
    assert pre["precision"] == "bf16" and cell["precision"] == "bf16"
    assert cell["strategy"]["stages"][-1]["precision"] == "bf16"
    pre_dir = next(out.glob("units/pretrain-*"))
    cell_dir = next(out.glob("units/cell-*"))
    # Pretraining is lean (best.pt only, as result.json vouches); the cell kept last.pt whole.
    assert sorted(p.name for p in pre_dir.glob("*.pt")) == ["best.pt"]
    assert "best.pt" in pre["files"] and "last.pt" not in pre["files"]
    assert load_checkpoint(cell_dir / "last.pt")["optimizer_state"] is not None
    assert "last.pt" in cell["files"]


def test_fp32_unit_keys_do_not_change():
    # precision, channels_last, deterministic, keep_optimizer at their defaults are not in keys.
    assert spec_key(TrainConfig(precision="fp32", channels_last=False)) == spec_key(TrainConfig())
    assert spec_key(TrainConfig(precision="bf16")) == {"precision": "bf16"}


def test_invalid_precision_in_a_study(tmp_path, tiny_study_config):
    cfg = tiny_study_config(tmp_path)
    cfg["transfer"]["train"] = {**cfg["transfer"]["train"], "precision": "half"}
    with pytest.raises(ConfigError, match=r"'transfer.train.precision'.*'fp32', 'bf16', 'fp16', 'auto'"):
        study_from_dict(cfg)
