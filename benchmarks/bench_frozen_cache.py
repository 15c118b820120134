"""Frozen-prefix caching: seed 000's transfer stage with and without cached activations.

Seed-000 AlexNet at 128 px, 600 target images, the last 3 dense layers trainable (the frozen
convs and first dense layer are the prefix), 10 epochs. The full path recomputes the frozen
prefix every epoch; the cached path computes it once and trains the tail on its activations.
Both go through :func:`medtransfer.strategies.train_stage`, the code the strategies run, and the
two trained models are compared. Then the same for the output layer alone (``--also-head``).

Checkpoints: with ``checkpoint_every: auto`` (the default) the full path writes the whole
model's ``last.pt`` every epoch and ``best.pt`` on each improvement, the cached path writes both
once at the end. ``--full-end`` also times the full path writing at the end, which separates
what caching saves from what fewer writes save. What caching can save at most is the frozen
prefix's share of an epoch: with 20.9M trainable parameters the tail's own forward, backward and
Adagrad step cost about as much as the frozen convs, so the speed-up stays near 2-3× there.

Run: ``python benchmarks/bench_frozen_cache.py [--device cuda] [--threads N]``. Synthetic
images, so it needs no data; all numbers are from this one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medtransfer.models import create_model
from medtransfer.strategies import CacheConfig, StageResult, train_stage
from medtransfer.train import OptimizerConfig, TrainConfig, save_checkpoint
from medtransfer.train.optim import OptimizerName
from medtransfer.transfer import FreezeConfig


def _images(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    return (rng.integers(0, 256, (n, 1, size, size), dtype=np.uint8),
            rng.integers(0, 2, n).astype(np.int64))


def _run(cache: bool, trainable: int, args: argparse.Namespace, tmp: Path,
         every: str = "auto") -> tuple[float, StageResult, torch.nn.Module]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model("alexnet_seed000", num_classes=1, in_chans=1, img_size=args.size)
    train = _images(np.random.default_rng(1), args.images, args.size)
    cfg = TrainConfig(epochs=args.epochs, batch_size=64, progress=False, checkpoint_monitor="loss",
                      optimizer=OptimizerConfig(name=OptimizerName.adagrad, lr=1e-3),
                      checkpoint_every=every)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    stage = train_stage(
        "freeze", model, FreezeConfig(trainable_layers=trainable), cfg, CacheConfig(enabled=cache),
        train, None, seed=1, out_dir=tmp / f"{cache}-{trainable}-{every}", num_classes=2,
        device=args.device,
    )
    return time.perf_counter() - t0, stage, model


def _compare(trainable: int, args: argparse.Namespace, tmp: Path) -> None:
    full_s, full, full_model = _run(False, trainable, args, tmp)
    cached_s, cached, cached_model = _run(True, trainable, args, tmp)
    assert full.path == "full" and cached.path == "cached", cached.reason
    diff = max(float((a - b).abs().max()) for a, b in
               zip(full_model.state_dict().values(), cached_model.state_dict().values(), strict=True))
    assert full.fit is not None and cached.fit is not None
    print(f"\nlast {trainable} weight layer(s) trainable, {args.images} images × {args.epochs} epochs, "
          f"{args.size} px")
    print(f"  full path, checkpoints every epoch (default): {full_s:8.2f} s "
          f"(training {full.fit.seconds:.2f} s)")
    print(f"  cached path, checkpoints at the end (default): {cached_s:7.2f} s "
          f"(training {cached.fit.seconds:.2f} s; prefix once + setup {cached_s - cached.fit.seconds:.2f} s)")
    print(f"  speed-up: {full_s / cached_s:.1f}× end to end, "
          f"{full.fit.seconds / cached.fit.seconds:.1f}× in training")
    if args.full_end:
        end_s, end, _ = _run(False, trainable, args, tmp, every="end")
        assert end.fit is not None
        tail = cached.fit.seconds / args.epochs
        prefix = max(end.fit.seconds - cached.fit.seconds, 0.0) / args.epochs
        print(f"  full path, checkpoints at the end:           {end_s:8.2f} s "
              f"(training {end.fit.seconds:.2f} s)")
        print(f"  caching alone (both write at the end): {end_s / cached_s:.1f}× end to end, "
              f"{end.fit.seconds / cached.fit.seconds:.1f}× in training")
        print(f"  per epoch: frozen prefix {prefix:.3f} s (what caching skips), trainable tail "
              f"{tail:.3f} s (forward, backward, optimizer step, metrics: paid on both paths)")
    print(f"  largest weight difference between the two trained models: {diff:.2e}")
    if cached.freeze is not None:
        print(f"  trainable parameters: {cached.freeze.trainable_params:,} of "
              f"{cached.freeze.trainable_params + cached.freeze.frozen_params:,}")
    t0 = time.perf_counter()
    save_checkpoint(tmp / "probe.pt", model_state=cached_model.state_dict(), config={}, epoch=0,
                    metrics={})
    print(f"  one checkpoint write of this model (every epoch: 1–2 per epoch; end: 2 in all): "
          f"{time.perf_counter() - t0:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--also-head", action=argparse.BooleanOptionalAction, default=True,
                    help="also time training the output layer alone")
    ap.add_argument("--full-end", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the full path with checkpoint_every: end")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        _compare(3, args, Path(tmp))
        if args.also_head:
            _compare(1, args, Path(tmp))
    print(f"\ntorch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")


if __name__ == "__main__":
    main()
