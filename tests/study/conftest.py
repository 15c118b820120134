"""The tiny synthetic study every study test starts from, and Ray nodes of a test's own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

import medtransfer


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


@contextmanager
def _ray_node(log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A Ray node (``ray start ARGS --block``) in a session of its own, with this process's
    medtransfer importable; stopped on exit: SIGTERM (``ray start --block`` then stops its own
    processes), its process group killed only if that fails. Never ``ray stop``, which stops
    every Ray on the machine. Token authentication is off, so a process joining needs no token."""
    src = str(Path(medtransfer.__file__).resolve().parents[1])
    env = {**os.environ, "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    cmd = [str(Path(sys.executable).parent / "ray"), "start", *args, "--block"]
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start {' '.join(args)} failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def ray_node() -> Callable[..., AbstractContextManager[subprocess.Popen[bytes]]]:
    """``with ray_node(log, "--head", ...)``: a Ray node of this test's own (see ``_ray_node``)."""
    pytest.importorskip("ray")
    return _ray_node
