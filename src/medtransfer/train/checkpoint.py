"""Checkpoints that load with ``torch.load(weights_only=True)``: tensors plus plain data only."""

from __future__ import annotations

import contextlib
import copy
import enum
import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medtransfer.config import to_dict
from medtransfer.errors import DataError
from medtransfer.fileio import umask_mode

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "copy_state",
    "lean_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
    "to_plain",
]

FORMAT_VERSION = 1


class CheckpointError(DataError):
    """A checkpoint file is missing, unreadable or not a medtransfer checkpoint."""


def to_plain(value: Any, where: str = "config", *, allow_tensors: bool = False) -> Any:
    """``value`` as str/int/float/bool/None/list/dict (and tensors if allowed); else TypeError.

    Dataclasses, enums, paths and tuples are converted first (via :func:`config.to_dict`), numpy
    scalars become Python numbers.
    """
    if isinstance(value, torch.Tensor):
        if allow_tensors:
            return value.detach().cpu()
        raise TypeError(f"'{where}': tensors are not allowed here; use plain numbers or lists")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, enum.Enum | Path | tuple) or (
        hasattr(value, "__dataclass_fields__") and not isinstance(value, type)
    ):
        value = to_dict(value)
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list):
        return [
            to_plain(v, f"{where}[{i}]", allow_tensors=allow_tensors) for i, v in enumerate(value)
        ]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"'{where}': keys must be strings, got {k!r}")
            out[k] = to_plain(v, f"{where}.{k}", allow_tensors=allow_tensors)
        return out
    raise TypeError(
        f"'{where}': {type(value).__name__} cannot be stored in a weights_only checkpoint; "
        "allowed: str, int, float, bool, None, list, dict"
    )


def save_checkpoint(
    path: str | Path,
    *,
    model_state: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    epoch: int,
    metrics: Mapping[str, float],
    optimizer_state: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file in the same folder, then ``os.replace``).

    A crash or Ctrl-C mid-write leaves the previous file intact. Returns the path written.
    """
    path = Path(path)
    payload = {
        "format_version": FORMAT_VERSION,
        "torch_version": str(torch.__version__),
        "epoch": int(epoch),
        "metrics": {str(k): float(v) for k, v in metrics.items()},
        "config": to_plain(dict(config), "config"),
        "model_state": {k: v.detach().cpu() for k, v in model_state.items()},
        "optimizer_state": None if optimizer_state is None else dict(optimizer_state),
        "extra": {} if extra is None else to_plain(dict(extra), "extra", allow_tensors=True),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, umask_mode())  # mkstemp makes 0600: colleagues on a shared server could not read it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint onto the CPU with ``weights_only=True``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"checkpoint file {path} is corrupt or unreadable: {exc}") from exc
    if not isinstance(data, dict) or "model_state" not in data or "format_version" not in data:
        raise CheckpointError(f"{path} is not a medtransfer checkpoint (no model_state)")
    if data["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {data['format_version']}; this version reads up to "
            f"{FORMAT_VERSION}"
        )
    return data


def lean_checkpoints(folder: str | Path) -> list[Path]:
    """Slim the checkpoints of a finished training in ``folder`` (and its subfolders, e.g. a
    finetune's ``head/``): ``last.pt`` is removed where a ``best.pt`` sits next to it (what
    reports, inference and later units load) and otherwise rewritten with its weights only, no
    optimizer or resume state (``extra.optimizer_state_dropped``). Returns the files removed or
    rewritten."""
    changed = []
    for last in sorted(Path(folder).rglob("last.pt")):
        if (last.parent / "best.pt").is_file():
            last.unlink()
            changed.append(last)
            continue
        data = load_checkpoint(last)
        if data.get("optimizer_state") is None:
            continue
        save_checkpoint(last, model_state=data["model_state"], config=data["config"],
                        epoch=data["epoch"], metrics=data["metrics"],
                        extra={**{k: v for k, v in data["extra"].items() if k != "resume"},
                               "optimizer_state_dropped": True})
        changed.append(last)
    return changed


def copy_state(state: Mapping[str, Any], into: dict[str, Any] | None = None) -> dict[str, Any]:
    """A detached CPU copy of a state dict; refills ``into``'s tensors in place (no new memory)
    when it has the same keys, shapes and dtypes."""
    if into is not None and into.keys() == state.keys() and all(
        isinstance(v, torch.Tensor) and isinstance(into[k], torch.Tensor)
        and into[k].shape == v.shape and into[k].dtype == v.dtype for k, v in state.items()
    ):
        for k, v in state.items():
            into[k].copy_(v.detach())
        return into
    return {
        k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else copy.deepcopy(v)
        for k, v in state.items()
    }
