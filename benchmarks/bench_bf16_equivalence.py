"""bf16 against fp32 as an equivalence over seeds: the same AlexNet trained on PneumoniaMNIST chest
X-rays (``../shared/data/medmnist``) in fp32 and in bf16 autocast, once per seed (initial weights,
shuffling, dropout). Printed per precision: the test AUC and the test accuracy at the
threshold chosen on the validation set (Youden), mean ± sd over the seeds, and bf16's mean
difference against fp32's seed-to-seed sd (what ``tests/train/test_precision_real.py`` checks).

Run: ``python benchmarks/bench_bf16_equivalence.py [--seeds 8] [--images 800] [--epochs 5]``.
Numbers from one run, never asserted here; ``cpu capability`` says which kernels ran (bf16 on a CPU
without AMX/AVX512-BF16 is emulated, with other rounding).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from medtransfer.evaluate import choose_threshold, compute_metrics
from medtransfer.models import create_model
from medtransfer.train import OptimizerConfig, TrainConfig, TrainEnv, fit, predict_proba

NPZ = Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist" / "pneumoniamnist.npz"
Arrays = tuple[np.ndarray, np.ndarray]


def load_parts(npz: Path, images: int) -> tuple[Arrays, Arrays, Arrays]:
    """``images`` training images (the same for every seed: the spread measured is training's),
    and the official validation and test sets."""
    with np.load(npz) as data:
        def part(name: str) -> Arrays:
            return data[f"{name}_images"][:, None], data[f"{name}_labels"][:, 0].astype(np.int64)

        x, y = part("train")
        rows = np.random.default_rng(0).permutation(len(y))[:images]
        return (x[rows], y[rows]), part("val"), part("test")


def seed_metrics(npz: Path, seed: int, precision: str, out: Path, *, images: int = 800,
                 epochs: int = 5, base: int = 8) -> dict[str, float]:
    """Test AUC and test accuracy at the validation-chosen (Youden) threshold of one training."""
    train, val, test = load_parts(npz, images)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the same initial weights for both precisions of a seed
        model = create_model("alexnet_small", num_classes=2, in_chans=1, img_size=28, base=base,
                             dense=(64, 64))
    cfg = TrainConfig(epochs=epochs, batch_size=64, progress=False, precision=precision,
                      optimizer=OptimizerConfig(name="adam", lr=1e-3))
    result = fit(model, train, val, cfg, TrainEnv(seed, out / f"{precision}-{seed}", 2))
    assert result.precision == precision
    cut = choose_threshold(val[1], predict_proba(model, val[0], precision=precision)[:, 1])
    metrics = compute_metrics(test[1], predict_proba(model, test[0], precision=precision), threshold=cut)
    return {"auc": metrics["auc"], "accuracy": metrics["accuracy"]}


def measure(npz: Path, seeds: range, echo: Callable[[str], None] | None = None,
            **kwargs: int) -> dict[str, dict[str, list[float]]]:
    """metric → precision → one value per seed; ``echo`` gets a line per training."""
    out: dict[str, dict[str, list[float]]] = {"auc": {}, "accuracy": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for precision in ("fp32", "bf16"):
                metrics = seed_metrics(npz, seed, precision, Path(tmp), **kwargs)
                for metric, value in metrics.items():
                    out[metric].setdefault(precision, []).append(value)
                if echo is not None:
                    echo(f"  seed {seed} {precision}: AUC {metrics['auc']:.4f}, "
                         f"accuracy {metrics['accuracy']:.4f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--npz", type=Path, default=NPZ)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--images", type=int, default=800)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--base", type=int, default=8, help="the AlexNet's first conv width")
    args = ap.parse_args()
    print(f"AlexNet (base {args.base}) on {args.images} PneumoniaMNIST images, {args.epochs} epochs, "
          f"{args.seeds} seeds; torch {torch.__version__}, cpu capability "
          f"{torch.backends.cpu.get_cpu_capability()}, threads {torch.get_num_threads()}")
    values = measure(args.npz, range(args.seeds), lambda line: print(line, flush=True), images=args.images,
                     epochs=args.epochs, base=args.base)
    for metric, by in values.items():
        ref, got = by["fp32"], by["bf16"]
        sd = statistics.stdev(ref)
        diff = statistics.fmean(got) - statistics.fmean(ref)
        print(f"{metric:>8}: fp32 {statistics.fmean(ref):.4f} ± {sd:.4f}, bf16 {statistics.fmean(got):.4f} "
              f"± {statistics.stdev(got):.4f}; mean diff {diff:+.4f} = {diff / sd:+.2f} fp32 sd"
              f"  (per seed fp32 {[round(v, 3) for v in ref]}, bf16 {[round(v, 3) for v in got]})")


if __name__ == "__main__":
    main()
