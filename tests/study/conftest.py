"""The tiny synthetic study every study test starts from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def tiny_study(root: Path, folders: Callable[..., Path]) -> dict[str, Any]:
    """Two variants × (pretrain + transfer) = 4 units on images written under ``root``."""
    train = {"epochs": 2, "batch_size": 16, "progress": False,
             "optimizer": {"name": "adam", "lr": 0.001}}
    return {
        "name": "tiny",
        "seed": 3,
        "cache_dir": str(root / "cache"),
        "preprocess": {"size": 16},
        "source": {"data": {"path": str(folders(root / "src", {"neg": 40, "pos": 40}, seed=1))},
                   "split": {"val_fraction": 0.2}},
        "target": {
            "data": {"path": str(folders(root / "tgt", {"normal": 30, "covid": 30}, seed=2)),
                     "classes": ["normal", "covid"]},
            "split": {"test_sets": 2, "test_per_class": 5, "train_per_class": 15,
                      "val_fraction": 0.2},
        },
        "model": {"name": "alexnet_seed002", "options": {"base": 4, "dense": [8, 8]}},
        "pretrain": {"train": train},
        "transfer": {"freeze": {"trainable_layers": 3}, "train": train},
        "variants": [{"name": "baseline"}, {"name": "bn", "model": {"batch_norm": True}}],
    }


@pytest.fixture(scope="session")
def tiny_study_config(class_folders: Callable[..., Path]) -> Callable[[Path], dict[str, Any]]:
    """``tiny_study_config(root)`` → the tiny study's config dict, its images under ``root``."""
    return lambda root: tiny_study(root, class_folders)
