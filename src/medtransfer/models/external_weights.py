"""Pretrained weights of ``timm:`` / ``torchvision:`` models, through the libraries' own loaders:
the library's pretrained (mostly ImageNet) weights, or a model folder's own weights file.

timm's come from the Hugging Face Hub (cached in the HF cache) or its release URLs (the torch
hub checkpoint folder); torchvision's from download.pytorch.org into the torch hub checkpoint
folder. A file already in those caches loads without the network; a missing one is downloaded
only where downloads are allowed (``MEDTRANSFER_OFFLINE=1`` forbids them), else the error names
the file to place, or ``model.weights: file:PATH`` to use a copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
import torchvision.models as tvm
from timm.models import get_pretrained_cfg
from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.models.external import check_arch, split_name
from medtransfer.models.folders import FolderModel, folder_model, is_folder_arch, timm_name
from medtransfer.models.weights import (
    _CLASSES,
    IMAGENET,
    PretrainedWeights,
    WeightsError,
    _downloads_allowed,
    missing_message,
)

__all__ = ["check_external_imagenet", "check_external_weights", "external_weights"]

_TERMS = "terms of the data set the weights were trained on apply (ImageNet: non-commercial research)"


def _timm_cfg(arch: str) -> Any:
    cfg = get_pretrained_cfg(arch)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        return None
    return cfg


def _tv_enum(arch: str) -> Any:
    try:
        return tvm.get_model_weights(arch)
    except (ValueError, KeyError):
        return None


def check_external_weights(name: str, spec: str) -> None:
    """ConfigError unless ``name`` has the weights ``spec`` (``imagenet`` or ``pretrained``) names:
    a model folder's weights file (``pretrained`` only), else the library's pretrained weights."""
    split = split_name(name)
    if split is None or not is_folder_arch(split[1]):
        check_external_imagenet(name)
        return
    found = folder_model(split[1])
    if spec != "pretrained":
        raise ConfigError(f"'model.weights': got {spec!r}, but model '{name}' is a model folder whose "
                          "weights are its own; use weights: pretrained (the folder's weights file)")
    if found.weights_file is None:
        raise ConfigError(f"'model.weights': pretrained, but the folder {found.folder} of model "
                          f"'{name}' has no weights file (one of model.safetensors, pytorch_model.bin)")


def check_external_imagenet(name: str) -> None:
    """ConfigError unless the library knows pretrained weights for ``name`` (no file is read)."""
    split = split_name(name)
    if split is None:
        raise ConfigError(f"'model.name': {name!r} is not a timm: or torchvision: name")
    lib, arch = split
    check_arch(lib, arch)
    found = _timm_cfg(arch) if lib == "timm" else _tv_enum(arch)
    if found is None or (lib == "torchvision" and not list(found)):
        hint = (f"; pretrained tags: {', '.join(timm.list_pretrained(arch.split('.')[0] + '*')[:8])}"
                if lib == "timm" and timm.list_pretrained(arch.split(".")[0] + "*") else "")
        raise ConfigError(f"'model.weights': got 'imagenet', but {lib} has no pretrained weights for "
                          f"{arch!r}{hint}; use null (random init) or file:PATH")


def _timm_weights(name: str, arch: str, cfg: Any) -> PretrainedWeights:
    tag = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    url = (f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/"
           f"{cfg.hf_hub_filename or 'model.safetensors'}" if cfg.hf_hub_id else cfg.url)
    filename = Path(cfg.url).name if cfg.url else f"{tag}.safetensors"
    return PretrainedWeights(
        name=f"{name}.imagenet", arch=name,
        source_dataset=IMAGENET if cfg.num_classes == 1000 else f"timm {tag}",
        input_size=int(cfg.input_size[-1]), mean=tuple(cfg.mean), std=tuple(cfg.std),
        class_names=_CLASSES if cfg.num_classes == 1000 and not cfg.label_offset else (),
        license=f"{cfg.license or 'see the model card'} (timm {tag}); {_TERMS}",
        origin=f"timm {timm.__version__} pretrained tag {tag}", url=url,
        filename=filename, path=_timm_cached(cfg, filename),
    )


def _timm_cached(cfg: Any, filename: str) -> Path | None:
    """The weights file in the HF cache or the torch hub checkpoint folder (no network)."""
    if cfg.file:
        return Path(cfg.file)
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        for fname in ([cfg.hf_hub_filename] if cfg.hf_hub_filename
                      else ["model.safetensors", "pytorch_model.bin"]):
            found = try_to_load_from_cache(cfg.hf_hub_id, fname)
            if isinstance(found, str):
                return Path(found)
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    return path if path.is_file() else None


def _tv_weights(name: str, member: Any) -> PretrainedWeights:
    url: str = member.url
    filename = url.rsplit("/", 1)[-1]
    digest = filename.rsplit("-", 1)[-1].split(".")[0]
    tf = member.transforms()
    return PretrainedWeights(
        name=f"{name}.imagenet", arch=name, source_dataset=IMAGENET,
        input_size=int(tf.crop_size[0]), mean=tuple(tf.mean), std=tuple(tf.std),
        class_names=tuple(member.meta.get("categories") or ()),
        license=f"BSD-3-Clause (torchvision); {_TERMS}",
        origin=f"torchvision {type(member).__name__}.{member.name} ({member.meta.get('recipe', '')})",
        url=url, filename=filename,
        sha256_prefix=digest if len(digest) >= 6 and all(c in "0123456789abcdef" for c in digest) else None,
    )


def _folder_weights(name: str, found: FolderModel) -> PretrainedWeights:
    cfg = found.pretrained_cfg
    tag = f"{found.architecture}.{cfg['tag']}" if cfg.get("tag") else found.architecture
    labels = cfg.get("label_names")
    return PretrainedWeights(
        name=f"{name}.pretrained", arch=name, source_dataset=str(cfg.get("dataset") or f"timm {tag}"),
        input_size=found.input_size, mean=found.mean, std=found.std,
        class_names=tuple(map(str, labels)) if isinstance(labels, list) else (),
        license=f"{cfg.get('license') or 'see the model card'} ({tag}); {_TERMS}",
        origin=f"model folder {found.folder} (timm {tag})", path=found.weights_file)


def _library_model(model: nn.Module, name: str, kwargs: dict[str, Any],
                   download: bool | None) -> tuple[PretrainedWeights, Any, Any, bool]:
    """The weights record, a maker of the library's pretrained model, its timm cfg and whether the
    file is on this machine."""
    lib, arch = split_name(name)  # type: ignore[misc]
    if lib == "timm" and is_folder_arch(arch):
        check_external_weights(name, "pretrained")
        found = folder_model(arch)
        make: Any = lambda: timm.create_model(timm_name(arch), pretrained=True, **kwargs)  # noqa: E731
        return _folder_weights(name, found), make, None, True
    check_external_imagenet(name)
    if lib == "timm":
        cfg = _timm_cfg(arch)
        weights = _timm_weights(name, arch, cfg)
        overlay = {"file": str(weights.path)} if weights.path is not None else None
        make = lambda: timm.create_model(arch, pretrained=True,  # noqa: E731
                                         pretrained_cfg_overlay=overlay, **kwargs)
        return weights, make, cfg, weights.path is not None
    weights = _tv_weights(name, _tv_enum(arch).DEFAULT)
    make = lambda: tvm.get_model(arch, weights=_tv_enum(arch).DEFAULT, progress=False,  # noqa: E731
                                 **kwargs)
    return weights, make, None, weights.local_path().is_file()


def external_weights(model: nn.Module, name: str, *, download: bool | None = None
                     ) -> tuple[PretrainedWeights, dict[str, torch.Tensor]]:
    """The pretrained weights of ``name`` (a model folder's own, else the library's) and their
    state dict in ``model``'s key names, loaded by timm/torchvision into a model built like
    ``model`` (same options and image size: a ViT's position embeddings are resampled)."""
    lib, _ = split_name(name)  # type: ignore[misc]
    kwargs = {k: v for k, v in getattr(model, "external_kwargs", {}).items()
              if k not in ("aux_logits", "init_weights")}
    weights, make, cfg, present = _library_model(model, name, kwargs, download)
    if not present and not _downloads_allowed(download):
        raise WeightsError(missing_message(weights, "downloads are off (MEDTRANSFER_OFFLINE)"))
    try:
        with torch.random.fork_rng(devices=[]):
            source = make()
    except Exception as exc:  # network, hub and file errors differ by library and version
        raise WeightsError(missing_message(weights, f"{lib} could not load them "
                                           f"({type(exc).__name__}: {exc})")) from exc
    if cfg is not None and weights.path is None:
        cached = _timm_cached(cfg, weights.filename or "")
        if cached is not None:
            weights = PretrainedWeights(**{**weights.__dict__, "path": cached})
    target = set(model.state_dict())
    state = {k: v for k, v in source.state_dict().items()
             if k in target or not k.startswith(("AuxLogits.", "aux1.", "aux2."))}
    return weights, state
