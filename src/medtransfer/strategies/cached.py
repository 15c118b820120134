"""Train only the trainable tail of a partly frozen model on activations of its frozen prefix,
computed once instead of every epoch.

This equals training the whole model with those layers frozen exactly when the frozen prefix
is a fixed function of the image: no augmentation before it, no dropout in it, and its batch
norm layers in eval mode (``bn_policy: frozen``). :func:`plan_cache` checks all of that —
statically, then by running the prefix in training mode twice against eval mode — and says why
when caching does not apply, so the caller falls back to the full path.

Training reuses :func:`medtransfer.train.fit`: the activations are its batch source
(:class:`~medtransfer.train.TensorBatches`) and a wrapper module runs only the tail on them;
the wrapper's state dict is the full model's, so checkpoints are the same files the full path
writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from timm.layers import DropPath
from torch import Tensor, nn

from medtransfer.config import InputNorm, to_dict
from medtransfer.models.chain import Step, forward_chain, run_chain
from medtransfer.train import Augment, FitResult, TensorBatches, TrainConfig, TrainEnv, fit
from medtransfer.train.batches import input_norm_tensors, unit_float
from medtransfer.train.precision import resolve_precision

_BN = nn.modules.batchnorm._BatchNorm
PREFIX_VERSION = 1


@dataclass
class PrefixSplit:
    """``steps[:cut]`` are frozen and cached; ``steps[cut:]`` train."""

    steps: list[Step]
    cut: int
    prefix_modules: list[str]

    def prefix(self, x: Tensor) -> Tensor:
        return run_chain(self.steps[: self.cut], x)

    def tail(self, x: Tensor) -> Tensor:
        return run_chain(self.steps[self.cut :], x)

    @property
    def boundary(self) -> str:
        return self.steps[self.cut].name


@dataclass
class CachePlan:
    """A split to train on cached activations, or None and the reason for the full path."""

    split: PrefixSplit | None
    reason: str


def model_input(images: np.ndarray, dev: torch.device, input_norm: InputNorm | None) -> Tensor:
    """Images as ``fit`` feeds them to the model: [0, 1] floats, then ``(x - mean) / std``."""
    mean, std = input_norm_tensors(input_norm, images.shape[1], dev)
    return (unit_float(images, dev) - mean) / std


def _trace(model: nn.Module, steps: list[Step], x: Tensor) -> tuple[list[set[str]], Tensor]:
    """Which modules run in each step (forward hooks), and the chain's output, in eval mode."""
    seen: list[set[str]] = [set() for _ in steps]
    current = [0]
    handles = [
        m.register_forward_hook(lambda mod, args, out, name=name: seen[current[0]].add(name))
        for name, m in model.named_modules()
    ]
    try:
        with torch.no_grad():
            for i, step in enumerate(steps):
                current[0] = i
                x = step.fn(x)
    finally:
        for h in handles:
            h.remove()
    return seen, x


def _stochastic(name: str, module: nn.Module) -> str | None:
    if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0 and module.training:
        return f"dropout '{name}' (p={module.p}) sits in the frozen part and draws a new mask each step"
    if isinstance(module, DropPath) and module.drop_prob > 0 and module.training:
        return f"stochastic depth '{name}' sits in the frozen part and drops paths at random"
    if isinstance(module, _BN) and module.training:
        return (f"batch norm '{name}' in the frozen part is in train mode (bn_policy train or "
                "stats), so its output depends on the batch")
    return None


def plan_cache(
    model: nn.Module,
    sample: np.ndarray,
    *,
    augment: Augment | None,
    input_norm: InputNorm | None,
    train_mode: Callable[[nn.Module], None],
    device: str | torch.device = "cpu",
    n_images: int = 0,
    max_bytes: float = 4 * 2**30,
) -> CachePlan:
    """Whether the frozen prefix of ``model`` (frozen with :func:`medtransfer.freezing.freeze`)
    can be cached for ``n_images`` images like ``sample`` (a few images, for probing)."""
    if augment is not None:
        return CachePlan(None, "augmentation changes the frozen layers' input every epoch")
    params = dict(model.named_parameters())
    if all(p.requires_grad for p in params.values()):
        return CachePlan(None, "nothing is frozen")
    dev = torch.device(device)
    model.to(dev).eval()
    x = model_input(sample, dev, input_norm)
    steps = forward_chain(model)
    seen, out = _trace(model, steps, x)
    for names, step in zip(seen, steps, strict=True):
        names.update(step.uses)
    with torch.no_grad():
        if not torch.allclose(out, model(x), rtol=1e-4, atol=1e-5):
            return CachePlan(None, f"{type(model).__name__}'s forward chain does not reproduce its forward")
    modules = dict(model.named_modules())

    def trains(name: str) -> bool:
        return any(p.requires_grad for p in modules[name].parameters(recurse=False))

    cut = next((i for i, names in enumerate(seen) if any(trains(n) for n in names)), len(steps))
    if cut == 0:
        return CachePlan(None, f"the first step '{steps[0].name}' trains, so there is no frozen prefix")
    if cut == len(steps):
        return CachePlan(None, "no step of the forward chain has trainable parameters")
    prefix_names = sorted(set().union(*seen[:cut]))
    split = PrefixSplit(steps, cut, prefix_names)
    train_mode(model)
    try:
        for name in prefix_names:
            reason = _stochastic(name, modules[name])
            if reason:
                return CachePlan(None, reason)
        # Anything the checks do not know (functional dropout, custom layers): run it twice in
        # training mode (the RNG advances between runs) and once in eval mode, and compare.
        cuda = [dev] if dev.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=cuda):
            first = split.prefix(x)
            second = split.prefix(x)
            model.eval()
            reference = split.prefix(x)
        if not (torch.equal(first, second) and torch.equal(first, reference)):
            return CachePlan(None, "the frozen part gives different outputs in training mode "
                             "than in eval mode (a stochastic or batch-dependent layer)")
    finally:
        model.eval()
    size = reference[0].numel() * reference.element_size() * n_images
    if size > max_bytes:
        return CachePlan(None, f"the cached activations would take {size / 2**30:.2f} GiB "
                         f"(limit {max_bytes / 2**30:.2f} GiB)")
    where = split.boundary
    return CachePlan(split, f"frozen prefix ({cut} steps, up to '{where}') computed once")


def prefix_activations(split: PrefixSplit, images: np.ndarray, *, batch_size: int,
                       input_norm: InputNorm | None, device: torch.device,
                       precision: str = "fp32", channels_last: bool = False) -> Tensor:
    """The prefix outputs of ``images`` in eval mode, without gradients, as float32 (computed
    under autocast for ``precision`` bf16/fp16; from NHWC inputs with ``channels_last``, the
    model's weights being NHWC too), in NCHW layout."""
    amp = resolve_precision(precision, device, "train.precision")
    layout = torch.channels_last if channels_last else torch.contiguous_format
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = model_input(images[start : start + batch_size], device, input_norm)
            with amp.autocast():
                y = split.prefix(x.contiguous(memory_format=layout) if x.ndim == 4 else x)
            out.append((y if y.dtype == torch.float32 else y.float()).contiguous())
    return torch.cat(out)


def state_hash(tensors: Iterable[tuple[str, Tensor]]) -> str:
    """sha256 of named tensors (names, dtypes, shapes, values), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def images_fingerprint(images: np.ndarray) -> str:
    digest = hashlib.sha256(f"{images.dtype}|{images.shape}".encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    return digest.hexdigest()


def prefix_signature(model: nn.Module, split: PrefixSplit, input_norm: InputNorm | None,
                     device: torch.device, precision: str = "fp32", channels_last: bool = False) -> str:
    """What the prefix activations depend on besides the images: the model class, the chain's
    steps up to the cut, each prefix module's type and settings, their parameters and buffers
    (not the tail's), the input normalisation, the device type, a reduced precision and NHWC."""
    modules = dict(model.named_modules())
    layers = [(name, type(modules[name]).__qualname__, modules[name].extra_repr())
              for name in split.prefix_modules]
    tensors = [(f"{name}.{key}", t) for name in split.prefix_modules
               for key, t in (*modules[name].named_parameters(recurse=False),
                              *modules[name].named_buffers(recurse=False))]
    return json.dumps({
        "v": PREFIX_VERSION, "arch": type(model).__qualname__,
        "steps": [s.name for s in split.steps[: split.cut]], "layers": layers,
        "weights": state_hash(tensors),
        "norm": None if input_norm is None else [list(map(float, v)) for v in input_norm],
        "in_chans_policy": getattr(model, "in_chans_policy", None), "device": device.type,
        # Only when not fp32, so fp32 keys (and caches) stay as they were.
        **({} if precision == "fp32" else {"precision": precision}),
        **({"channels_last": True} if channels_last else {}),
    }, sort_keys=True)


def prefix_key(signature: str, images: np.ndarray) -> str:
    """Disk-cache key of the prefix activations of ``images`` (``signature``: :func:`prefix_signature`)."""
    return f"prefix:{signature}|{images_fingerprint(images)}"


class TailModel(nn.Module):
    """What ``fit`` trains on the cached path: activations of the frozen prefix → ``tail``.

    ``model`` is a submodule, so parameters (and their order), ``.to`` and ``train``/``eval``
    are the full model's; ``state_dict``/``load_state_dict`` are delegated to it, so the
    checkpoints fit writes hold the full model under its own names.
    """

    def __init__(self, model: nn.Module, tail: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.model = model
        self._tail = tail

    def forward(self, activations: Tensor) -> Tensor:
        return self._tail(activations)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        return self.model.load_state_dict(state_dict, strict=strict, assign=assign)


def fit_on_activations(
    model: nn.Module,
    tail: Callable[[Tensor], Tensor],
    train_acts: Tensor,
    y_train: np.ndarray,
    val: tuple[Tensor, np.ndarray] | None,
    cfg: TrainConfig,
    env: TrainEnv,
    *,
    train_mode: Callable[[nn.Module], None] | None = None,
) -> FitResult:
    """``fit`` of ``model`` where each sample's forward pass is ``tail(activation)``.

    ``checkpoint_every: auto`` means ``end`` here: an epoch on activations is so short that
    writing the whole model's checkpoints every epoch would dominate it. The checkpoints record
    ``cfg`` as given, as the full path's do.
    """
    if cfg.checkpoint_every == "auto":
        if env.checkpoint_config is None:
            env = env.replace(checkpoint_config={"train": to_dict(cfg)})
        cfg = dataclasses.replace(cfg, checkpoint_every="end")
    k, dev = env.num_classes, env.device
    train_src = TensorBatches("train", train_acts, np.asarray(y_train), k, dev)
    val_src = None if val is None else TensorBatches("val", val[0], np.asarray(val[1]), k, dev)
    mode = None if train_mode is None else (lambda w: train_mode(w.model))
    return fit(TailModel(model, tail), train_src, val_src, cfg, env, train_mode=mode)
