"""The fault tests' tiny study: one variant, one pretraining and one cell on 16 px class folders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest


def tiny_study(root: Path, folders: Any, name: str, classes: Sequence[str]) -> dict[str, Any]:
    """The config of a tiny study in ``root``, its target's classes named ``classes``."""
    train = {"epochs": 1, "batch_size": 16, "progress": False, "optimizer": {"name": "adam", "lr": 0.001}}
    return {
        "name": name, "seed": 5, "cache_dir": str(root / "cache"), "preprocess": {"size": 16},
        "report": {"figure_formats": ["png"]},
        "source": {"data": {"path": str(folders(root / "src", {"neg": 30, "pos": 30}, seed=1))},
                   "split": {"val_fraction": 0.2}},
        "target": {"data": {"path": str(folders(root / "tgt", dict.fromkeys(classes, 24), seed=2))},
                   "split": {"test_sets": 1, "test_per_class": 6, "val_fraction": 0.2}},
        "model": {"name": "alexnet_small", "options": {"base": 4, "dense": [8, 8]}},
        "pretrain": {"train": train}, "transfer": {"freeze": {"trainable_layers": 3}, "train": train},
        "variants": [{"name": "baseline"}], "audit": False,
    }


@pytest.fixture(scope="session")
def tiny_study_of() -> Callable[..., dict[str, Any]]:
    """``tiny_study_of(root, class_folders, name, classes)`` → a tiny study's config."""
    return tiny_study
