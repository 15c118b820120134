"""Feature extraction in NCHW against channels-last (NHWC) layout, through the code a features
strategy runs (``extract_features``; ``strategy.channels_last``), for the ImageNet families a study
transfers from, at 224 px: images/s of each layout, measured twice in alternation (the CPU's speed
drifts), and the ratio NHWC / NCHW. Also the largest difference between the two layouts' features.

Run: ``python benchmarks/bench_channels_last.py [--images 32] [--models efficientnet_lite0 ...]``.
Random weights and synthetic images: the layout's speed does not depend on them. One run's numbers,
never asserted.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from medtransfer.models import create_model
from medtransfer.strategies import FeaturesStrategy, extract_features

MODELS = ("efficientnet_lite0", "resnet50", "densenet121", "vgg16")


def images_per_second(model: torch.nn.Module, images: np.ndarray,
                      channels_last: bool) -> tuple[float, np.ndarray]:
    """Images/s of one extraction of ``images`` (after a warm-up batch), and the features."""
    cfg = FeaturesStrategy(layer="pooled", batch_size=16, disk_cache=False, channels_last=channels_last)
    extract_features(model, images[:16], cfg)
    t0 = time.perf_counter()
    feats = extract_features(model, images, cfg)
    return len(images) / (time.perf_counter() - t0), feats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    args = ap.parse_args()
    images = np.random.default_rng(0).integers(0, 256, (args.images, 3, args.size, args.size), dtype=np.uint8)
    print(f"feature extraction ('pooled'), {args.images} images at {args.size} px, batch 16, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'model':20s} {'NCHW images/s':>16s} {'NHWC images/s':>16s} {'NHWC / NCHW':>12s} {'max |Δ|':>9s}")
    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name, num_classes=2, in_chans=3, img_size=args.size)
        speeds: dict[bool, list[float]] = {False: [], True: []}
        feats: dict[bool, np.ndarray] = {}
        for _ in range(2):
            for layout in (False, True):
                ips, feats[layout] = images_per_second(model, images, layout)
                speeds[layout].append(ips)
        nchw, nhwc = (f"{a:.1f} / {b:.1f}" for a, b in (speeds[False], speeds[True]))
        ratio = float(np.mean(speeds[True]) / np.mean(speeds[False]))
        delta = float(np.abs(feats[True] - feats[False]).max())
        print(f"{name:20s} {nchw:>16s} {nhwc:>16s} {ratio:11.2f}× {delta:9.1e}", flush=True)


if __name__ == "__main__":
    main()
