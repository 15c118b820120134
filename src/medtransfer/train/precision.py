"""Numeric precision of training, evaluation, feature extraction and prediction.

``fp32`` runs as before (bit-reproducible on the CPU). ``bf16`` and ``fp16`` run the forward
pass under :func:`torch.autocast` (weights, gradients and optimizer state stay float32; losses
and probabilities are computed in float32); ``fp16`` also scales the loss with a
:class:`torch.amp.GradScaler` against underflow. ``auto`` picks bf16 on a CUDA GPU that
supports it, fp16 on other CUDA GPUs, and fp32 elsewhere (the CPU's exact default).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from medtransfer.config import check_choice
from medtransfer.errors import ConfigError

__all__ = ["PRECISIONS", "Amp", "Precision", "check_precision", "resolve_precision"]

Precision = Literal["fp32", "bf16", "fp16", "auto"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "auto")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(key: str, value: object) -> None:
    """ConfigError naming ``key`` and the allowed values unless ``value`` is one of them."""
    check_choice(key, value, PRECISIONS)


def _cuda_bf16() -> bool:
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _cpu_bf16_native() -> bool | None:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); None where torch cannot
    tell."""
    probes = [getattr(torch.cpu, name, None)
              for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if any(probe is None for probe in probes):
        return None
    return any(bool(probe()) for probe in probes)  # type: ignore[misc]


_warned_emulated = False


def _warn_emulated_bf16(key: str) -> None:
    """Once per process: bf16 asked of a CPU that only emulates it, where it is far slower than
    fp32 (a bare AlexNet training step: 1.5 against 44.8 images/s on an AVX2 CPU)."""
    global _warned_emulated
    if _warned_emulated or _cpu_bf16_native() is not False:
        return
    _warned_emulated = True
    warnings.warn(f"'{key}': bf16 on a CPU without bf16 hardware (no AVX512-BF16 or AMX; torch's CPU "
                  f"capability: {torch.backends.cpu.get_cpu_capability()}): torch emulates it, measured "
                  "30x slower than fp32 on one such CPU (benchmarks/bench_precision.py); fp32 is the "
                  "faster choice here", RuntimeWarning, stacklevel=3)


@dataclass(frozen=True)
class Amp:
    """A resolved precision (``fp32``, ``bf16`` or ``fp16``) on one device type."""

    name: str
    device_type: str

    @property
    def enabled(self) -> bool:
        return self.name != "fp32"

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast to the reduced type for the block (nothing at all for fp32)."""
        if not self.enabled:
            yield
            return
        with torch.autocast(self.device_type, dtype=_DTYPES[self.name]):
            yield

    def scaler(self) -> torch.amp.GradScaler | None:
        """A gradient scaler for fp16 (None otherwise)."""
        return torch.amp.GradScaler(self.device_type) if self.name == "fp16" else None


def resolve_precision(precision: str, device: str | torch.device, key: str = "precision") -> Amp:
    """The precision ``precision`` means on ``device``; a ConfigError when it cannot run there
    (fp16 off CUDA, bf16 on a CUDA GPU without it or on another accelerator)."""
    check_precision(key, precision)
    dev = torch.device(device)
    kind = dev.type
    if precision == "auto":
        if kind == "cuda":
            return Amp("bf16" if _cuda_bf16() else "fp16", kind)
        return Amp("fp32", kind)
    if precision == "fp32":
        return Amp("fp32", kind)
    if precision == "bf16" and (kind == "cpu" or (kind == "cuda" and _cuda_bf16())):
        if kind == "cpu":
            _warn_emulated_bf16(key)
        return Amp("bf16", kind)
    if precision == "fp16" and kind == "cuda":
        return Amp("fp16", kind)
    allowed = {"cpu": "fp32, bf16, auto", "cuda": "fp32, fp16, auto"}.get(kind, "fp32, auto")
    raise ConfigError(f"'{key}': {precision} cannot run on device {dev}; allowed there: {allowed}")
