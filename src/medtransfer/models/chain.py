"""A model as a chain of steps whose composition is its forward pass.

Strategies use the chain to cut a model into a frozen prefix, computed once, and a trainable
tail. A model may define ``forward_chain()``; a model family may register one with
:func:`register_chain`, or the steps of its ``forward_features`` alone with :func:`register_body`
(or a ``body_chain()`` method) and ``forward_head`` follows; anything else is the two steps
``forward_features`` → ``forward_head``.
Steps are as fine as the architecture allows: a residual or dense block is one step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

StepFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Step:
    """``name`` is the module path when the step is one module, else a method name; ``uses``
    names modules whose own parameters the step reads without calling them (a ViT's class token
    and position embedding live on the model itself, ``""``)."""

    name: str
    fn: StepFn
    uses: tuple[str, ...] = ()


_CHAINS: list[tuple[type, Callable[[nn.Module], list[Step]]]] = []
_BODIES: list[tuple[type, Callable[[nn.Module], list[Step]]]] = []


def register_chain(cls: type, fn: Callable[[nn.Module], list[Step]]) -> None:
    """Use ``fn(model)`` as the chain of every ``cls`` instance (for classes we do not own)."""
    _CHAINS.append((cls, fn))


def register_body(cls: type, fn: Callable[[nn.Module], list[Step]]) -> None:
    """Use ``fn(model)`` as the steps of ``forward_features`` of every ``cls`` instance."""
    _BODIES.append((cls, fn))


def feature_chain(model: nn.Module) -> list[Step]:
    """The steps of the model's ``forward_features``: its ``body_chain()``, a registered body,
    else the one step ``forward_features``."""
    own = getattr(model, "body_chain", None)
    if callable(own):
        return list(own())
    for cls, fn in _BODIES:
        if isinstance(model, cls):
            return fn(model)
    return [Step("forward_features", model.forward_features)]  # type: ignore[arg-type]


def module_steps(model: nn.Module, names: Iterable[str]) -> list[Step]:
    """Each named submodule as a step, and each child of a named ``nn.Sequential`` in turn."""
    steps: list[Step] = []
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, nn.Sequential):
            steps += module_steps(model, [f"{name}.{child}" for child, _ in module.named_children()])
        else:
            steps.append(Step(name, module))
    return steps


def forward_chain(model: nn.Module) -> list[Step]:
    """The model's steps (see the module docstring)."""
    own = getattr(model, "forward_chain", None)
    if callable(own):
        return list(own())
    for cls, fn in _CHAINS:
        if isinstance(model, cls):
            return fn(model)
    return [*feature_chain(model), Step("forward_head", model.forward_head)]  # type: ignore[arg-type]


def run_chain(steps: list[Step], x: torch.Tensor) -> torch.Tensor:
    for step in steps:
        x = step.fn(x)
    return x
