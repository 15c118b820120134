"""A bare training step's images/s, shared by the benchmarks: forward under the precision's
autocast, binary cross-entropy on the last logit, backward (scaled for fp16), optimizer step."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from medtransfer.train.allocator import tune_allocator
from medtransfer.train.precision import resolve_precision


def sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


Optimizer = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


def bare_step(model: nn.Module, x: torch.Tensor, make_opt: Optimizer, *, precision: str = "fp32",
              channels_last: bool = False, steps: int = 6,
              warmup: int = 1) -> float:
    """Training images/s of ``model`` on the one batch ``x`` (random 0/1 labels), timed over
    ``steps`` steps after ``warmup`` untimed ones; the model is put on ``x``'s device. The
    allocator is tuned as ``fit`` tunes it (unless ``MEDTRANSFER_MALLOC=system``), so the two
    compare like with like."""
    tune_allocator()
    device = x.device
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (x.shape[0],), device=device).float()
    opt = make_opt(list(model.parameters()))
    amp = resolve_precision(precision, device)
    scaler = amp.scaler()
    model.train()
    t0 = 0.0
    for i in range(steps + warmup):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with amp.autocast():
            logits = model(x)
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float()[:, -1], y)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    sync(device)
    return steps * x.shape[0] / (time.perf_counter() - t0)


def train_flops_per_image(model: nn.Module, x: torch.Tensor) -> float:
    """Floating-point operations of one training step (forward + backward) per image, counted by
    :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    with FlopCounterMode(display=False) as counter:
        model(x).float()[:, -1].sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / x.shape[0]


def matmul_flops_per_second(dtype: torch.dtype, sizes: tuple[int, ...] = (1024, 2048, 4096),
                            repeats: int = 5) -> float:
    """This machine's best speed on large square matrix products in ``dtype`` (FLOP/s, the
    fastest of ``sizes``, each timed twice): about the most any framework gets out of it for
    convolutions and dense layers."""
    tune_allocator()
    best = 0.0
    for n in sizes:
        a, b = torch.rand(n, n, dtype=dtype), torch.rand(n, n, dtype=dtype)
        a @ b
        for _ in range(2):
            t0 = time.perf_counter()
            for _ in range(repeats):
                a @ b
            best = max(best, 2 * n**3 * repeats / (time.perf_counter() - t0))
    return best
