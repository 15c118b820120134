"""``compat: keras`` checked against Keras itself, step by step.

``tests/data/keras_step_refs.npz`` (written by ``scripts/make_keras_refs.py`` with Keras 3.15 /
TensorFlow 2.21) holds small Keras models — seed 000's AlexNet without and with batch norm, a
VGG-style net with a Dense head, two softmax outputs and class weights, and the same net with two
sigmoid outputs and ``binary_crossentropy`` (``binary_output: sigmoid_pair``; Keras's raw sigmoids
are normalised to sum to 1 before they are compared) — trained 3 steps on one
fixed batch with Adagrad, Adam and SGD (Nesterov), from initial weights both sides draw the
same way. Here medtransfer's models start from those weights (converted by the ``keras:``
loader), ``fit`` trains them the same 3 steps (one batch of all 8 images per epoch), and after
every step each tensor must match Keras's (``TOLERANCE``): its sum and sum of absolute values
within 1e-4 of the tensor's sum of absolute values, 32 sampled entries within 1e-3 of the
largest of them, and the predictions after the last step (inference mode, training batch and 8
more images) within 1e-4. Without ``compat: keras`` the same runs must miss Keras's entries by
more than 1e-2, except where PyTorch's rules are Keras's (``SAME_IN_BOTH``); measured: every
other case misses by 0.07 to 77.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medtransfer.config import from_dict
from medtransfer.models import ModelConfig, build_model
from medtransfer.models.keras_weights import keras_state_dict
from medtransfer.train import Callback, TrainConfig, TrainEnv, fit, predict_proba
from medtransfer.train.callbacks import TrainState

REFS = Path(__file__).resolve().parents[1] / "data" / "keras_step_refs.npz"
SIZE, STEPS = 64, 3
# entries: relative to the tensor's largest sampled magnitude; sums: to its sum of |w|; proba:
# absolute. Entries get 1e-3: in the batch-norm AlexNet, channels of tiny batch variance scale
# float32 rounding up by 3 steps (up to 6e-4 with Adam and Adagrad; 1e-5 or less elsewhere).
TOLERANCE = {"entries": 1e-3, "sums": 1e-4, "proba": 1e-4}
MODELS = {
    "alexnet": {"name": "alexnet_krizhevsky", "options": {"dense": [32, 32, 16]}},
    "alexnet_bn": {"name": "alexnet_krizhevsky", "options": {"dense": [32, 32, 16]}, "batch_norm": True},
    "vgg": {"name": "vgg_small", "options": {"base": 4, "dense": [16, 16, 16]}, "binary_output": "pair"},
    "vgg_sigmoid": {"name": "vgg_small", "options": {"base": 4, "dense": [16, 16, 16]},
                    "binary_output": "sigmoid_pair"},
}
OPTIMIZERS = {
    "adagrad": {"name": "adagrad", "lr": 0.01},
    "adam": {"name": "adam", "lr": 1e-3},
    "sgd": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "nesterov": True},
}
# PyTorch's rules are Keras's here: SGD at a constant rate, no batch norm; the class weights of
# the VGG case are "balanced" over the one batch, so their sum is the batch size (the loss
# reduction then agrees too; tests/train/test_keras_optim.py checks it on uneven batches)
SAME_IN_BOTH = {("alexnet", "sgd"), ("vgg", "sgd"), ("vgg_sigmoid", "sgd")}
WEIGHTED = {"vgg", "vgg_sigmoid"}  # trained with class weights


@pytest.fixture(scope="module")
def refs() -> dict[str, np.ndarray]:
    with np.load(REFS) as data:
        return {k: data[k] for k in data.files}


def _keras_layers(refs: dict[str, np.ndarray], case: str) -> list[tuple[str, list[np.ndarray]]]:
    """The Keras model's initial weights, drawn again as the script drew them."""
    layers: dict[int, list[np.ndarray]] = {}
    rows = zip(refs[f"{case}/tensors"], refs[f"{case}/init"], strict=True)
    for (i, j, *dims), (seed, bound, total) in rows:
        shape = tuple(int(d) for d in dims if d)
        if np.isnan(seed):  # batch norm: Keras's gamma 1, beta 0, moving mean 0, moving variance 1
            value = np.ones(shape, np.float32) if j in (0, 3) else np.zeros(shape, np.float32)
        else:
            value = np.random.default_rng(int(seed)).uniform(-bound, bound, shape).astype(np.float32)
            assert value.astype(np.float64).sum() == pytest.approx(total, rel=1e-9, abs=1e-9)
        layers.setdefault(int(i), []).append(value)
    return [(f"layer_{i}", arrays) for i, arrays in sorted(layers.items())]


def _to_keras(t: torch.Tensor, shape: tuple[int, ...], flat: tuple[int, int, int] | None) -> np.ndarray:
    """A torch tensor in the Keras layout of ``shape`` (the inverse of the loader's conversion)."""
    a = t.detach().double().numpy()
    if a.ndim == 4:
        return a.transpose(2, 3, 1, 0)
    if a.ndim == 2 and flat is not None:
        c, h, w = flat
        return a.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)
    return a.T if a.ndim == 2 else a.reshape(shape)


def _torch_tensors(model: nn.Module) -> list[torch.Tensor]:
    """Per Keras tensor (in Keras order), medtransfer's tensor."""
    out: list[torch.Tensor] = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            out += [module.weight] + ([] if module.bias is None else [module.bias])
        elif isinstance(module, nn.BatchNorm2d):
            out += [module.weight, module.bias, module.running_mean, module.running_var]
    return out


def _fmap(model: nn.Module) -> tuple[int, int, int]:
    with torch.no_grad():
        shape = model.eval().forward_features(torch.zeros(1, 1, SIZE, SIZE)).shape  # type: ignore[operator]
    return int(shape[1]), int(shape[2]), int(shape[3])


class _Steps(Callback):
    """Every epoch's (= step's) tensors, in Keras's order."""

    def __init__(self) -> None:
        self.states: list[list[torch.Tensor]] = []

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        self.states.append([t.detach().clone() for t in _torch_tensors(state.model)])


def _run(refs: dict[str, np.ndarray], case: str, opt: str, compat: str, tmp: Path
         ) -> tuple[list[list[torch.Tensor]], np.ndarray, tuple[int, int, int]]:
    cfg = from_dict(ModelConfig, {**MODELS[case], "compat": compat})
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=2, in_chans=1, img_size=SIZE)
    fmap = _fmap(model)
    state = keras_state_dict(model, _keras_layers(refs, case), fmap=fmap)
    model.load_state_dict({**model.state_dict(), **state})
    images, labels = refs["images"][:, None], refs["labels"]
    train = from_dict(TrainConfig, {"epochs": STEPS, "batch_size": len(labels), "optimizer": OPTIMIZERS[opt],
                                    "checkpoint_monitor": "loss", "progress": False, "compat": compat,
                                    "class_weight": "balanced" if case in WEIGHTED else "none"})
    steps = _Steps()
    fit(model, (images[: len(labels)], labels), None, train, TrainEnv(0, tmp, 2, callbacks=[steps]))
    proba = predict_proba(model, images, batch_size=16)
    return steps.states, proba, fmap


def _errors(refs: dict[str, np.ndarray], case: str, opt: str, states: list[list[torch.Tensor]],
            proba: np.ndarray, fmap: tuple[int, int, int]) -> dict[str, float]:
    """The largest differences from Keras over every step and tensor: ``entries`` (sampled
    entries, relative to the tensor's largest sampled magnitude), ``sums`` (sum and sum of
    absolute values, relative to the latter) and ``proba`` (absolute)."""
    tensors, positions = refs[f"{case}/tensors"], refs[f"{case}/positions"]
    keras_steps = refs[f"{case}/{opt}/steps"]
    first_dense = next(t for t, row in enumerate(tensors) if row[4] == 0 and row[3] > 0)
    theirs_proba = refs[f"{case}/{opt}/proba"]
    if case == "vgg_sigmoid":  # Keras's two sigmoids, normalised as medtransfer's probabilities
        theirs_proba = theirs_proba / theirs_proba.sum(axis=1, keepdims=True)
    out = {"entries": 0.0, "sums": 0.0, "proba": float(np.abs(proba - theirs_proba).max())}
    for step in range(1, STEPS + 1):
        for t, (row, mine) in enumerate(zip(tensors, states[step - 1], strict=True)):
            theirs = keras_steps[step, t]
            shape = tuple(int(d) for d in row[2:] if d)
            flat = _to_keras(mine, shape, fmap if t == first_dense else None).ravel()
            pos = positions[t][positions[t] >= 0]
            sample = theirs[2 : 2 + len(pos)]
            out["entries"] = max(out["entries"], float(np.abs(flat[pos] - sample).max())
                                 / max(float(np.abs(sample).max()), 1e-12))
            l1 = max(float(theirs[1]), 1e-12)
            out["sums"] = max(out["sums"], abs(flat.sum() - theirs[0]) / l1,
                              abs(np.abs(flat).sum() - theirs[1]) / l1)
    return out


def _within(errors: dict[str, float]) -> bool:
    return all(errors[k] < tol for k, tol in TOLERANCE.items())


@pytest.mark.parametrize("opt", OPTIMIZERS)
@pytest.mark.parametrize("case", MODELS)
def test_compat_keras_matches_keras_every_step(refs, case, opt, tmp_path, one_thread):
    states, proba, fmap = _run(refs, case, opt, "keras", tmp_path)
    assert len(states) == STEPS
    errors = _errors(refs, case, opt, states, proba, fmap)
    assert _within(errors), errors


@pytest.mark.parametrize("opt", OPTIMIZERS)
@pytest.mark.parametrize("case", MODELS)
def test_without_compat_keras_the_steps_differ(refs, case, opt, tmp_path, one_thread):
    states, proba, fmap = _run(refs, case, opt, "torch", tmp_path)
    errors = _errors(refs, case, opt, states, proba, fmap)
    if (case, opt) in SAME_IN_BOTH:
        assert _within(errors), errors
    else:
        assert errors["entries"] > 10 * TOLERANCE["entries"], errors
