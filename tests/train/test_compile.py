"""train.compile: torch.compile of the model, in place (checkpoints keep the plain model's keys)."""

from __future__ import annotations

import pytest
import torch

from medtransfer.errors import ConfigError
from medtransfer.train import OptimizerConfig, TrainConfig, TrainEnv, fit, load_checkpoint
from medtransfer.train.compiled import compile_model, compile_problem


def _cfg(**kw) -> TrainConfig:
    kw = {"epochs": 2, "batch_size": 16, "progress": False,
          "optimizer": OptimizerConfig(name="adam", lr=0.01), **kw}
    return TrainConfig(**kw)


def test_compile_is_a_bool_and_off_by_default():
    assert TrainConfig().compile is False
    with pytest.raises(ConfigError, match=r"'compile': got 'yes'; allowed: true, false"):
        TrainConfig(compile="yes")  # type: ignore[arg-type]


def test_missing_cxx_compiler_is_a_config_error(monkeypatch, make_model):
    monkeypatch.setenv("CXX", "no-such-cxx-compiler")
    assert "no-such-cxx-compiler" in (compile_problem("cpu") or "")
    message = r"'train.compile': true needs a C\+\+ compiler.*'no-such-cxx-compiler'.*allowed here: false"
    with pytest.raises(ConfigError, match=message):
        compile_model(make_model(), "cpu")


def test_fit_trains_a_compiled_model_like_the_eager_one(tmp_path, make_data, make_model):
    # aot_eager: torch.compile's graph capture and autograd without generating code (fast, no
    # compiler); the same numbers as eager up to rounding.
    train, val = make_data(32, seed=0), make_data(16, seed=1)
    eager = make_model()
    ref = fit(eager, train, val, _cfg(), TrainEnv(0, tmp_path / "eager", 2))
    model = compile_model(make_model(), "cpu", backend="aot_eager")
    got = fit(model, train, val, _cfg(), TrainEnv(0, tmp_path / "compiled", 2))
    assert len(got.history) == 2
    for a, b in zip(ref.history, got.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["val_auc"] == pytest.approx(b["val_auc"], abs=0.02)
    ckpt = load_checkpoint(got.last_path)
    assert list(ckpt["model_state"]) == list(eager.state_dict())  # no "_orig_mod." prefixes


@pytest.mark.slow
@pytest.mark.skipif(compile_problem("cpu") is not None, reason=f"TorchInductor: {compile_problem('cpu')}")
def test_fit_with_inductor_compile(tmp_path, make_data, make_model):
    # Compiling generates and builds C++ kernels: tens of seconds on a cold cache
    # (/tmp/torchinductor_$USER), a few seconds once cached.
    train = make_data(32, seed=0)
    model = make_model()
    res = fit(model, train, None, _cfg(compile=True, epochs=1, checkpoint_monitor="loss"),
              TrainEnv(0, tmp_path / "inductor", 2))
    assert model._compiled_call_impl is not None  # fit compiled it, as train.compile asks
    assert res.history and torch.isfinite(torch.tensor(res.history[0]["loss"]))
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
