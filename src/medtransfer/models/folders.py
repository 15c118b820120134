"""Models named by a folder, as users download them: ``timm:local-dir:PATH`` (a folder with timm's
``config.json`` and ``model.safetensors`` / ``pytorch_model.bin``, as ``push_to_hf_hub`` /
``save_for_hf`` write it) and ``timm:hf-hub:ORG/NAME[@REVISION]`` (that repository in the
Hugging Face cache, ``$HF_HOME/hub/models--ORG--NAME/snapshots/<rev>/``), resolved offline.

The folder's ``config.json`` names the architecture and its arguments (timm reads them), the
input size and normalisation the weights expect (``pretrained_cfg``: ``input_size``, ``mean``,
``std``). An ``hf-hub:`` name is looked up in the cache first; it is downloaded only where
downloads are allowed (neither ``MEDTRANSFER_OFFLINE`` nor ``HF_HUB_OFFLINE`` is set).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medtransfer.errors import ConfigError

__all__ = ["FOLDER_SCHEMES", "FolderModel", "folder_model", "is_folder_arch", "timm_name"]

FOLDER_SCHEMES = ("local-dir:", "hf-hub:")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
                "open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def is_folder_arch(arch: str) -> bool:
    """True for ``local-dir:PATH`` and ``hf-hub:ORG/NAME`` (timm's model sources)."""
    return arch.startswith(FOLDER_SCHEMES)


@dataclass(frozen=True)
class FolderModel:
    """A model folder on this machine and what its ``config.json`` says."""

    arch: str  # as named: local-dir:PATH or hf-hub:ORG/NAME
    folder: Path
    architecture: str  # the timm architecture config.json names
    pretrained_cfg: dict[str, Any]
    weights_file: Path | None

    @property
    def input_size(self) -> int | None:
        size = self.pretrained_cfg.get("input_size")
        return int(size[-1]) if isinstance(size, list | tuple) and size else None

    @property
    def mean(self) -> tuple[float, ...] | None:
        mean = self.pretrained_cfg.get("mean")
        return tuple(float(v) for v in mean) if isinstance(mean, list | tuple) else None

    @property
    def std(self) -> tuple[float, ...] | None:
        std = self.pretrained_cfg.get("std")
        return tuple(float(v) for v in std) if isinstance(std, list | tuple) else None


def _downloads_allowed() -> bool:
    off = ("1", "true", "yes", "on")
    return (os.environ.get("MEDTRANSFER_OFFLINE", "").lower() not in off
            and os.environ.get("HF_HUB_OFFLINE", "").lower() not in off)


def _hub_folder(repo_rev: str) -> Path:
    """The snapshot folder of ``ORG/NAME[@REV]`` in the Hugging Face cache (downloaded first
    where allowed and absent)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    repo, _, rev = repo_rev.partition("@")
    if not repo or repo.count("/") != 1:
        raise ConfigError(f"'model.name': got 'hf-hub:{repo_rev}'; expected hf-hub:ORG/NAME[@REVISION]")
    found = try_to_load_from_cache(repo, "config.json", revision=rev or None)
    if isinstance(found, str):
        return Path(found).parent
    if not _downloads_allowed():
        from huggingface_hub.constants import HF_HUB_CACHE

        raise ConfigError(
            f"'model.name': hf-hub:{repo_rev} is not in the Hugging Face cache ({HF_HUB_CACHE}) and "
            "downloads are off (MEDTRANSFER_OFFLINE / HF_HUB_OFFLINE); fetch it where you are online "
            f"(huggingface-cli download {repo}) and copy the cache, or name a copy of its folder "
            "with timm:local-dir:PATH")
    try:
        folder = Path(hf_hub_download(repo, "config.json", revision=rev or None)).parent
        for name in WEIGHT_FILES[:2]:
            try:
                hf_hub_download(repo, name, revision=rev or None)
                break
            except Exception:
                continue
    except Exception as exc:  # network and hub errors differ by version
        raise ConfigError(f"'model.name': cannot fetch hf-hub:{repo_rev} ({type(exc).__name__}: "
                          f"{exc})") from exc
    return folder


def _weights_file(folder: Path) -> Path | None:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


@functools.cache
def _read(arch: str, folder: Path, mtime: int) -> FolderModel:
    config = folder / "config.json"
    if not config.is_file():
        clip = " (an open_clip folder: medtransfer reads timm's config.json, which timm's own " \
               "CLIP repositories carry)" if (folder / "open_clip_config.json").is_file() else ""
        raise ConfigError(f"'model.name': {arch}: the folder {folder} has no config.json{clip}; "
                          "expected timm's layout (config.json + model.safetensors)")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"'model.name': {config} is unreadable ({exc})") from exc
    architecture = data.get("architecture") if isinstance(data, dict) else None
    if not isinstance(architecture, str):
        raise ConfigError(f"'model.name': {config} names no 'architecture' (timm's config.json "
                          "has one, e.g. \"vit_small_patch14_dinov2\")")
    cfg = data.get("pretrained_cfg")
    pretrained = dict(cfg) if isinstance(cfg, dict) else {
        k: v for k, v in data.items() if k not in ("architecture", "num_features")}
    return FolderModel(arch, folder, architecture.split(".", 1)[0], pretrained, None)


def folder_model(arch: str) -> FolderModel:
    """The folder ``arch`` (``local-dir:PATH`` or ``hf-hub:ORG/NAME``) names and its config."""
    scheme, _, rest = arch.partition(":")
    if not rest:
        raise ConfigError(f"'model.name': got {arch!r}; name the folder after '{scheme}:'")
    folder = _hub_folder(rest) if scheme == "hf-hub" else Path(rest).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"'model.name': {arch}: no such folder {folder}")
    config = folder / "config.json"
    found = _read(arch, folder.resolve(), config.stat().st_mtime_ns if config.is_file() else 0)
    return dataclasses.replace(found, weights_file=_weights_file(found.folder))


def timm_name(arch: str) -> str:
    """The name ``timm.create_model`` builds ``arch`` from without the network: a folder model
    as ``local-dir:`` of its folder (an ``hf-hub:`` name's snapshot in the cache), else ``arch``."""
    return f"local-dir:{folder_model(arch).folder}" if is_folder_arch(arch) else arch


def folder_weights_file(name: str) -> Path | None:
    """The weights file of model ``name`` when it is a model folder (``timm:local-dir:`` /
    ``timm:hf-hub:``, or those names bare), else None."""
    arch = name.removeprefix("timm:")
    return folder_model(arch).weights_file if is_folder_arch(arch) else None
