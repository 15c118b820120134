"""The search tests' study: two weight sources × one target × one strategy, searched per arm."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from medtransfer.models import ModelConfig, build_model

TRAIN = {"epochs": 2, "batch_size": 16, "progress": False, "optimizer": {"name": "adam", "lr": 0.001}}
MODEL = {"name": "alexnet_small", "options": {"base": 4, "dense": [8, 8]}}


def _weights(path: Path, seed: int) -> Path:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(ModelConfig(name=MODEL["name"], options=MODEL["options"]), num_classes=2,
                            in_chans=1, img_size=16)
    torch.save(model.state_dict(), path)
    return path


def _matrix_search(tmp_path: Path, folders: Callable[..., Path], **search: Any) -> dict[str, Any]:
    """Two weight sources × one target × one strategy (no pretraining: fast), searched per arm."""
    tgt = folders(tmp_path / "tgt", {"normal": 30, "covid": 30}, seed=2)
    return {
        "name": "arm_search", "seed": 3, "cache_dir": str(tmp_path / "cache"), "audit": False,
        "preprocess": {"size": 16}, "model": MODEL, "report": {"figure_formats": ["png"]},
        "sources": {"a": {"weights": f"file:{_weights(tmp_path / 'a.pt', 1)}"},
                    "b": {"weights": f"file:{_weights(tmp_path / 'b.pt', 2)}"}},
        "targets": {"t": {"data": {"path": str(tgt)},
                          "split": {"test_sets": 1, "test_per_class": 8, "val_fraction": 0.25}}},
        "strategies": {"head": {"kind": "freeze", "freeze": {"trainable_layers": 2}, "train": TRAIN}},
        "search": {"space": {"strategies.head.train.optimizer.lr": [1.0e-4, 1.0e-2]},
                   "objective": {"metric": "auc"}, **search},
    }


@pytest.fixture(scope="session")
def matrix_search(class_folders: Callable[..., Path]) -> Callable[..., dict[str, Any]]:
    """``matrix_search(root, **search)`` → the config, its images and weights files under ``root``."""
    return lambda root, **search: _matrix_search(root, class_folders, **search)
