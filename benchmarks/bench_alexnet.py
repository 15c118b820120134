"""Seed-000 AlexNet at 128 px: training images/s, and the time of a seed-000 transfer stage as a
study runs it (``train_stage``: the last 3 layers on cached activations of the frozen rest).

Run: ``make bench`` (or ``python benchmarks/bench_alexnet.py [--device cuda]``). Synthetic images,
so it needs no data; numbers are from one run on this machine, printed with their ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medtransfer.evaluate import compute_metrics
from medtransfer.freezing import FreezeConfig
from medtransfer.models import create_model
from medtransfer.strategies import CacheConfig, Stage, TransferData, train_stage
from medtransfer.train import OptimizerConfig, TrainConfig, TrainEnv, fit, predict_proba
from medtransfer.train.optim import OptimizerName


def _images(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    return (rng.integers(0, 256, (n, 1, size, size), dtype=np.uint8),
            rng.integers(0, 2, n).astype(np.int64))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--train-images", type=int, default=640)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    opt = OptimizerConfig(name=OptimizerName.adagrad, lr=1e-2)
    with tempfile.TemporaryDirectory() as tmp:
        model = create_model("alexnet_krizhevsky", num_classes=1, in_chans=1, img_size=args.size)
        train = _images(rng, args.train_images, args.size)
        cfg = TrainConfig(epochs=2, batch_size=64, optimizer=opt, progress=False,
                          checkpoint_monitor="loss")
        res = fit(model, train, None, cfg, TrainEnv(0, Path(tmp) / "pre", 2, args.device))
        full_ips = res.images_per_second
        print(f"pretraining (all layers), {args.size} px, batch 64: {full_ips:.1f} images/s")

        # Seed 000's transfer stage: 600 target images, 10 epochs, last 3 weight layers trainable,
        # then 4 test sets of 300 images.
        target = _images(rng, 600, args.size)
        tests = [_images(rng, 300, args.size) for _ in range(4)]
        t0 = time.perf_counter()
        tcfg = TrainConfig(epochs=10, batch_size=64, progress=False, checkpoint_monitor="loss",
                           optimizer=OptimizerConfig(name=OptimizerName.adagrad, lr=1e-3))
        stage = train_stage(Stage("freeze", FreezeConfig(trainable_layers=3), tcfg, CacheConfig()),
                            model, TransferData(target), TrainEnv(1, Path(tmp) / "tr", 2, args.device))
        assert stage.fit is not None
        tres = stage.fit
        for x, y in tests:
            compute_metrics(y, predict_proba(model, x, batch_size=64, device=args.device))
        seconds = time.perf_counter() - t0
        print(f"transfer stage (600 images × 10 epochs, last 3 layers, + 4 × 300 test; {stage.path} "
              f"path): {seconds:.1f} s ({tres.images_per_second:.1f} images/s while training)")
        print(f"ratio transfer / pretraining training speed: {tres.images_per_second / full_ips:.2f}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")


if __name__ == "__main__":
    main()
