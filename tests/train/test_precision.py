"""train.precision (fp32 / bf16 / fp16 / auto), channels_last and lean checkpoints."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from medtransfer.errors import ConfigError
from medtransfer.evaluate import compute_metrics
from medtransfer.train import OptimizerConfig, TrainConfig, TrainEnv, fit, predict_proba
from medtransfer.train import precision as precision_module
from medtransfer.train.checkpoint import lean_checkpoints, load_checkpoint
from medtransfer.train.precision import resolve_precision

# Reduced precision may move a tiny task's metrics by at most this much against fp32 (stated in
# the README): bf16 keeps 8 bits of mantissa in the forward pass, weights stay float32.
TOLERANCE = 0.05


def _cfg(**kw) -> TrainConfig:
    kw = {"epochs": 6, "batch_size": 16, "progress": False,
          "optimizer": OptimizerConfig(name="adam", lr=0.01), **kw}
    return TrainConfig(**kw)


@pytest.fixture
def train_one(tmp_path, make_data, make_model):
    """``train_one(name, **TrainConfig changes)`` → (model, val metrics, precision that ran)."""

    def run(name: str, device: str = "cpu", **kw):
        train, val = make_data(96, seed=0), make_data(64, seed=1)
        model = make_model()
        res = fit(model, train, val, _cfg(**kw), TrainEnv(0, tmp_path / name, 2, device))
        proba = predict_proba(model, val[0], device=device, precision=kw.get("precision", "fp32"))
        return model, compute_metrics(val[1], proba), res.precision

    return run


def test_resolve_on_cpu():
    assert resolve_precision("auto", "cpu").name == "fp32"
    assert resolve_precision("fp32", "cpu").name == "fp32"
    assert resolve_precision("bf16", "cpu").name == "bf16"
    with pytest.raises(ConfigError, match=r"'train.precision'.*fp16.*allowed there: fp32, bf16, auto"):
        resolve_precision("fp16", "cpu", "train.precision")


def test_bf16_on_a_cpu_that_only_emulates_it_warns_once(monkeypatch):
    monkeypatch.setattr(precision_module, "_warned_emulated", False)
    monkeypatch.setattr(precision_module, "_cpu_bf16_native", lambda: False)
    with pytest.warns(RuntimeWarning, match=r"'train.precision': bf16 on a CPU without bf16 hardware.*"
                                            r"30x slower than fp32 on one such CPU"):
        assert resolve_precision("bf16", "cpu", "train.precision").name == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        resolve_precision("bf16", "cpu", "train.precision")
        monkeypatch.setattr(precision_module, "_warned_emulated", False)
        monkeypatch.setattr(precision_module, "_cpu_bf16_native", lambda: True)
        resolve_precision("bf16", "cpu", "train.precision")  # hardware bf16: nothing to say
        monkeypatch.setattr(precision_module, "_cpu_bf16_native", lambda: None)
        resolve_precision("bf16", "cpu", "train.precision")  # torch cannot tell: nothing to say
    assert precision_module._cpu_bf16_native() is None  # patched above; the real probe answers a bool
    monkeypatch.undo()
    assert isinstance(precision_module._cpu_bf16_native(), bool)


def test_invalid_precision_names_key_and_values():
    with pytest.raises(ConfigError, match=r"'precision': got 'fp64'.*Allowed: fp32, bf16, fp16, auto"):
        TrainConfig(precision="fp64")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"'channels_last'.*allowed: true, false"):
        TrainConfig(channels_last="yes")  # type: ignore[arg-type]


def test_bf16_within_tolerance_of_fp32(train_one):
    _, ref, p32 = train_one("fp32")
    model, got, p16 = train_one("bf16", precision="bf16")
    assert (p32, p16) == ("fp32", "bf16")
    assert ref["auc"] > 0.9  # the task is learnt, so the comparison means something
    assert abs(got["auc"] - ref["auc"]) <= TOLERANCE
    assert abs(got["accuracy"] - ref["accuracy"]) <= TOLERANCE
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32


def test_auto_on_cpu_is_fp32_bit_for_bit(train_one):
    a, ra, _ = train_one("a")
    b, rb, chosen = train_one("b", precision="auto")
    assert chosen == "fp32" and ra == rb
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(),
                                                 strict=True))


def test_channels_last_close_to_default(train_one):
    _, ref, _ = train_one("default")
    model, got, _ = train_one("nhwc", channels_last=True)
    assert abs(got["auc"] - ref["auc"]) <= TOLERANCE
    assert all(p.is_contiguous() for p in model.parameters())  # left as found
    x = np.random.default_rng(3).integers(0, 256, (16, 1, 8, 8), dtype=np.uint8)
    nhwc = predict_proba(model, x, channels_last=True)
    np.testing.assert_allclose(nhwc, predict_proba(model, x), rtol=1e-4, atol=1e-6)
    assert all(p.is_contiguous() for p in model.parameters())  # given back in NCHW


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp16", "auto", "bf16"])
def test_cuda_reduced_precision(train_one, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    _, ref, _ = train_one("cpu32")
    _, got, ran = train_one(precision, "cuda", precision=precision, deterministic=False,
                            channels_last=True)
    assert ran == resolve_precision(precision, "cuda").name != "fp32"
    assert abs(got["auc"] - ref["auc"]) <= TOLERANCE


def test_lean_checkpoints(tmp_path, make_data, make_model):
    train = make_data(32, seed=0)
    env = TrainEnv(0, tmp_path / "with_best", 2)
    fit(make_model(), train, train, _cfg(epochs=1), env)
    assert lean_checkpoints(env.out_dir) == [env.out_dir / "last.pt"]
    assert sorted(p.name for p in env.out_dir.glob("*.pt")) == ["best.pt"]
    # No best.pt (nothing improved a monitor): last.pt stays, with weights only.
    x = tmp_path / "only_last"
    fit(make_model(), train, None, _cfg(epochs=1, checkpoint_monitor="loss"), env.replace(out_dir=x))
    (x / "best.pt").unlink()
    before = load_checkpoint(x / "last.pt")
    assert before["optimizer_state"] is not None
    assert lean_checkpoints(x) == [x / "last.pt"]
    after = load_checkpoint(x / "last.pt")
    assert after["optimizer_state"] is None and after["extra"]["optimizer_state_dropped"]
    assert all(torch.equal(before["model_state"][k], v) for k, v in after["model_state"].items())
    assert lean_checkpoints(x) == []  # already lean


def test_predict_proba_bf16_close(train_one, make_data):
    model, _, _ = train_one("m")
    x = make_data(32, seed=5)[0]
    p32 = predict_proba(model, x)
    p16 = predict_proba(model, x, precision="bf16")
    assert p16.dtype == p32.dtype and np.abs(p16 - p32).max() < TOLERANCE
