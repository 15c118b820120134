"""Wall time of one 4-unit study with 1 worker and with 2 workers.

Two variants × (pretrain + transfer) = 4 units, i.e. two independent jobs, on synthetic
grayscale images written to a temporary folder. Each run goes into a fresh run folder; the image
cache is filled beforehand so neither run decodes images. Both runs must give the same
results.csv. Times and their ratio are from this one run on this machine.

Run: ``.venv/bin/python benchmarks/bench_workers.py [--executor ray] [--size 64] [--epochs 6]``
(``--executor ray`` starts a local Ray, or joins ``--address HOST:PORT``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medtransfer.api import run_study
from medtransfer.study import ExecutorSettings, study_from_dict
from medtransfer.study.runner import Runner


def _folder(root: Path, classes: list[str], per_class: int, size: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            arr = np.clip(rng.normal(80 + 60 * k, 40, (size, size)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / name / f"{i}.png")
    return str(root)


def _config(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    train = {"epochs": args.epochs, "batch_size": 32, "progress": False,
             "optimizer": {"name": "adam", "lr": 0.001}}
    return {
        "name": "bench-workers",
        "seed": 0,
        "cache_dir": str(root / "cache"),
        "preprocess": {"size": args.size},
        "source": {"data": {"path": _folder(root / "src", ["neg", "pos"], args.images, args.size, 1)},
                   "split": {"val_fraction": 0.2}},
        "target": {
            "data": {"path": _folder(root / "tgt", ["normal", "covid"], args.images, args.size, 2),
                     "classes": ["normal", "covid"]},
            "split": {"test_sets": 1, "test_per_class": args.images // 5,
                      "train_per_class": args.images // 2, "val_fraction": 0.2},
        },
        "model": {"name": "alexnet_small", "options": {"base": 16, "dense": [64, 64]}},
        "pretrain": {"train": train},
        "transfer": {"freeze": {"trainable_layers": 3}, "train": train},
        "variants": [{"name": "baseline"}, {"name": "bn", "model": {"batch_norm": True}}],
    }


def _timed(cfg: dict[str, Any], out: Path, workers: int, args: argparse.Namespace) -> float:
    t0 = time.perf_counter()
    run_study(study_from_dict(cfg), out, executor=ExecutorSettings(args.executor, workers, args.address),
              report=False, progress=False, echo=lambda m: None)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--executor", choices=["local", "ray"], default="local")
    ap.add_argument("--address", help="Ray cluster HOST:PORT (with --executor ray)")
    ap.add_argument("--size", type=int, default=64, help="image side in pixels")
    ap.add_argument("--images", type=int, default=200, help="images per class, source and target")
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = _config(root, args)
        Runner(study_from_dict(cfg), root / "warm-cache", progress=False, echo=lambda m: None).prepare()
        print(f"4 units (2 variants × pretrain + transfer), {args.images} images per class, "
              f"{args.size} px, {args.epochs} epochs; executor {args.executor}; {os.cpu_count()} CPUs")
        times = {w: _timed(cfg, root / f"run-{w}", w, args) for w in (1, 2)}
        values = [np.loadtxt(root / f"run-{w}" / "results.csv", delimiter=",", skiprows=1, usecols=9)
                  for w in (1, 2)]
    for w, s in times.items():
        print(f"  {w} worker{'s' if w > 1 else ' '}: {s:7.1f} s")
    # Not bitwise equal: 1 worker uses all cores' threads, 2 workers half each (float sums reorder).
    gap = float(np.abs(values[0] - values[1]).max())
    print(f"  1 worker / 2 workers: {times[1] / times[2]:.2f}×; largest difference in results.csv: {gap:.2g}")
    if gap > 1e-4:
        raise SystemExit(f"results differ between 1 and 2 workers by {gap:.2g} (more than float reordering)")


if __name__ == "__main__":
    main()
