"""Pretrained weights in every study shape: used where the config names them, and a missing file
fails before any data is split into units or any epoch is trained."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from medtransfer.api import run_study
from medtransfer.errors import DataError
from medtransfer.models import ModelConfig, build_model
from medtransfer.search import run_search
from medtransfer.study import study_from_dict

MODEL = {"name": "alexnet_small", "options": {"base": 4, "dense": [8, 8]}}


def _weights(path: Path, seed: int = 9) -> dict[str, torch.Tensor]:
    """A state dict of the tiny AlexNet, "pretrained elsewhere", saved to ``path``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(ModelConfig(**MODEL), num_classes=2, in_chans=1, img_size=16)
    state = model.state_dict()
    torch.save(state, path)
    return state


def _single(cfg: dict[str, Any], weights: str, *, source: bool = True, folds: bool = False) -> dict[str, Any]:
    cfg["model"] = {**cfg["model"], "weights": weights}
    cfg["variants"] = [{"name": "baseline"}]
    cfg["audit"] = False
    if not source:
        cfg.pop("source")
        cfg.pop("pretrain")
    if folds:
        cfg["target"]["split"] = {"folds": 2, "val_fraction": 0.2}
    return cfg


def _matrix(base: dict[str, Any], weights: str, *, on_variant: bool) -> dict[str, Any]:
    train = base["transfer"]["train"]
    sources = {"src": base["source"]} if on_variant else {"file": {"weights": weights}}
    return {
        "name": "tiny_matrix", "seed": 3, "cache_dir": base["cache_dir"], "audit": False,
        "preprocess": base["preprocess"], "model": MODEL, "pretrain": base["pretrain"],
        "sources": sources, "targets": {"tgt": base["target"]},
        "strategies": {"freeze": {"kind": "freeze", "freeze": {"trainable_layers": 3}, "train": train}},
        "variants": [{"name": "v", **({"model": {"weights": weights}} if on_variant else {})}],
    }


SHAPES: dict[str, Callable[..., dict[str, Any]]] = {
    "single, pretraining from the file": lambda c, w: _single(c, w),
    "single, the file is the source": lambda c, w: _single(c, w, source=False),
    "single, cross-validation": lambda c, w: _single(c, w, source=False, folds=True),
    "matrix, a source's weights": lambda c, w: _matrix(c, w, on_variant=False),
    "matrix, a variant's model.weights": lambda c, w: _matrix(c, w, on_variant=True),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_missing_weights_file_fails_before_any_unit(shape, tmp_path, tiny_study_config):
    cfg = SHAPES[shape](tiny_study_config(tmp_path), f"file:{tmp_path / 'nope.pt'}")
    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"nope\.pt does not exist"):
        run_study(study_from_dict(cfg), out, echo=lambda m: None, report=False)
    assert not (out / "units").exists()


def test_a_search_with_a_missing_weights_file_fails_before_any_trial(tmp_path, tiny_study_config):
    raw = _single(tiny_study_config(tmp_path), f"file:{tmp_path / 'nope.pt'}", source=False)
    raw["search"] = {"space": {"transfer.train.optimizer.lr": [1e-3, 1e-2]}}
    out = tmp_path / "run"
    with pytest.raises(DataError, match=r"nope\.pt does not exist"):
        run_search(raw, out, echo=lambda m: None, progress=False, report=False)
    assert not (out / "units").exists() and not (out / "trials.csv").exists()


def _cell_state(out: Path) -> dict[str, torch.Tensor]:
    cells = sorted((out / "units").glob("cell-*"))
    return torch.load(cells[0] / "best.pt", map_location="cpu", weights_only=True)["model_state"]


@pytest.mark.parametrize("shape", ["single, the file is the source", "single, cross-validation",
                                   "matrix, a source's weights"])
def test_frozen_layers_of_a_weights_only_transfer_are_the_files(shape, tmp_path, tiny_study_config):
    """The silent wrong result this engine fixed: the seed-000 shape once ignored model.weights."""
    file = tmp_path / "init.pt"
    init = _weights(file)
    out = tmp_path / "run"
    run_study(study_from_dict(SHAPES[shape](tiny_study_config(tmp_path), f"file:{file}")), out,
              echo=lambda m: None, report=False)
    trained = _cell_state(out)
    first_conv = next(k for k in init if k.endswith("weight") and init[k].ndim == 4)
    assert torch.equal(trained[first_conv], init[first_conv])  # frozen, so still the file's
    # A changed file is a different unit: the cells are trained again, not reused.
    _weights(file, seed=10)
    logs: list[str] = []
    run_study(study_from_dict(SHAPES[shape](tiny_study_config(tmp_path), f"file:{file}")), out,
              echo=logs.append, report=False)
    assert not any("done earlier, reused" in m for m in logs), logs


def test_pretraining_starts_from_the_file_in_the_seed000_shape(tmp_path, tiny_study_config):
    file = tmp_path / "init.pt"
    _weights(file)
    out = tmp_path / "run"
    run_study(study_from_dict(_single(tiny_study_config(tmp_path), f"file:{file}")), out,
              echo=lambda m: None, report=False)
    spec = json.loads(next((out / "units").glob("pretrain-*/unit.json")).read_text())["spec"]
    assert spec["weights"].startswith(f"file:{file}#sha256=")  # the file's content is in the key
    scratch = tmp_path / "scratch"
    run_study(study_from_dict({**_single(tiny_study_config(tmp_path), f"file:{file}"),
                               "model": MODEL}), scratch, echo=lambda m: None, report=False)
    assert (out / "results.csv").read_text() != (scratch / "results.csv").read_text()


def test_a_search_across_pretrained_weights(tmp_path, tiny_study_config):
    """Seeds 001 and 004 compare pretrained models: a search space over ``model.weights``."""
    files = [tmp_path / "a.pt", tmp_path / "b.pt"]
    firsts = []
    for seed, file in enumerate(files):
        state = _weights(file, seed=20 + seed)
        firsts.append(next(v for k, v in state.items() if v.ndim == 4))
    raw = _single(tiny_study_config(tmp_path), f"file:{files[0]}", source=False)
    raw["search"] = {"space": {"model.weights": [f"file:{f}" for f in files]}}
    out = tmp_path / "run"
    run_search(raw, out, echo=lambda m: None, progress=False, report=False)
    trials = sorted((out / "units").glob("trial-*"))
    assert len(trials) == 2
    states = [torch.load(t / "best.pt", weights_only=True)["model_state"] for t in trials]
    used = [next(v for v in state.values() if v.ndim == 4) for state in states]
    # Each trial's frozen first convolution is its own file's.
    assert sorted(torch.equal(u, f) for u in used for f in firsts) == [False, False, True, True]
