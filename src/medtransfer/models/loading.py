"""Carry weights from a source model into a target model: every tensor must fit (any mismatch
outside the output layer is an error, never skipped); the output layer is kept or reset as
:class:`HeadPolicy` says; a grey-image model's first conv takes RGB weights summed over channels.

A model with a configured head (``model.head``) takes the source's own head tensors (e.g. an
ImageNet ``fc``) as dropped, and its hidden head layers from the source when the source has
them all (a pretraining with the same head), else fresh (ImageNet, CheXNet files)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from timm.models import adapt_input_conv
from torch import nn

from medtransfer.errors import DataError


class HeadPolicy(enum.StrEnum):
    AUTO = "auto"  # reset the output layer when the class count differs, else keep it
    KEEP = "keep"
    RESET = "reset"


@dataclass
class LoadReport:
    """What :func:`load_source_weights` did with each tensor: ``loaded`` as is, ``adapted``
    (changed to fit, e.g. the first conv summed over RGB), ``reset`` (target tensors left at
    their fresh initialisation) and ``dropped`` (source tensors not used)."""

    loaded: list[str] = field(default_factory=list)
    reset: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def _head_keys(model: nn.Module) -> set[str]:
    get = getattr(model, "get_classifier", None)
    if get is None:
        return set()
    head = get()
    prefix = next(n for n, m in model.named_modules() if m is head)
    return {f"{prefix}.{k}" for k in head.state_dict()}


def _new_head_keys(model: nn.Module, state: Mapping[str, torch.Tensor], head_keys: set[str]) -> set[str]:
    """The configured head's hidden-layer keys when the source has none of them (they start
    fresh); empty when the source has any (then all must fit, like every other tensor)."""
    head = getattr(model, "head", None)
    if not hasattr(model, "replaced_head_keys") or not isinstance(head, nn.Module):
        return set()
    hidden = {f"head.{k}" for k in head.state_dict()} - head_keys
    return hidden if not hidden & set(state) else set()


def _fold_batch_norm(model: nn.Module, state: Mapping[str, torch.Tensor]
                     ) -> tuple[Mapping[str, torch.Tensor], str]:
    """``state`` with its batch norms folded into the convs of ``model`` (which has none) where
    the family can (``fold_batch_norm``), and a message when it did."""
    fold = getattr(model, "fold_batch_norm", None)
    if not callable(fold):
        return state, ""
    folded: Mapping[str, torch.Tensor] = fold(state)
    gone = set(state) - set(folded)
    if not gone:
        return state, ""
    return folded, (f"batch norm folded into the convs ({len(gone)} source tensors, e.g. "
                    f"'{sorted(gone)[0]}'): the convs compute what the source computed in eval mode")


def _fmt_classes(classes: list[str] | None) -> str:
    if not classes:
        return ""
    if len(classes) <= 8:
        return f" {list(classes)}"
    return f" [{', '.join(repr(c) for c in classes[:3])}, … {len(classes)} classes]"


def _adapt_first_conv(
    key: str, src: torch.Tensor, dst: torch.Tensor, report: LoadReport
) -> torch.Tensor | None:
    """``src`` summed/repeated over input channels to fit ``dst``, or None if that cannot fit."""
    if src.ndim != 4 or dst.ndim != 4 or src.shape[0] != dst.shape[0] or src.shape[2:] != dst.shape[2:]:
        return None
    out = adapt_input_conv(int(dst.shape[1]), src, base_chans=int(src.shape[1]))
    report.adapted.append(key)
    how = "summed over" if dst.shape[1] == 1 else "repeated/rescaled from"
    report.messages.append(
        f"input conv '{key}': {how} {src.shape[1]} source input channels → {dst.shape[1]}"
    )
    return out


def load_source_weights(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    head: HeadPolicy = HeadPolicy.AUTO,
    source_classes: list[str] | None = None,
    target_classes: list[str] | None = None,
    adapt_input: str | None = None,
    fold_batch_norm: bool = False,
) -> LoadReport:
    """Copy a source state dict into ``model``; any mismatch outside the head is an error.

    The head (``get_classifier()``) is kept when its shape matches and reset (left at its
    fresh initialisation, the source's head tensors dropped) when the class count differs,
    unless ``head`` says otherwise. ``adapt_input`` names the first conv module: its weight may
    differ in input channels and is then adapted (summed to 1 channel, as timm does).
    ``fold_batch_norm``: a source with batch norm goes into a model without it by folding each
    BN into its conv, where the family can (the seeds' AlexNets; ``pretrain.model``).
    """
    state, folded = _fold_batch_norm(model, state) if fold_batch_norm else (state, "")
    target = model.state_dict()
    head_keys = _head_keys(model)
    fresh = _new_head_keys(model, state, head_keys)
    replaced = set(getattr(model, "replaced_head_keys", ()))
    src_cls, tgt_cls = _fmt_classes(source_classes), _fmt_classes(target_classes)
    # Files from before PyTorch 0.4.1 (CheXNet's) have no batch-norm step counters; keep ours.
    counters = {k for k in set(target) - set(state) if k.endswith(".num_batches_tracked")}
    missing = sorted(set(target) - set(state) - head_keys - fresh - counters)
    unexpected = sorted(set(state) - set(target) - head_keys - replaced)
    if missing or unexpected:
        raise DataError(
            "source weights do not fit the target architecture: "
            f"missing {missing[:8]}{'…' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'…' if len(unexpected) > 8 else ''}. "
            "Transfer into the same architecture (and the same batch_norm setting) as the source."
        )
    report = LoadReport(messages=[folded] if folded else [])
    adapted: dict[str, torch.Tensor] = {}
    first_conv = f"{adapt_input}.weight" if adapt_input else None
    bad = [k for k in target if k in state and k not in head_keys and state[k].shape != target[k].shape]
    for k in bad:
        fitted = _adapt_first_conv(k, state[k], target[k], report) if k == first_conv else None
        if fitted is None:
            raise DataError(
                f"source weight '{k}' has shape {tuple(state[k].shape)} but the target expects "
                f"{tuple(target[k].shape)} (different input channels or image size?)"
            )
        adapted[k] = fitted
    head_fits = all(k in state and state[k].shape == target[k].shape for k in head_keys)
    if head is HeadPolicy.KEEP and replaced and not all(k in state for k in head_keys):
        raise DataError(
            "transfer.head is 'keep' but the source weights have no tensors for the output layer "
            f"of model.head ({', '.join(sorted(head_keys))}); use head: auto or reset"
        )
    if head is HeadPolicy.KEEP and not head_fits:
        raise DataError(
            f"transfer.head is 'keep' but the source classes{src_cls} and target "
            f"classes{tgt_cls} need different output layers; use head: auto or reset"
        )
    reset_head = head is HeadPolicy.RESET or (head is HeadPolicy.AUTO and not head_fits)
    new_state = dict(target)
    for k in target:
        if (k in head_keys and reset_head) or k in fresh:
            report.reset.append(k)
            continue
        if k in counters:
            continue
        new_state[k] = adapted.get(k, state[k])
        if k not in adapted:
            report.loaded.append(k)
    report.dropped = sorted(k for k in state if (k in head_keys and reset_head) or k not in target)
    model.load_state_dict(new_state)
    if fresh:
        report.messages.append(f"model.head: its hidden layers start fresh ({len(fresh)} tensors "
                               "the source does not have)")
    if reset_head:
        report.messages.append(
            f"output layer reset (source classes{src_cls} → target classes{tgt_cls}); "
            f"dropped source tensors {report.dropped}"
        )
    elif source_classes and target_classes and source_classes != target_classes:
        report.messages.append(
            f"output layer kept: source classes{src_cls} map by position onto target "
            f"classes{tgt_cls}"
        )
    return report
