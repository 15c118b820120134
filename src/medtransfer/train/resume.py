"""Resuming a fit from ``last.pt``: what a finished epoch's ``last.pt`` records beyond the weights
and the optimizer (``extra.resume``: scheduler, random generators, history, callback states, a
digest), and the checks that it belongs to the training at hand.

With all of it restored, epoch ``k + 1`` starts exactly as in an uninterrupted run, so the final
weights are bitwise the same (CPU, fp32). A ``last.pt`` that does not match (another config,
seed, device or labels), lacks the state, or fails its digest is never resumed from.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import Optimizer

from medtransfer.train.callbacks import Callback, StopReason, TrainState
from medtransfer.train.checkpoint import CheckpointError, load_checkpoint, to_plain

__all__ = ["RESUME_VERSION", "Resumable", "callback_states", "data_check", "digest", "find_resume",
           "restore_callbacks", "resumable_problem"]

log = logging.getLogger(__name__)

RESUME_VERSION = 1


def data_check(seed: int, device: torch.device, labels: Mapping[str, np.ndarray | None]) -> dict[str, Any]:
    """What must not change for a resume: seed, device type, and each set's size and labels."""
    sets = {name: None if y is None else
            [len(y), hashlib.sha256(np.ascontiguousarray(y).tobytes()).hexdigest()[:16]]
            for name, y in labels.items()}
    return {"seed": seed, "device": device.type, "sets": sets}


def _keys(callbacks: Sequence[Callback]) -> list[str]:
    """``Name#i`` per callback (``i``: the how-manieth of that class), to pair saved states with."""
    seen: dict[str, int] = {}
    keys = []
    for cb in callbacks:
        name = type(cb).__name__
        keys.append(f"{name}#{seen.get(name, 0)}")
        seen[name] = seen.get(name, 0) + 1
    return keys


def callback_states(callbacks: Sequence[Callback]) -> dict[str, Any]:
    """Each callback's ``state_dict``; one that a checkpoint cannot hold is left out (logged)."""
    out = {}
    for key, cb in zip(_keys(callbacks), callbacks, strict=True):
        try:
            out[key] = to_plain(cb.state_dict(), f"{key}.state_dict")
        except TypeError as exc:
            log.debug("%s: state not saved for a resume (%s)", key, exc)
    return out


def restore_callbacks(callbacks: Sequence[Callback], states: Mapping[str, Any]) -> None:
    """Give each callback the state saved for it; one without a saved state (a callback added
    since, e.g. tracking) keeps its fresh one."""
    for key, cb in zip(_keys(callbacks), callbacks, strict=True):
        if key in states:
            cb.load_state_dict(states[key])


def _feed(h: Any, value: Any) -> None:
    """Hash ``value`` (tensors by dtype, shape and bytes; containers in a fixed order)."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, Mapping):
        h.update(b"{")
        for k in sorted(value, key=str):
            h.update(repr(k).encode())
            _feed(h, value[k])
        h.update(b"}")
    elif isinstance(value, list | tuple):
        h.update(b"[")
        for v in value:
            _feed(h, v)
        h.update(b"]")
    elif isinstance(value, float) and math.isnan(value):
        h.update(b"nan")
    else:
        h.update(repr(value).encode())


def digest(model_state: Mapping[str, Any], optimizer_state: Any, resume: Mapping[str, Any]) -> str:
    """SHA-256 of what a resume restores: torch does not check a checkpoint's content, so a
    flipped bit in ``last.pt`` would otherwise be resumed from silently."""
    h = hashlib.sha256()
    _feed(h, model_state)
    _feed(h, optimizer_state)
    # As stored: to_plain turns tuples into lists, numpy scalars into numbers.
    _feed(h, to_plain({k: v for k, v in resume.items() if k != "digest"}, "resume", allow_tensors=True))
    return h.hexdigest()


def resumable_problem(path: Path, config: Mapping[str, Any], check: Mapping[str, Any],
                      max_epochs: int) -> tuple[dict[str, Any] | None, str | None]:
    """``(checkpoint, None)`` when ``path`` is a finished epoch of this training, else
    ``(None, why not)`` (``(None, None)``: no epoch had finished)."""
    if not path.is_file():
        return None, "no last.pt"
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        return None, str(exc)
    resume = ckpt["extra"].get("resume")
    if ckpt["epoch"] == 0 and resume is None and "stop_reason" not in ckpt["extra"]:
        return None, None  # written at fit start, before any epoch: nothing to resume
    if not isinstance(resume, dict) or resume.get("version") != RESUME_VERSION:
        return None, ("it holds no resume state (written mid-epoch, with checkpoint_every: end, "
                      "or by an older medtransfer)")
    if resume.get("digest") != digest(ckpt["model_state"], ckpt["optimizer_state"], resume):
        return None, "its content does not match its digest (damaged)"
    if ckpt["config"] != to_plain(dict(config), "config"):
        return None, "it was written with another config"
    if resume.get("check") != to_plain(dict(check)):
        return None, f"it was written for other data, seed or device ({resume.get('check')})"
    if not 0 <= ckpt["epoch"] <= max_epochs or ckpt["epoch"] != len(resume["history"]):
        return None, f"its epoch {ckpt['epoch']} does not fit {max_epochs} epochs"
    best_epoch = next((s.get("best_epoch", 0) for k, s in resume["callbacks"].items()
                       if k.startswith("ModelCheckpoint#")), 0)
    if best_epoch:
        best = path.parent / "best.pt"
        try:
            best_at = load_checkpoint(best)["epoch"]
        except CheckpointError as exc:
            return None, f"its best.pt cannot be used ({exc})"
        if best_at != best_epoch:
            return None, f"best.pt holds epoch {best_at}, last.pt says the best was epoch {best_epoch}"
    return ckpt, None


def find_resume(path: Path, *, config: Mapping[str, Any], check: Mapping[str, Any], epochs: int,
                per_epoch: bool, ddp: bool) -> dict[str, Any] | None:
    """The ``last.pt`` to resume from, or None (with a warning when one is there but unusable).
    ``per_epoch``: last.pt is written every epoch (else never resumable); ``ddp``: several
    processes train (not resumable: only rank 0's generators would be saved)."""
    ckpt: dict[str, Any] | None
    why: str | None
    if ddp or not per_epoch:
        ckpt, why = None, ("resuming is not supported with DDP" if ddp else
                           "checkpoint_every is end: last.pt is not written per epoch")
    else:
        ckpt, why = resumable_problem(path, config, check, epochs)
    if ckpt is None and why is not None and path.is_file():
        log.warning("%s: not resumed from, as %s; training starts at epoch 1", path, why)
    return ckpt


@dataclass
class Resumable:
    """The moving parts of a fit that a resume restores besides the callbacks."""

    state: TrainState
    model: nn.Module
    optimizer: Optimizer
    scheduler: Any
    scaler: Any
    generators: dict[str, torch.Generator]  # fit's own (shuffling, augmentation)
    cuda: list[int]  # the CUDA device whose global generator dropout draws from, if any
    check: dict[str, Any]  # see data_check

    def snapshot(self, callbacks: Sequence[Callback]) -> dict[str, Any]:
        """What :meth:`restore` needs beyond weights and optimizer, as of the end of an epoch
        (callbacks and scheduler step done)."""
        rng = {name: gen.get_state() for name, gen in self.generators.items()}
        rng["torch"] = torch.random.default_generator.get_state()
        for index in self.cuda:
            rng["cuda"] = torch.cuda.default_generators[index].get_state()
        st = self.state
        return {
            "history": st.history, "should_stop": st.should_stop, "stop_reason": st.stop_reason.value,
            "lrs": [group["lr"] for group in self.optimizer.param_groups],
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "rng": rng, "callbacks": callback_states(callbacks), "check": self.check,
        }

    def restore(self, ckpt: Mapping[str, Any]) -> None:
        """Continue after ``ckpt``'s epoch (call inside fit's seeded block, before the callbacks'
        ``on_fit_start``)."""
        saved, st = ckpt["extra"]["resume"], self.state
        self.model.load_state_dict(ckpt["model_state"])
        self.optimizer.load_state_dict(ckpt["optimizer_state"])
        for group, lr in zip(self.optimizer.param_groups, saved["lrs"], strict=True):
            group["lr"] = lr  # last.pt's optimizer state is as the epoch trained, before the scheduler step
        if self.scheduler is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        if self.scaler is not None and saved["scaler"] is not None:
            self.scaler.load_state_dict(saved["scaler"])
        rng = saved["rng"]
        for name, gen in self.generators.items():
            gen.set_state(rng[name])
        torch.random.default_generator.set_state(rng["torch"])
        for index in self.cuda:
            torch.cuda.default_generators[index].set_state(rng["cuda"])
        st.epoch, st.history = ckpt["epoch"], [dict(row) for row in saved["history"]]
        st.should_stop, st.stop_reason = saved["should_stop"], StopReason(saved["stop_reason"])

    def resumed(self, callbacks: Sequence[Callback], ckpt: Mapping[str, Any]) -> None:
        """After the callbacks' ``on_fit_start``: give them their saved states, and say so."""
        restore_callbacks(callbacks, ckpt["extra"]["resume"]["callbacks"])
        log.info("%s: resumed from epoch %d of %d (last.pt)", self.state.out_dir, self.state.epoch,
                 self.state.max_epochs)
