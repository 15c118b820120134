"""Train a small CNN on synthetic images with PyTorch DDP, one process per CPU core or GPU.

    torchrun --nproc_per_node 2 examples/ddp_train.py --out runs/ddp
    python examples/ddp_train.py --out runs/single      # the same training in one process

Under torchrun, :func:`init_distributed` joins the process group (gloo on the CPU, NCCL with
one GPU per process) and :func:`medtransfer.train.fit` trains with DDP: each process takes its
share of every batch, and the result equals the one-process run up to float rounding (the model
has no batch norm or dropout, which would make it equal in distribution only). Only rank 0
writes ``history.csv``, ``best.pt`` and ``last.pt``; ``--out`` may contain ``{rank}`` to check
that the other ranks write nothing. Rank 0 prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from medtransfer.train import OptimizerConfig, TrainConfig, TrainEnv, fit
from medtransfer.train.distributed import cleanup, init_distributed, is_distributed, is_main_process


def make_data(n: int, seed: int, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Imbalanced two-class uint8 images (N, 1, size, size): class 1 is brighter."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.35).astype(np.int64)
    level = np.where(y == 1, 150.0, 100.0)
    x = level[:, None, None, None] + rng.normal(0, 30, (n, 1, size, size))
    return np.clip(x, 0, 255).astype(np.uint8), y


def make_model(seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(4 * 4 * 4, 2))


def shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A random brightness shift per image (an augmentation that draws from ``gen``)."""
    return (x + 0.1 * torch.rand(len(x), 1, 1, 1, generator=gen, device=gen.device) - 0.05).clamp(0, 1)


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/ddp", help="fit's output folder; {rank} becomes the rank")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=7, help="global batch size (split over processes)")
    ap.add_argument("--train", type=int, default=50, help="training images")
    ap.add_argument("--val", type=int, default=21, help="validation images")
    ap.add_argument("--augment", action="store_true", help="random brightness shifts")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    device = init_distributed(args.device)
    try:
        rank = dist.get_rank() if is_distributed() else 0
        model = make_model(args.seed)
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, progress=False,
                          optimizer=OptimizerConfig(name="sgd", lr=0.05, momentum=0.9),
                          class_weight="balanced")  # type: ignore[arg-type]
        env = TrainEnv(args.seed, Path(args.out.format(rank=rank)), num_classes=2, device=device)
        res = fit(model, make_data(args.train, 1), make_data(args.val, 2), cfg, env,
                  augment=shift if args.augment else None)
        flat = torch.cat([v.detach().flatten().double() for v in model.state_dict().values()])
        spread = 0.0
        if is_distributed():  # every process should end with rank 0's weights
            everyone = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
            dist.all_gather(everyone, flat)
            spread = max(float((w - flat).abs().max()) for w in everyone)
        summary = {
            "world_size": dist.get_world_size() if is_distributed() else 1,
            "history": res.history, "best_epoch": res.best_epoch,
            "stop_reason": res.stop_reason.value, "weight_spread_across_ranks": spread,
            "images_per_second": res.images_per_second,
        }
        if is_main_process():
            print(json.dumps(summary), flush=True)
        return summary
    finally:
        cleanup()


if __name__ == "__main__":
    main()
