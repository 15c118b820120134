"""The malloc tuning (train/allocator.py): when it applies, and that it never changes a result."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from medtransfer.train import allocator

GLIBC = bool(getattr(os, "confstr", None) and os.confstr("CS_GNU_LIBC_VERSION"))


@pytest.fixture
def fresh(monkeypatch):
    """tune_allocator as if not yet called in this process, with none of the user's settings."""
    monkeypatch.setattr(allocator, "_STATE", None)
    for name in (allocator.ENV_VAR, "LD_PRELOAD", *allocator._USER_TUNING):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.skipif(not GLIBC, reason="the C library is not glibc: nothing is tuned")
def test_tunes_glibc_once(fresh):
    state = allocator.tune_allocator()
    assert state.startswith("glibc") and "1 GiB" in state
    fresh.setenv(allocator.ENV_VAR, "system")  # the first answer holds for the process
    assert allocator.tune_allocator() == state


@pytest.mark.parametrize(("name", "value", "reason"), [
    (allocator.ENV_VAR, "system", "MEDTRANSFER_MALLOC=system"),
    ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "jemalloc is preloaded"),
    ("LD_PRELOAD", "libtcmalloc_minimal.so.4", "tcmalloc is preloaded"),
    ("MALLOC_MMAP_THRESHOLD_", "65536", "MALLOC_MMAP_THRESHOLD_ is set"),
    ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0", "GLIBC_TUNABLES is set"),
])
def test_user_choice_is_left_alone(fresh, name, value, reason):
    fresh.setenv(name, value)
    assert allocator.tune_allocator() == f"untouched: {reason}"


def test_unknown_setting_warns_and_tunes(fresh, caplog):
    fresh.setenv(allocator.ENV_VAR, "jemalloc")
    state = allocator.tune_allocator()
    assert "MEDTRANSFER_MALLOC" in caplog.text and "'jemalloc'" in caplog.text
    assert not state.startswith("untouched: MEDTRANSFER")


_FIT = """
import hashlib, sys, numpy as np, torch
from medtransfer.models import create_model
from medtransfer.train import OptimizerConfig, TrainConfig, TrainEnv, fit, predict_proba
from medtransfer.train.allocator import tune_allocator
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (96, 1, 32, 32), dtype=np.uint8)
y = (x.mean(axis=(1, 2, 3)) > 127.5).astype(np.int64)
torch.manual_seed(0)
model = create_model("alexnet_krizhevsky", num_classes=2, in_chans=1, img_size=32)
cfg = TrainConfig(epochs=2, batch_size=32, progress=False, checkpoint_every="end",
                  optimizer=OptimizerConfig(name="adagrad", lr=0.01))
fit(model, (x, y), (x[:32], y[:32]), cfg, TrainEnv(0, sys.argv[1], 2))
h = hashlib.sha256()
for t in model.state_dict().values():
    h.update(t.numpy().tobytes())
h.update(predict_proba(model, x).tobytes())
print(tune_allocator().split(":")[0], h.hexdigest())
"""


@pytest.mark.skipif(not GLIBC, reason="the C library is not glibc: nothing is tuned")
def test_results_identical_with_and_without(tmp_path):
    """The same fit (a 26M-parameter AlexNet, its 4096 × 4096 dense layer alone 64 MiB: blocks far
    above glibc's default thresholds) in a process with system malloc and one tuned:
    bitwise-equal weights and predictions."""
    out = {}
    for choice in ("system", "tuned"):
        env = {**os.environ, allocator.ENV_VAR: choice}
        for name in ("LD_PRELOAD", *allocator._USER_TUNING):  # the user's own choice would win
            env.pop(name, None)
        done = subprocess.run([sys.executable, "-c", _FIT, str(tmp_path / choice)], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        words = done.stdout.split()
        out[choice] = (words[0], words[-1])
    assert out["system"][0] == "untouched" and out["tuned"][0].startswith("glibc")
    assert out["system"][1] == out["tuned"][1]
    assert len(out["tuned"][1]) == len(hashlib.sha256().hexdigest())
