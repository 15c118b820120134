"""``train.compile``: :func:`torch.compile` of a model for training and evaluation.

The model is compiled in place (:meth:`torch.nn.Module.compile`), so its parameters, state dict
keys and checkpoints stay those of the plain model. The first batches pay for compiling (tens of
seconds on a CPU; cached by TorchInductor between runs), later ones may run faster: measure it
(``benchmarks/bench_compile.py``) before turning it on.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys

import torch
from torch import nn

from medtransfer.errors import ConfigError

__all__ = ["compile_model", "compile_problem"]


def compile_problem(device: str | torch.device) -> str | None:
    """Why TorchInductor cannot build code for ``device`` here, or None when it can: the CPU
    needs a C++ compiler (``$CXX``, else g++ / clang++ on macOS), CUDA needs Triton."""
    kind = torch.device(device).type
    if kind == "cpu":
        cxx = os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++")
        if shutil.which(cxx) is None:
            return f"a C++ compiler for the CPU kernels ({cxx!r} is not on PATH; install it or set CXX)"
        return None
    if kind == "cuda":
        found = importlib.util.find_spec("triton") is not None
        return None if found else "Triton for the GPU kernels (pip install triton)"
    return f"a TorchInductor backend for device type {kind!r} (it has none here)"


def compile_model(model: nn.Module, device: str | torch.device, key: str = "train.compile",
                  backend: str = "inductor") -> nn.Module:
    """Compile ``model`` in place for ``device`` and return it; a ConfigError naming ``key``
    when the toolchain is missing (``backend`` other than inductor: no check, for tests)."""
    problem = compile_problem(device) if backend == "inductor" else None
    if problem is not None:
        raise ConfigError(f"'{key}': true needs {problem}; allowed here: false")
    model.compile(backend=backend)
    return model
