"""timm's Vision Transformers as chains of steps (embedding, each block, the final norm, the head),
so a ViT whose first blocks are frozen trains its last blocks on cached activations of the frozen
ones, as a CNN does (:mod:`medtransfer.strategies.cached`)."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from medtransfer.models.chain import Step, module_steps, register_body

__all__ = ["vit_body"]


def vit_body(model: nn.Module) -> list[Step]:
    """``forward_features`` of a timm ViT, step by step (no attention mask, as ``forward``)."""
    vit: VisionTransformer = model  # type: ignore[assignment]

    def embed(x: torch.Tensor) -> torch.Tensor:
        x = vit._pos_embed(vit.patch_embed(x))
        return vit.norm_pre(vit.patch_drop(x))

    # The class token and position embedding are parameters of the model itself ("").
    return [Step("embed", embed, uses=("",)), *module_steps(vit, ["blocks", "norm"])]


register_body(VisionTransformer, vit_body)
