"""Frozen-prefix caching: seed 000's transfer stage with and without cached activations.

Seed-000 AlexNet at its 256 px input (``--size``), 600 target images, the last 3 dense layers
trainable (the frozen convs and first dense layer are the prefix), 10 epochs, Adagrad, batch 64.
The full path recomputes the frozen prefix every epoch; the cached path computes it once and
trains the tail on its activations. Both go through :func:`medtransfer.strategies.train_stage`,
the code the studies run, and the two trained models are compared. A third run is the cached
path with the activations already in the disk cache (what a second seed, a search trial over
the tail's settings or a rerun gets). ``--also-head`` does the same for the output layer alone.

Checkpoints: with ``checkpoint_every: auto`` (the default) the full path writes the whole
model's ``last.pt`` every epoch and ``best.pt`` on each improvement, the cached path writes both
once at the end. ``--full-end`` also times the full path writing at the end, which separates
what caching saves from what fewer writes save. Caching skips the frozen prefix, so its gain
per epoch is (prefix + tail) / tail: with 20.9M trainable parameters the tail is not free, and
at 128 px (a quarter of the conv work) the gain is about 3×. End to end, one run must still
compute the prefix once, which for 10 epochs bounds the gain below 10× unless the activations
are on disk already.

Run: ``python benchmarks/bench_frozen_cache.py [--size 256] [--implementation fused]
[--device cuda] [--threads N]``. ``--implementation fused`` makes the tail's Adagrad step one
kernel (both paths), which shrinks the tail and so raises the gain.
Synthetic images, so it needs no data; all numbers are from this one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medtransfer.data import ImageCache
from medtransfer.freezing import FreezeConfig
from medtransfer.models import create_model
from medtransfer.strategies import CacheConfig, Stage, StageResult, TransferData, train_stage
from medtransfer.train import OptimizerConfig, TrainConfig, TrainEnv, save_checkpoint
from medtransfer.train.optim import OptimizerName


def _images(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    return (rng.integers(0, 256, (n, 1, size, size), dtype=np.uint8),
            rng.integers(0, 2, n).astype(np.int64))


def _run(cache: bool, trainable: int, args: argparse.Namespace, tmp: Path, every: str = "auto",
         store: ImageCache | None = None, name: str = "") -> tuple[float, StageResult, torch.nn.Module]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model("alexnet_krizhevsky", num_classes=1, in_chans=1, img_size=args.size)
    train = _images(np.random.default_rng(1), args.images, args.size)
    cfg = TrainConfig(epochs=args.epochs, batch_size=64, progress=False, checkpoint_monitor="loss",
                      optimizer=OptimizerConfig(name=OptimizerName.adagrad, lr=1e-3,
                                                implementation=args.implementation),
                      checkpoint_every=every)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    stage = train_stage(
        Stage("freeze", FreezeConfig(trainable_layers=trainable), cfg, CacheConfig(enabled=cache)),
        model, TransferData(train),
        TrainEnv(1, tmp / f"{cache}-{trainable}-{every}{name}", 2, args.device, cache=store),
    )
    return time.perf_counter() - t0, stage, model


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(float((x - y).abs().max()) for x, y in
               zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def _compare(trainable: int, args: argparse.Namespace, tmp: Path) -> None:
    store = ImageCache(tmp / f"cache-{trainable}")
    full_s, full, full_model = _run(False, trainable, args, tmp)
    cached_s, cached, cached_model = _run(True, trainable, args, tmp, store=store)
    warm_s, warm, warm_model = _run(True, trainable, args, tmp, store=store, name="-warm")
    assert full.path == "full" and cached.path == warm.path == "cached", cached.reason
    assert store.misses == 1 and store.hits == 1, (store.misses, store.hits)
    assert full.fit is not None and cached.fit is not None and warm.fit is not None
    print(f"\nlast {trainable} weight layer(s) trainable, {args.images} images × {args.epochs} epochs, "
          f"{args.size} px")
    print(f"  full path, checkpoints every epoch (default): {full_s:8.2f} s "
          f"(training {full.fit.seconds:.2f} s)")
    print(f"  cached path, checkpoints at the end (default): {cached_s:7.2f} s "
          f"(training {cached.fit.seconds:.2f} s; prefix once + setup {cached_s - cached.fit.seconds:.2f} s)")
    print(f"  cached path, activations on disk already:      {warm_s:7.2f} s "
          f"(training {warm.fit.seconds:.2f} s; read + setup {warm_s - warm.fit.seconds:.2f} s)")
    print(f"  speed-up: {full.fit.seconds / cached.fit.seconds:.1f}× in training, "
          f"{full_s / cached_s:.1f}× end to end, {full_s / warm_s:.1f}× end to end from the disk cache")
    if args.full_end:
        end_s, end, _ = _run(False, trainable, args, tmp, every="end")
        assert end.fit is not None
        tail = cached.fit.seconds / args.epochs
        prefix = max(end.fit.seconds - cached.fit.seconds, 0.0) / args.epochs
        print(f"  full path, checkpoints at the end:           {end_s:8.2f} s "
              f"(training {end.fit.seconds:.2f} s)")
        print(f"  caching alone (both write at the end): {end.fit.seconds / cached.fit.seconds:.1f}× in "
              f"training, {end_s / cached_s:.1f}× end to end, {end_s / warm_s:.1f}× from the disk cache")
        print(f"  per epoch: frozen prefix {prefix:.3f} s (what caching skips), trainable tail "
              f"{tail:.3f} s (forward, backward, optimizer step, metrics: paid on both paths)")
    computed, from_disk = _max_diff(full_model, cached_model), _max_diff(full_model, warm_model)
    print(f"  largest weight difference to the full path's model: {computed:.2e} "
          f"(computed), {from_disk:.2e} (read from disk)")
    if (worst := max(computed, from_disk)) > args.tolerance:
        raise SystemExit(f"the cached path's weights differ from the full path's by {worst:.2e} "
                         f"(allowed: {args.tolerance:.2e}): the two paths must train the same model")
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
    ap.add_argument("--size", type=int, default=256, help="input size (seed 000: 256)")
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--implementation", default="auto", choices=["auto", "for_loop", "foreach", "fused"],
                    help="optimizer.implementation (fused: one Adagrad kernel per step)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--also-head", action=argparse.BooleanOptionalAction, default=False,
                    help="also time training the output layer alone")
    ap.add_argument("--full-end", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the full path with checkpoint_every: end")
    ap.add_argument("--tolerance", type=float, default=0.0,
                    help="largest weight difference allowed between the paths (default 0: bitwise equal)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        _compare(3, args, Path(tmp))
        if args.also_head:
            _compare(1, args, Path(tmp))
    print(f"\ntorch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, "
          f"Adagrad implementation {args.implementation}")


if __name__ == "__main__":
    main()
