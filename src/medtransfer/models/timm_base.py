"""Helpers for architectures taken from timm as they are (they carry the head API we use)."""

from __future__ import annotations

from typing import Any

import timm
from torch import nn


def timm_model(arch: str, num_classes: int, in_chans: int, **kwargs: Any) -> nn.Module:
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans,
                              **kwargs)
    model.timm_arch = arch  # type: ignore[assignment]
    return model
