"""What a trained CNN looks at: Grad-CAM / Grad-CAM++ maps (pytorch-grad-cam), feature maps of a
layer, first-layer filters, activation maximisation, and the share of dead ReLU filters.

A Vision Transformer's maps are taken at its last block's input norm (``blocks[-1].norm1``), its
patch tokens laid back on their grid (pytorch-grad-cam's ``reshape_transform``; class and
register tokens dropped).

Every function takes a model and images as a numpy array (N, C, H, W): uint8 / uint16 (scaled to
[0, 1] as in training) or float already in [0, 1], plus the training ``input_norm`` if one was
used. Models are deep-copied before hooks are attached, so the caller's model is not touched.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from medtransfer.config import InputNorm, check_choice
from medtransfer.errors import ConfigError, DataError
from medtransfer.fileio import write_bytes_atomic
from medtransfer.freezing import transformer_blocks
from medtransfer.sigmoid_pair import has_sigmoid_pair, sigmoid_pair_logits

__all__ = [
    "CAM_METHODS",
    "BinaryLogitTarget",
    "SigmoidPairTarget",
    "activation_maximization",
    "cam_maps",
    "conv_layers",
    "dead_filter_share",
    "feature_maps",
    "first_layer_filters",
    "last_conv_layer",
    "overlay",
    "save_grid",
    "scale_tiles",
    "to_tensor",
]

CamMethod = Literal["gradcam", "gradcam++"]
CAM_METHODS: tuple[str, ...] = ("gradcam", "gradcam++")


class BinaryLogitTarget:
    """Grad-CAM target for a single-logit binary head: the logit for the positive class (1),
    its negative for the negative class (0)."""

    def __init__(self, category: int) -> None:
        if category not in (0, 1):
            raise ConfigError(f"'category': got {category!r}; allowed: 0, 1")
        self.sign = 1.0 if category == 1 else -1.0

    def __call__(self, model_output: Tensor) -> Tensor:
        return self.sign * (model_output[..., 0])


class SigmoidPairTarget:
    """Grad-CAM target for a sigmoid pair (:mod:`medtransfer.sigmoid_pair`): the class's dense
    output ``z`` (recovered from its log-sigmoid), not the log-sigmoid, whose gradient vanishes
    as the network grows confident."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        return sigmoid_pair_logits(model_output[..., self.category])


def to_tensor(images: np.ndarray, input_norm: InputNorm | None = None) -> Tensor:
    """(N, C, H, W) uint8/uint16/float images → normalised float32 tensor as the model saw them."""
    arr = np.asarray(images)
    if arr.ndim != 4:
        raise DataError(f"images: expected an array (N, C, H, W), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        x = torch.from_numpy(arr.astype(np.float32) / 255.0)
    elif arr.dtype == np.uint16:
        x = torch.from_numpy(arr.astype(np.float32) / 65535.0)
    elif np.issubdtype(arr.dtype, np.floating):
        if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
            raise DataError(f"images: float images must lie in [0, 1], got [{arr.min()}, {arr.max()}]")
        x = torch.from_numpy(arr.astype(np.float32))
    else:
        raise DataError(f"images: expected uint8, uint16 or float, got {arr.dtype}")
    return _normalise(x, input_norm)


def _display(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) → (N, H, W, 3) float in [0, 1] for drawing (grey replicated to RGB)."""
    x = to_tensor(images).numpy().transpose(0, 2, 3, 1)
    return np.repeat(x, 3, axis=3) if x.shape[3] == 1 else x[..., :3]


def _prepared(model: nn.Module) -> nn.Module:
    """An eval-mode copy whose ReLUs are not in-place (in-place ReLU would overwrite the conv
    activations that the CAM hooks keep) and whose parameters all require gradients (a frozen
    feature extractor would otherwise give the target layer no gradient)."""
    clone = copy.deepcopy(model).cpu().eval()
    for p in clone.parameters():
        p.requires_grad_(True)
    for m in clone.modules():
        if getattr(m, "inplace", False) is True:
            setattr(m, "inplace", False)  # noqa: B010 (the attribute is not declared on Module)
    return clone


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every 2-D convolution, in module order, with its qualified name."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def last_conv_layer(model: nn.Module, example: Tensor | None = None) -> tuple[str, nn.Conv2d]:
    """The last 2-D convolution (the usual Grad-CAM target): the last one to run on ``example``
    if given (robust to modules registered out of execution order) in ``forward_features``
    where the model has one (a conv in the head, after pooling, has no spatial map), else the
    last in module order."""
    convs = conv_layers(model)
    if not convs:
        raise ConfigError(f"{type(model).__name__} has no Conv2d layer to explain")
    if example is None:
        return convs[-1]
    ran: list[int] = []
    handles = [m.register_forward_hook(lambda _m, _i, _o, k=k: ran.append(k))
               for k, (_, m) in enumerate(convs)]
    features = getattr(model, "forward_features", None)
    try:
        with torch.no_grad():
            (features if callable(features) else model)(example)
    finally:
        for h in handles:
            h.remove()
    return convs[ran[-1]] if ran else convs[-1]


def cam_layer(model: nn.Module, example: Tensor | None = None) -> tuple[str, nn.Module]:
    """The default Grad-CAM layer: a transformer's last block's input norm (or the block), else
    the last conv layer."""
    blocks = transformer_blocks(model)
    if blocks:
        block = model.get_submodule(blocks[-1])
        norm = getattr(block, "norm1", None)
        return (f"{blocks[-1]}.norm1", norm) if isinstance(norm, nn.Module) else (blocks[-1], block)
    return last_conv_layer(model, example)


class TokenGrid:
    """pytorch-grad-cam ``reshape_transform``: transformer tokens (N, T, D) → (N, D, h, w) on the
    patch grid, the first ``prefix`` (class/register) tokens dropped; 4-D maps pass unchanged,
    except a channels-last model's (N, h, w, D) (timm's Swin: ``output_fmt`` NHWC), which is
    turned to (N, D, h, w)."""

    def __init__(self, prefix: int, grid: tuple[int, int] | None, channels_last: bool = False) -> None:
        self.prefix, self.grid, self.channels_last = prefix, grid, channels_last

    def __call__(self, x: Tensor) -> Tensor:
        if x.ndim == 4 and self.channels_last:
            return x.permute(0, 3, 1, 2)
        if x.ndim != 3:
            return x
        tokens = x[:, self.prefix :]
        h, w = self.grid or (round(tokens.shape[1] ** 0.5),) * 2
        if h * w != tokens.shape[1]:
            raise ConfigError(f"'layer': its {tokens.shape[1]} patch tokens do not fill a {h}×{w} grid")
        return tokens.reshape(len(x), h, w, -1).permute(0, 3, 1, 2)


def token_grid(model: nn.Module) -> TokenGrid:
    """The :class:`TokenGrid` of ``model`` (timm's ``num_prefix_tokens``, patch grid and
    ``output_fmt``)."""
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    return TokenGrid(int(getattr(model, "num_prefix_tokens", 0) or 0),
                     (int(grid[0]), int(grid[1])) if grid is not None else None,
                     channels_last=str(getattr(model, "output_fmt", "NCHW")) == "NHWC")


def _layer(model: nn.Module, name: str | None, example: Tensor | None = None) -> nn.Module:
    if name is None:
        return cam_layer(model, example)[1]
    modules = dict(model.named_modules())
    if name not in modules:
        convs = ", ".join(n for n, _ in conv_layers(model))
        raise ConfigError(
            f"'layer': got {name!r}; not a module of {type(model).__name__}. Conv layers: {convs}"
        )
    return modules[name]


def cam_maps(
    model: nn.Module,
    images: np.ndarray,
    *,
    method: CamMethod = "gradcam",
    target: Literal["predicted"] | int | Sequence[int] = "predicted",
    layer: str | None = None,
    input_norm: InputNorm | None = None,
    batch_size: int = 16,
) -> np.ndarray:
    """Class activation maps (N, H, W) in [0, 1] at the input size.

    ``target``: ``"predicted"`` (the model's decision per image), a class index for all images,
    or one index per image. ``layer``: a module name (default: the last conv layer; a
    transformer's last block's input norm, see :func:`cam_layer`).
    """
    check_choice("method", method, CAM_METHODS)
    net = _prepared(model)
    x = to_tensor(images, input_norm)
    with torch.no_grad():
        logits = torch.cat([net(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    single = logits.shape[1] == 1
    if isinstance(target, str):
        if target != "predicted":
            raise ConfigError(f"'target': got {target!r}; allowed: 'predicted', a class index or a list")
        cats = (logits[:, 0] >= 0).long().tolist() if single else logits.argmax(1).tolist()
    elif isinstance(target, int):
        cats = [target] * len(x)
    else:
        cats = [int(t) for t in target]
        if len(cats) != len(x):
            raise ConfigError(f"'target': {len(cats)} classes for {len(x)} images")
    n_classes = 2 if single else logits.shape[1]
    if any(not 0 <= c < n_classes for c in cats):
        raise ConfigError(f"'target': class indices must lie in [0, {n_classes - 1}], got {cats}")
    pair = SigmoidPairTarget if has_sigmoid_pair(net) else ClassifierOutputTarget
    targets = [BinaryLogitTarget(c) if single else pair(c) for c in cats]
    cam_cls = GradCAM if method == "gradcam" else GradCAMPlusPlus
    out = []
    with cam_cls(model=net, target_layers=[_layer(net, layer, x[:1])],
                 reshape_transform=token_grid(net)) as cam:
        for i in range(0, len(x), batch_size):
            out.append(cam(input_tensor=x[i : i + batch_size], targets=targets[i : i + batch_size]))
    return np.concatenate(out).astype(np.float32)


def overlay(images: np.ndarray, maps: np.ndarray, image_weight: float = 0.55) -> np.ndarray:
    """Heat-map overlays (N, H, W, 3) uint8 of ``maps`` (N, H, W) in [0, 1] on the images."""
    shown = _display(images).astype(np.float32)
    if maps.shape != shown.shape[:3]:
        raise DataError(f"maps: expected shape {shown.shape[:3]}, got {maps.shape}")
    return np.stack([show_cam_on_image(img, m, use_rgb=True, image_weight=image_weight)
                     for img, m in zip(shown, np.clip(maps, 0, 1), strict=True)])


def feature_maps(
    model: nn.Module, images: np.ndarray, layer: str, *, input_norm: InputNorm | None = None
) -> np.ndarray:
    """Output of module ``layer`` for the images, (N, C, h, w) float32 (feature maps)."""
    net = _prepared(model)
    store: list[Tensor] = []
    handle = _layer(net, layer).register_forward_hook(lambda _m, _i, o: store.append(o.detach()))
    try:
        with torch.no_grad():
            net(to_tensor(images, input_norm))
    finally:
        handle.remove()
    return store[0].numpy().astype(np.float32)


def first_layer_filters(model: nn.Module) -> np.ndarray:
    """Weights of the first conv layer (out, in, kh, kw), each filter min-max scaled to [0, 1]."""
    convs = conv_layers(model)
    if not convs:
        raise ConfigError(f"{type(model).__name__} has no Conv2d layer")
    weights = convs[0][1].weight.detach().cpu().numpy().astype(np.float32)
    lo = weights.min(axis=(1, 2, 3), keepdims=True)
    span = weights.max(axis=(1, 2, 3), keepdims=True) - lo
    return np.divide(weights - lo, span, out=np.zeros_like(weights), where=span > 0)


def activation_maximization(
    model: nn.Module,
    layer: str,
    filters: Sequence[int],
    *,
    image_shape: tuple[int, int, int],
    seed: int,
    steps: int = 64,
    lr: float = 0.05,
    input_norm: InputNorm | None = None,
) -> np.ndarray:
    """Images (F, C, H, W) in [0, 1] that maximise the mean activation of each chosen filter of
    ``layer``: gradient ascent on the input (Adam) from a seeded random start."""
    if steps < 1:
        raise ConfigError(f"'steps': got {steps!r}; allowed: an integer >= 1")
    net = _prepared(model)
    for p in net.parameters():
        p.requires_grad_(False)
    module = _layer(net, layer)
    store: list[Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, o: store.append(o))
    gen = torch.Generator().manual_seed(seed)
    start = 0.5 + 0.1 * torch.randn((len(filters), *image_shape), generator=gen)
    # Optimise an unconstrained variable through a sigmoid so the image stays in (0, 1).
    raw = torch.logit(start.clamp(0.01, 0.99)).requires_grad_(True)
    opt = torch.optim.Adam([raw], lr=lr)
    idx = torch.tensor(list(filters))
    try:
        for _ in range(steps):
            store.clear()
            img = torch.sigmoid(raw)
            net(_normalise(img, input_norm))
            act = store[0]
            if idx.max() >= act.shape[1]:
                raise ConfigError(
                    f"'filters': layer {layer!r} has {act.shape[1]} filters, got {list(filters)}"
                )
            loss = -act[torch.arange(len(idx)), idx].mean(dim=(1, 2)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        handle.remove()
    return torch.sigmoid(raw).detach().numpy().astype(np.float32)


def _normalise(x: Tensor, input_norm: InputNorm | None) -> Tensor:
    if input_norm is None:
        return x
    mean = torch.tensor(list(input_norm[0]), dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(list(input_norm[1]), dtype=torch.float32).view(1, -1, 1, 1)
    return (x - mean) / std


def dead_filter_share(
    model: nn.Module, images: np.ndarray, *, input_norm: InputNorm | None = None, batch_size: int = 32
) -> dict[str, float]:
    """Per ReLU / ReLU6 call: the share of its channels that are zero for every image and position
    of the batch (dead filters). Each call is named by the conv / linear layer that ran just before
    it (so models with and without batch norm line up, and a ReLU module reused in several places
    is counted per place). Empty for models without ReLUs (e.g. SiLU networks: nothing is dead)."""
    net = _prepared(model)
    alive: dict[str, Tensor] = {}
    state = {"last": "", "seen": set()}  # per forward pass: last weight layer run, keys used
    handles = [net.register_forward_pre_hook(lambda _m, _i: state.update(last="", seen=set()))]

    def mark(name: str) -> Callable[..., None]:
        return lambda _m, _i, _o: state.update(last=name)

    def relu(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _i: object, o: Tensor) -> None:
            key = str(state["last"] or name)
            seen: set[str] = state["seen"]  # type: ignore[assignment]
            while key in seen:
                key += "'"
            seen.add(key)
            on = o > 0  # channels: dim 1 of (N, C, H, W), the last dim of (N, ..., C)
            fired = on.flatten(2).any(2).any(0) if o.ndim == 4 else on.reshape(-1, o.shape[-1]).any(0)
            alive[key] = alive[key] | fired if key in alive else fired
        return hook

    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            handles.append(m.register_forward_hook(mark(name)))
        elif isinstance(m, nn.ReLU | nn.ReLU6):
            handles.append(m.register_forward_hook(relu(name)))
    x = to_tensor(images, input_norm)
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                net(x[i : i + batch_size])
    finally:
        for h in handles:
            h.remove()
    return {name: float(1.0 - fired.float().mean()) for name, fired in alive.items()}


def scale_tiles(maps: np.ndarray) -> list[np.ndarray]:
    """2-D maps (..., h, w), e.g. one image's feature maps (C, h, w) or filters (F, kh, kw), as a
    list of tiles each min-max scaled to [0, 1] (constant maps become 0) for :func:`save_grid`."""
    arr = np.asarray(maps, dtype=np.float32)
    if arr.ndim < 2:
        raise DataError(f"maps: expected (..., h, w), got shape {arr.shape}")
    flat = arr.reshape(-1, *arr.shape[-2:])
    lo = flat.min(axis=(1, 2), keepdims=True)
    span = flat.max(axis=(1, 2), keepdims=True) - lo
    return list(np.divide(flat - lo, span, out=np.zeros_like(flat), where=span > 0))


def save_grid(
    tiles: Sequence[np.ndarray], path: Path, *, columns: int, scale: int = 1, pad: int = 2
) -> Path:
    """Write equally sized tiles ((H, W) or (H, W, 3), uint8 or float in [0, 1]) as one PNG grid."""
    if not tiles:
        raise DataError("save_grid: no tiles")
    arrs = []
    for t in tiles:
        a = np.asarray(t)
        a = (np.clip(a, 0, 1) * 255).astype(np.uint8) if a.dtype != np.uint8 else a
        arrs.append(np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a)
    h, w = arrs[0].shape[:2]
    if any(a.shape[:2] != (h, w) for a in arrs):
        raise DataError("save_grid: tiles must all have the same size")
    rows = -(-len(arrs) // columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, a in enumerate(arrs):
        r, c = divmod(i, columns)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = a
    img = Image.fromarray(grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
    write_bytes_atomic(path, buf.getvalue())  # a full disk: DiskFullError, the old file kept
    return path
