"""Build a model and initialise it from ``ModelConfig.weights``: ImageNet, a file, or a unit of an
earlier run. Loading goes through :func:`medtransfer.models.loading.load_source_weights`, whose report
says which tensors were loaded, adapted, reset or dropped."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from timm.data import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_INCEPTION_MEAN,
    IMAGENET_INCEPTION_STD,
)
from torch import nn

from medtransfer.config import InputNorm
from medtransfer.errors import ConfigError, IntegrityError
from medtransfer.integrity import check_file, read_record
from medtransfer.models.adapt import InChansPolicy, first_conv_name
from medtransfer.models.config import MODEL_ALIASES, NAMED_WEIGHTS, ModelConfig, NormSpec
from medtransfer.models.external import split_name
from medtransfer.models.external_weights import external_weights
from medtransfer.models.folders import folder_weights_file
from medtransfer.models.keras_weights import keras_state_dict, read_keras_h5
from medtransfer.models.loading import HeadPolicy, LoadReport, load_source_weights
from medtransfer.models.registry import build_model
from medtransfer.models.weights import (
    PretrainedWeights,
    WeightsError,
    fetch,
    get_imagenet_weights,
    read_state_file,
    state_of,
)


@dataclass
class BuiltModel:
    """A model, the weights it started from, what loading did, and the input normalisation
    (per image channel) those weights expect — pass it to ``fit``/``predict_proba``."""

    model: nn.Module
    weights: PretrainedWeights | None
    report: LoadReport | None
    input_norm: InputNorm | None


def _arch_options(cfg: ModelConfig) -> dict[str, Any]:
    return {"batch_norm": cfg.batch_norm, **cfg.options}


def _run_checkpoint(path: Path) -> Path:
    """A unit folder's checkpoint (``result.json``'s ``checkpoint``, else best.pt), or ``path``;
    checked as every reader of a unit checks it (:mod:`medtransfer.integrity`: ``result.json``
    against its own digest, the file against the size and SHA-256 it records). A file with no
    ``result.json`` beside it is used as given, as with ``file:``."""
    if path.is_file():
        if (path.parent / RESULT).is_file():
            _check_unit_file(path, path.parent / RESULT)
        return path
    if not path.is_dir():
        raise WeightsError(f"'model.weights': run path {path} does not exist")
    result = path / RESULT
    if not result.is_file():
        raise WeightsError(
            f"'model.weights': {path} is not a finished unit (no result.json); point run: at a "
            "pretrain unit folder of a finished run, or at its best.pt"
        )
    checkpoint = path / str(_unit_result(result).get("checkpoint", "best.pt"))
    _check_unit_file(checkpoint, result)
    return checkpoint


RESULT = "result.json"  # a unit's record (see medtransfer.study.rundir.layout, which models may not import)
_REDO = "rerun that study to redo the unit"


def _unit_result(result: Path) -> dict[str, Any]:
    try:
        return read_record(result)
    except IntegrityError as exc:
        raise WeightsError(f"'model.weights': {exc}; {_REDO}") from exc


def _check_unit_file(file: Path, result: Path) -> None:
    """``file`` as its unit's ``result.json`` vouches for it (size and SHA-256), else WeightsError."""
    try:
        check_file(file, _unit_result(result).get("files"), result)
    except IntegrityError as exc:
        raise WeightsError(f"'model.weights': {exc}; {_REDO}, or load it unchecked with file:{file}"
                           ) from exc


def open_weights(cfg: ModelConfig, *, download: bool | None = None, model: nn.Module | None = None,
                 img_size: int = 224) -> tuple[PretrainedWeights, dict[str, torch.Tensor]]:
    """The weights ``cfg.weights`` names and their state dict (in the file's own key names,
    ``keras:`` files in ``model``'s), with the normalisation ``cfg.weights_norm`` names when the
    weights carry none. A ``timm:``/``torchvision:`` model's ImageNet weights are loaded by its
    library into a model built like ``model`` (the architecture's defaults when None)."""
    if cfg.weights_norm == "caffe" and not str(cfg.weights).startswith("keras:"):
        raise ConfigError(f"'model.weights_norm': got 'caffe' with weights {cfg.weights!r}; caffe is "
                          "Keras's BGR preprocessing for keras: weight files (VGG16, ResNet)")
    weights, state = _open_weights(cfg, download=download, model=model, img_size=img_size)
    if cfg.weights_norm is None:
        return weights, state
    mean, std = norm_values(cfg.weights_norm)
    if weights.mean is None or weights.std is None:
        return dataclasses.replace(weights, mean=mean, std=std), state
    if not _same_norm((weights.mean, weights.std), (mean, std)):
        raise ConfigError(
            f"'model.weights_norm': got {cfg.weights_norm!r}, but weights '{weights.name}' carry "
            f"their own normalisation (mean {tuple(weights.mean)}, std {tuple(weights.std)}); "
            "remove weights_norm (it names the normalisation of weights that carry none)"
        )
    return weights, state


_NORMS = {"imagenet": (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
          "inception": (IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD),
          # Keras's preprocess_input "caffe" mode on [0, 1] RGB input (the BGR order is in the
          # first conv, reversed on loading a keras: file)
          "caffe": ((123.68 / 255, 116.779 / 255, 103.939 / 255), (1 / 255, 1 / 255, 1 / 255))}


def norm_values(norm: str | NormSpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of a ``weights_norm``: a name or a :class:`NormSpec`."""
    if isinstance(norm, NormSpec):
        return norm.mean_std()
    mean, std = _NORMS[norm]
    return tuple(mean), tuple(std)


def _same_norm(a: InputNorm, b: InputNorm) -> bool:
    """Equal mean/std, a single value standing for every channel."""
    width = max(len(a[0]), len(b[0]))
    return all(tuple(x) * (width // len(x)) == tuple(y) * (width // len(y))
               for x, y in ((a[0], b[0]), (a[1], b[1])))


def _open_weights(cfg: ModelConfig, *, download: bool | None = None, model: nn.Module | None = None,
                  img_size: int = 224) -> tuple[PretrainedWeights, dict[str, torch.Tensor]]:
    spec = cfg.weights
    if spec is None:
        raise ConfigError("'model.weights' is null: there are no weights to open")
    if spec in NAMED_WEIGHTS and split_name(cfg.name) is not None:
        if model is None:
            grey = cfg.in_chans_policy is not InChansPolicy.NATIVE
            model = build_model(cfg, num_classes=2, in_chans=1 if grey else 3, img_size=224)
        return external_weights(model, cfg.name, download=download)
    if spec in NAMED_WEIGHTS:
        weights = get_imagenet_weights(cfg.name, _arch_options(cfg))
        path = fetch(weights, download=download)
        return weights, state_of(read_state_file(path), path)
    scheme, raw = spec.split(":", 1)
    path = Path(raw).expanduser()
    if scheme == "run":
        path = _run_checkpoint(path)
    if not path.is_file():
        raise WeightsError(f"'model.weights': file {path} does not exist ({spec})")
    if scheme == "keras":
        return _keras_weights(cfg, path, model, img_size)
    data = read_state_file(path)
    meta: dict[str, Any] = data["config"] if isinstance(data.get("config"), dict) else {}
    model_meta = meta.get("model")
    trained = model_meta.get("name") if isinstance(model_meta, dict) else None
    trained = MODEL_ALIASES.get(trained, trained) if isinstance(trained, str) else trained
    if trained is not None and trained != cfg.name:
        raise ConfigError(
            f"'model.weights': {path} holds a '{trained}' model but model.name is '{cfg.name}'; "
            "weights transfer into the same architecture"
        )
    extra: dict[str, Any] = data["extra"] if isinstance(data.get("extra"), dict) else {}
    norm = extra.get("input_norm")
    weights = PretrainedWeights(
        name=spec, arch=cfg.name,
        source_dataset=str(meta.get("data", "unknown")) if scheme == "run" else "unknown",
        input_size=None, mean=tuple(norm[0]) if norm else None, std=tuple(norm[1]) if norm else None,
        class_names=tuple(meta.get("classes") or ()),
        license="as the source data of that run" if scheme == "run" else "unknown (local file)",
        origin=str(path), path=path,
    )
    return weights, state_of(data, path)


def _keras_weights(cfg: ModelConfig, path: Path, model: nn.Module | None, img_size: int
                   ) -> tuple[PretrainedWeights, dict[str, torch.Tensor]]:
    """A Keras weights file as a state dict of ``model`` (see :mod:`medtransfer.models.keras_weights`)."""
    if cfg.name in ("resnet50", "resnet152") and cfg.options.get("layout") != "keras":
        raise ConfigError(f"'model.options.layout': {cfg.weights} holds a Keras ResNet (v1: strides in "
                          "each block's first conv, convs with biases), which torchvision's layout "
                          f"(v1.5) cannot compute; set model.options.layout: keras for {cfg.name}")
    if model is None:
        grey = cfg.in_chans_policy is InChansPolicy.SUM
        model = build_model(cfg, num_classes=2, in_chans=1 if grey else 3, img_size=img_size)
    conv = model.get_submodule(first_conv_name(model))
    assert isinstance(conv, nn.Conv2d)
    was_training = model.training
    with torch.no_grad():
        fmap = model.eval().forward_features(torch.zeros(1, conv.in_channels, img_size, img_size))  # type: ignore[operator]
    model.train(was_training)
    shape = tuple(int(s) for s in fmap.shape[1:])
    state = keras_state_dict(model, read_keras_h5(path), bgr=cfg.weights_norm == "caffe",
                             fmap=shape if len(shape) == 3 else None,
                             where=f"'model.weights' ({cfg.weights})")
    weights = PretrainedWeights(
        name=str(cfg.weights), arch=cfg.name, source_dataset="unknown (Keras weights file)",
        input_size=None, mean=None, std=None, class_names=(), license="unknown (local file)",
        origin=f"{path} (Keras)", path=path)
    return weights, state


def _convert_efficientnet_pytorch(
    model: nn.Module, state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """lukemelas/EfficientNet-PyTorch names (``_blocks.i._expand_conv``) → timm's."""
    blocks = [f"blocks.{s}.{b}" for s, stage in enumerate(model.blocks) for b in range(len(stage))]  # type: ignore[arg-type]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
           "_fc": "classifier"}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            i, layer = int(parts[1]), parts[2]
            expands = f"_blocks.{i}._expand_conv.weight" in state
            names = ({"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                      "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"} if expands else
                     {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                      "_bn2": "bn2"})
            if i >= len(blocks) or layer not in names:
                raise WeightsError(f"EfficientNet weights: tensor '{key}' has no place in this model")
            out[".".join([blocks[i], names[layer], *parts[3:]])] = value
        elif parts[0] in top:
            out[".".join([top[parts[0]], *parts[1:]])] = value
        else:
            raise WeightsError(f"EfficientNet weights: unexpected tensor '{key}'")
    return out


def to_model_keys(model: nn.Module, weights: PretrainedWeights,
                  state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict in ``model``'s key names (format conversion, the family's key fixes)."""
    if weights.key_format == "efficientnet_pytorch" or "_conv_stem.weight" in state:
        state = _convert_efficientnet_pytorch(model, state)
    fix = getattr(model, "checkpoint_filter", None)
    return fix(state) if callable(fix) else state


def channel_norm(weights: PretrainedWeights, data_chans: int) -> InputNorm | None:
    """The weights' mean/std for images of ``data_chans`` channels; grey images get the channel
    average (as timm does for ``in_chans=1``)."""
    if weights.mean is None or weights.std is None:
        return None
    mean, std = tuple(weights.mean), tuple(weights.std)
    if len(mean) == 1 and len(std) == 1:  # one value for every channel
        return mean * data_chans, std * data_chans
    if len(mean) == data_chans:
        return mean, std
    if data_chans == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    raise ConfigError(
        f"'model.weights': weights '{weights.name}' expect {len(mean)}-channel input, "
        f"the images have {data_chans}"
    )


def build_pretrained(
    cfg: ModelConfig,
    *,
    num_classes: int,
    in_chans: int,
    img_size: int,
    classes: list[str] | None = None,
    head: HeadPolicy = HeadPolicy.AUTO,
    download: bool | None = None,
) -> BuiltModel:
    """:func:`build_model`, then the weights of ``cfg.weights`` loaded into it (if set).

    RGB weights into grayscale images need ``in_chans_policy`` ``repeat`` (3-channel model,
    grey repeated at the input) or ``sum`` (first conv summed to one channel, reported as
    adapted); ``native`` is an error naming both.
    """
    model = build_model(cfg, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
    if cfg.weights is None:
        return BuiltModel(model, None, None, None)
    weights, state = open_weights(cfg, download=download, model=model, img_size=img_size)
    file_keys = list(state)
    state = to_model_keys(model, weights, state)
    renamed = [(a, b) for a, b in zip(file_keys, state, strict=False) if a != b]
    conv = first_conv_name(model)
    src_w, dst_w = state.get(f"{conv}.weight"), model.get_submodule(conv).weight
    if isinstance(src_w, torch.Tensor) and isinstance(dst_w, torch.Tensor) and src_w.ndim == 4 \
            and src_w.shape[1] != dst_w.shape[1] and cfg.in_chans_policy is not InChansPolicy.SUM:
        raise ConfigError(
            f"'model.in_chans_policy': got {cfg.in_chans_policy.value!r}, but weights "
            f"'{weights.name}' take {src_w.shape[1]}-channel input and the model "
            f"{dst_w.shape[1]}; allowed for 1-channel images and RGB weights: repeat (grey "
            "repeated ×3 at the input) or sum (first conv summed over RGB)"
        )
    report = load_source_weights(
        model, state, head=head, source_classes=list(weights.class_names) or None,
        target_classes=classes, adapt_input=conv if cfg.in_chans_policy is InChansPolicy.SUM else None,
    )
    if renamed and len(file_keys) == len(state):
        report.messages.insert(0, f"weights file key names mapped to the model's ({len(renamed)} "
                                  f"tensors, e.g. '{renamed[0][0]}' → '{renamed[0][1]}')")
    if folder_weights_file(cfg.name) is not None and weights.input_size not in (None, img_size):
        report.messages.append(f"weights '{weights.name}' were trained on {weights.input_size} px "
                               f"images (config.json); the model takes {img_size} px")
    return BuiltModel(model, weights, report, channel_norm(weights, in_chans))
