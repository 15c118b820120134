"""Check a :class:`ModelConfig` before any data is read: its name, options, image size and
weights spec, by building the model on the meta device (no memory, no weights, no files) and
passing an empty image of the study's size through it."""

from __future__ import annotations

import torch
from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.models.config import NAMED_WEIGHTS, ModelConfig
from medtransfer.models.external import split_name
from medtransfer.models.external_weights import check_external_weights
from medtransfer.models.registry import build_model, model_info
from medtransfer.models.weights import get_imagenet_weights

__all__ = ["check_model", "check_weights_spec"]


def _meta_problem(exc: BaseException) -> bool:
    """True when ``exc`` says the meta device cannot run something (not a real fault)."""
    return isinstance(exc, NotImplementedError) or "meta" in str(exc).lower()


def check_weights_spec(cfg: ModelConfig) -> None:
    """``imagenet`` / ``pretrained`` must name weights the model has (registered: our list with its
    options; ``timm:``/``torchvision:``: the library's pretrained configs; a model folder: its
    weights file, ``pretrained`` only). Files are opened later."""
    if cfg.weights not in NAMED_WEIGHTS:
        return
    if split_name(cfg.name) is not None:
        check_external_weights(cfg.name, cfg.weights)
    else:
        get_imagenet_weights(cfg.name, {"batch_norm": cfg.batch_norm, **cfg.options})


def check_model(cfg: ModelConfig, *, hw: tuple[int, int], in_chans: int) -> nn.Module | None:
    """ConfigError if ``cfg``'s model cannot be built with its options, or cannot take
    ``in_chans``-channel images of ``hw`` pixels, or its weights spec names nothing. Returns the
    model as built on the meta device (to check freezing on), or None where that cannot be."""
    model_info(cfg.name)
    check_weights_spec(cfg)
    key = (repr(cfg), tuple(hw), in_chans)
    if key not in _CHECKED:
        if len(_CHECKED) > 64:
            _CHECKED.clear()
        _CHECKED[key] = _check_build(cfg, hw, in_chans)
    return _CHECKED[key]


_CHECKED: dict[tuple[str, tuple[int, ...], int], nn.Module | None] = {}


def _check_build(cfg: ModelConfig, hw: tuple[int, int], in_chans: int) -> nn.Module | None:
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                model = build_model(cfg, num_classes=2, in_chans=in_chans, img_size=hw[0])
        except ConfigError:
            raise
        except Exception as exc:
            if not _meta_problem(exc):
                raise ConfigError(f"model '{cfg.name}' cannot be built with options "
                                  f"{dict(cfg.options)}: {type(exc).__name__}: {exc}") from exc
            return None  # built for real before training
    x = torch.zeros(2, in_chans, *hw, device="meta")
    try:
        model.eval()(x)
    except Exception as exc:
        if not _meta_problem(exc):
            raise ConfigError(
                f"'preprocess.size': model '{cfg.name}' cannot take {in_chans}-channel images of "
                f"{hw[0]}×{hw[1]} px ({type(exc).__name__}: {exc}); change preprocess.size or "
                "the model") from exc
    return model
