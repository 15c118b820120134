"""Training images/s of the seed-000 AlexNet (``alexnet_krizhevsky``, 128 px, batch 64, Adagrad) in
fp32, bf16 autocast and channels-last: a bare training step, and ``fit`` with
``train.precision`` fp32 / bf16 (how much of the bare step's speed the training loop keeps).

Run: ``python benchmarks/bench_precision.py [--device cuda] [--steps 6]``. Synthetic images; the
numbers are from one run on this machine, printed with their ratios (never asserted).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from _step import bare_step

from medtransfer.models import create_model
from medtransfer.train import OptimizerConfig, TrainConfig, TrainEnv, fit
from medtransfer.train.optim import OptimizerName
from medtransfer.train.precision import resolve_precision


def alexnet_step(device: str, size: int, batch: int, steps: int, precision: str,
                 channels_last: bool) -> float:
    """Images/s of forward + backward + Adagrad step on one random batch (1 warm-up step)."""
    torch.manual_seed(0)
    model = create_model("alexnet_krizhevsky", num_classes=1, in_chans=1, img_size=size)
    return bare_step(model, torch.rand(batch, 1, size, size, device=device),
                     lambda p: torch.optim.Adagrad(p, lr=1e-2), precision=precision,
                     channels_last=channels_last, steps=steps)


def fit_speed(device: str, size: int, n: int, precision: str, channels_last: bool, tmp: Path) -> float:
    """Images/s of ``fit``'s training steps (2 epochs of ``n`` images, batch 64, no validation)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 1, size, size), dtype=np.uint8)
    labels = rng.integers(0, 2, n).astype(np.int64)
    model = create_model("alexnet_krizhevsky", num_classes=1, in_chans=1, img_size=size)
    cfg = TrainConfig(epochs=2, batch_size=64, progress=False, checkpoint_monitor="loss",
                      optimizer=OptimizerConfig(name=OptimizerName.adagrad, lr=1e-2),
                      precision=precision, channels_last=channels_last, checkpoint_every="end")
    out = tmp / f"{precision}-{channels_last}"
    return fit(model, (images, labels), None, cfg, TrainEnv(0, out, 2, device)).images_per_second


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--fit-images", type=int, default=384)
    args = ap.parse_args()
    reduced = resolve_precision("auto", args.device).name if args.device != "cpu" else "bf16"
    print(f"seed-000 AlexNet, {args.size} px, batch 64, device {args.device}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")
    rows = [("fp32", False), (reduced, False), ("fp32", True), (reduced, True)]
    bare = {r: alexnet_step(args.device, args.size, 64, args.steps, *r) for r in rows}
    base = bare[("fp32", False)]
    for (prec, cl), ips in bare.items():
        print(f"bare step  {prec:4s}{' channels_last' if cl else '':14s}: {ips:7.1f} images/s "
              f"({ips / base:.2f}x fp32)")
    with tempfile.TemporaryDirectory() as tmp:
        for prec in ("fp32", reduced):
            ips = fit_speed(args.device, args.size, args.fit_images, prec, False, Path(tmp))
            print(f"fit        {prec:4s}{'':14s}: {ips:7.1f} images/s "
                  f"({ips / bare[(prec, False)]:.0%} of the bare {prec} step, {ips / base:.2f}x bare fp32)")


if __name__ == "__main__":
    main()
