"""Wall time of one 8-trial grid search with 1 worker and with 2 workers, in one run.

A single-source study (its pretraining shared by every trial) searched over 4 learning rates × 2
batch sizes of the transfer, on synthetic grayscale images written to a temporary folder. The
image cache and the pretraining are done beforehand, so both timed searches do only their 8
trials and the tuned study's one test run. Each search goes into a fresh run folder; both must
propose the same trials with the same scores and choose the same best point. Times and their
ratio are from this one run on this machine.

Run: ``.venv/bin/python benchmarks/bench_search.py [--executor ray] [--size 64] [--epochs 6]``
"""

from __future__ import annotations

import argparse
import copy
import csv
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_workers import _config

from medtransfer.search import run_search
from medtransfer.study import ExecutorSettings


def _search(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    cfg = _config(root, args)
    cfg.update(name="bench-search", variants=[{"name": "baseline"}])
    cfg["search"] = {"space": {"transfer.train.optimizer.lr": [1e-4, 3e-4, 1e-3, 3e-3],
                               "transfer.train.batch_size": [16, 32]},
                     "objective": {"metric": "auc"}}
    return cfg


def _timed(raw: dict[str, Any], out: Path, workers: int, args: argparse.Namespace) -> float:
    t0 = time.perf_counter()
    run_search(copy.deepcopy(raw), out, executor=ExecutorSettings(args.executor, workers, args.address),
               report=False, progress=False, echo=lambda m: None)
    return time.perf_counter() - t0


def _trials(out: Path) -> list[tuple[str, ...]]:
    with (out / "trials.csv").open(newline="") as fh:
        return sorted(tuple(r.values()) for r in csv.DictReader(fh))


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
        raw = _search(root, args)
        # Warm-up: decode the images and pretrain once; each timed search copies the pretraining.
        warm = root / "warm"
        warm_raw = copy.deepcopy(raw)
        warm_raw["search"]["space"] = {"transfer.train.optimizer.lr": [1e-3]}
        run_search(warm_raw, warm, report=False, progress=False, echo=lambda m: None)
        times = {}
        for workers in (1, 2):
            out = root / f"w{workers}"
            (out / "units").mkdir(parents=True)
            for unit in (warm / "units").glob("pretrain-*"):
                shutil.copytree(unit, out / "units" / unit.name)
            times[workers] = _timed(raw, out, workers, args)
        same = _trials(root / "w1") == _trials(root / "w2") and \
            (root / "w1" / "best.yaml").read_text() == (root / "w2" / "best.yaml").read_text()
    print(f"8-trial grid search ({args.executor}, {args.size} px, {args.images} images per class, "
          f"{args.epochs} epochs per trial)")
    print(f"  1 worker : {times[1]:7.1f} s")
    print(f"  2 workers: {times[2]:7.1f} s   ({times[1] / times[2]:.2f}× as fast)")
    print(f"  same trials, scores and best point: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
