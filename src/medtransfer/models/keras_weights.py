"""Keras weight files (``model.weights: keras:PATH``) as a state dict of the model they go into.

Reads both HDF5 layouts Keras writes with ``save_weights``: Keras 2's (``*.h5``, the layout of the
published Keras-application files; layers listed in ``layer_names`` in model order) and Keras 3's
(``*.weights.h5``: ``layers/<class>_<n>/vars/<i>``, numbered per layer class in model order).
Either way the weights are matched to the model **by order within each layer class** — the k-th
Keras ``Conv2D`` to the k-th torch conv, likewise dense and batch-norm layers — as Keras's own
``load_weights`` matches a Keras-2 file; every shape is checked (any mismatch is an error naming
the layer). The torch order is the model's registration order, or its ``keras_order()``
where Keras builds its layers in another order (ResNet's shortcut).

Conversions: conv kernels HWIO → OIHW; dense kernels (in, out) → (out, in), the first dense
layer after a flattened feature map with its inputs reordered from Keras's (H, W, C) to torch's
(C, H, W); batch norm ``gamma, beta, moving_mean, moving_variance`` → ``weight, bias,
running_mean, running_var`` (``scale=False``: weight 1). A Keras conv bias where the torch conv
has none (a conv followed by batch norm, as in the seeds' AlexNet) goes into that batch norm's
running mean (``BN(x + b)`` with mean μ is ``BN(x)`` with mean μ − b: exact).

The weights carry no input normalisation: the model computes what the Keras model computed on
the same array (what the seeds fed it, [0, 1] pixels, without Keras's ``preprocess_input``).
``model.weights_norm`` names one: ``imagenet`` (Keras's "torch" mode, DenseNet), ``inception``
("tf" mode) or ``caffe`` (VGG16, ResNet: BGR, mean subtracted on the 0–255 scale), for which the
first conv's input channels are reversed here so RGB images can be fed.

Reading needs ``h5py`` (``pip install 'medtransfer[keras]'``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medtransfer.models.weights import WeightsError

__all__ = ["KerasLayer", "keras_state_dict", "read_keras_h5"]

KerasLayer = tuple[str, list[np.ndarray]]  # (layer name, its weight arrays in Keras order)
_CLASSES = {nn.Conv2d: "conv", nn.Linear: "dense", nn.modules.batchnorm._BatchNorm: "bn"}
# Keras 3's per-class names in a .weights.h5 file
_KERAS3_CLASSES = {"conv2d": "conv", "dense": "dense", "batch_normalization": "bn"}

def read_keras_h5(path: Path) -> list[KerasLayer]:
    """The layers with weights of a Keras weights file, in model order within each class."""
    try:
        import h5py
    except ImportError:
        raise WeightsError(f"'model.weights': reading the Keras file {path} needs h5py "
                           "(pip install 'medtransfer[keras]')") from None
    try:
        with h5py.File(path, "r") as f:
            group = f.get("model_weights", f)  # a whole saved model keeps its weights there
            if "layer_names" in group.attrs:  # Keras 2 layout
                return [(_text(n), [np.asarray(group[_text(n)][_text(w)])
                                    for w in group[_text(n)].attrs["weight_names"]])
                        for n in group.attrs["layer_names"] if len(group[_text(n)].attrs["weight_names"])]
            if "layers" in f:  # Keras 3 layout
                out = [(name, [np.asarray(layer["vars"][k]) for k in sorted(layer["vars"], key=int)])
                       for name, layer in f["layers"].items() if "vars" in layer and len(layer["vars"])]
                return sorted(out, key=lambda item: _natural(item[0]))
    except (OSError, KeyError, ValueError) as exc:
        raise WeightsError(f"'model.weights': cannot read the Keras weights file {path}: {exc}") from exc
    raise WeightsError(f"'model.weights': {path} is not a Keras weights file (neither Keras 2's "
                       "layer_names nor Keras 3's layers/ group)")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _natural(name: str) -> tuple[str, int]:
    match = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
    assert match is not None
    return match.group(1), int(match.group(2) or 0)


def _kind_of(module: nn.Module) -> str | None:
    return next((k for cls, k in _CLASSES.items() if isinstance(module, cls)), None)


def _keras_kind(name: str, arrays: list[np.ndarray]) -> str:
    base = _natural(name)[0]
    if base in _KERAS3_CLASSES:
        return _KERAS3_CLASSES[base]
    if arrays[0].ndim == 4:
        return "conv"
    if arrays[0].ndim == 2:
        return "dense"
    if len(arrays) in (3, 4) and all(a.ndim == 1 for a in arrays):
        return "bn"
    raise WeightsError(f"Keras layer '{name}' (weights {[a.shape for a in arrays]}) is neither a "
                       "Conv2D, a Dense nor a BatchNormalization; medtransfer cannot place it")


def _torch_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    order = getattr(model, "keras_order", None)
    names = list(order()) if callable(order) else [n for n, _ in model.named_modules()]
    modules = dict(model.named_modules())
    return [(n, modules[n]) for n in names if _kind_of(modules[n]) is not None]


def _flat_shape(linear: nn.Linear, fmap: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
    """(C, H, W) of the feature map the first dense layer reads flattened, or None when it reads
    pooled features (one value per channel)."""
    if fmap is None:
        return None
    c, h, w = fmap
    if linear.in_features == c:
        return None
    for k in range(1, min(h, w) + 1):
        if c * (h // k) * (w // k) == linear.in_features:
            return (c, h // k, w // k)
    raise WeightsError(f"'model.weights': the model's first dense layer takes {linear.in_features} "
                       f"inputs, which is no flattening of its {c}×{h}×{w} feature map; for VGG16 "
                       "at other sizes than 224 px set model.options.layout: keras")


def _convert(kind: str, arrays: list[np.ndarray], module: nn.Module, prefix: str,
             flat: tuple[int, int, int] | None) -> dict[str, np.ndarray]:
    if kind == "conv":
        out = {f"{prefix}.weight": arrays[0].transpose(3, 2, 0, 1)}
    elif kind == "dense":
        kernel = arrays[0]
        if flat is not None:
            c, h, w = flat
            kernel = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1)
        out = {f"{prefix}.weight": kernel.T}
    else:
        assert isinstance(module, nn.modules.batchnorm._BatchNorm)
        names = ["weight", "bias", "running_mean", "running_var"][-len(arrays):]
        out = {f"{prefix}.{n}": a for n, a in zip(names, arrays, strict=True)}
        if len(arrays) == 3:  # scale=False: no gamma
            out[f"{prefix}.weight"] = np.ones_like(arrays[0])
        return out
    if len(arrays) > 1:
        out[f"{prefix}.bias"] = arrays[1]
    return out


def _fold_conv_biases(model: nn.Module, state: dict[str, np.ndarray], where: str) -> None:
    """Move each Keras conv bias the torch conv has no slot for into the batch norm after it."""
    names = [n for n, _ in model.named_modules()]
    modules = dict(model.named_modules())
    for i, name in enumerate(names):
        module = modules[name]
        if not isinstance(module, nn.Conv2d) or module.bias is not None or f"{name}.bias" not in state:
            continue
        bias = state.pop(f"{name}.bias")
        bn = next((n for n in names[i + 1:] if _kind_of(modules[n]) in ("bn", "conv")), None)
        if bn is None or _kind_of(modules[bn]) != "bn":
            raise WeightsError(f"{where}: Keras gives conv '{name}' a bias, but the model's conv has "
                               "none and no batch norm follows it to take it")
        state[f"{bn}.running_mean"] = state[f"{bn}.running_mean"] - bias


def keras_state_dict(model: nn.Module, layers: Sequence[KerasLayer], *, bgr: bool = False,
                     fmap: tuple[int, int, int] | None = None,
                     where: str = "Keras weights") -> dict[str, torch.Tensor]:
    """``layers`` (a Keras model's weights, :func:`read_keras_h5`) as a state dict in ``model``'s
    key names, matched by order within each layer class. ``fmap``: the (C, H, W) shape of the
    model's feature map, for the first dense layer's flatten order; ``bgr``: the first conv's
    input channels reversed (Keras's Caffe-mode weights read BGR)."""
    ours: dict[str, list[tuple[str, nn.Module]]] = {"conv": [], "dense": [], "bn": []}
    for name, module in _torch_layers(model):
        ours[str(_kind_of(module))].append((name, module))
    theirs: dict[str, list[KerasLayer]] = {"conv": [], "dense": [], "bn": []}
    for name, arrays in layers:
        theirs[_keras_kind(name, arrays)].append((name, arrays))
    counts = {k: (len(theirs[k]), len(ours[k])) for k in ours}
    extra = {k: c for k, c in counts.items() if c[0] > c[1] or (c[0] and c[0] != c[1] and k != "dense")}
    if extra:
        raise WeightsError(f"{where}: the file's layers do not fit the model (Keras / torch count per "
                           f"class: {counts}); it holds another architecture")
    state: dict[str, np.ndarray] = {}
    first_dense = True
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None  # its shape follows the classes: checked on loading
    for kind in ("conv", "bn", "dense"):
        for (kname, arrays), (prefix, module) in zip(theirs[kind], ours[kind], strict=False):
            flat = None
            if kind == "dense" and first_dense:
                assert isinstance(module, nn.Linear)
                flat, first_dense = _flat_shape(module, fmap), False
            converted = _convert(kind, arrays, module, prefix, flat)
            own = module.state_dict()
            for key, value in converted.items():
                local = key[len(prefix) + 1:]
                if module is not head and local in own and tuple(own[local].shape) != value.shape and not (
                        kind == "conv" and local == "weight" and own[local].shape[0] == value.shape[0]):
                    raise WeightsError(f"{where}: Keras layer '{kname}' gives {local} of shape "
                                       f"{value.shape}, but '{prefix}' needs {tuple(own[local].shape)}")
            state.update(converted)
    _fold_conv_biases(model, state, where)
    if bgr and ours["conv"]:
        key = f"{ours['conv'][0][0]}.weight"
        if state[key].shape[1] == 3:
            state[key] = state[key][:, ::-1]
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}
