"""Training images/s of the seed-000 AlexNet (128 px, batch 64, Adagrad) with glibc's malloc as
it comes (``MEDTRANSFER_MALLOC=system``) and as medtransfer tunes it (mmap and trim thresholds
1 GiB, :mod:`medtransfer.train.allocator`), fp32 and bf16, each in a fresh process (the setting
is per process). Also the Adagrad step alone, for-loop and fused, where the difference is
largest. One run on this machine; the numbers are printed with their ratios, never asserted.

Run: ``python benchmarks/bench_allocator.py [--steps 10] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

_CHILD = """
import json, sys, time, torch
sys.path.insert(0, {bench!r})
from bench_precision import alexnet_step
from medtransfer.models import create_model
from medtransfer.train.allocator import tune_allocator
out = {{"allocator": tune_allocator()}}
for prec in ("fp32", "bf16"):
    out[prec] = alexnet_step("cpu", 128, 64, {steps}, prec, False)
m = create_model("alexnet_krizhevsky", num_classes=1, in_chans=1, img_size=128)
for impl in ("for_loop", "fused"):
    opt = torch.optim.Adagrad(m.parameters(), lr=1e-2, **({{"fused": True}} if impl == "fused" else {{}}))
    for p in m.parameters():
        p.grad = torch.full_like(p, 1e-3)
    opt.step()
    t0 = time.perf_counter()
    for _ in range(10):
        opt.step()
    out["adagrad_" + impl] = (time.perf_counter() - t0) / 10 * 1000
print(json.dumps(out))
"""


def _measure(system: bool, steps: int) -> dict[str, float | str]:
    env = {k: v for k, v in os.environ.items() if k != "MEDTRANSFER_MALLOC"}
    if system:
        env["MEDTRANSFER_MALLOC"] = "system"
    code = _CHILD.format(bench=str(Path(__file__).parent), steps=steps)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True)
    result: dict[str, float | str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2, help="alternating system/tuned pairs")
    args = ap.parse_args()
    runs: dict[bool, list[dict[str, float | str]]] = {True: [], False: []}
    for _ in range(args.rounds):  # alternate, so a drift in the CPU's speed hits both alike
        for system in (True, False):
            runs[system].append(_measure(system, args.steps))
    print(f"seed-000 AlexNet, 128 px, batch 64, CPU threads {os.cpu_count()}, {args.rounds} round(s)")
    for system in (True, False):
        print(f"  {'system malloc' if system else 'tuned'}: {runs[system][0]['allocator']}")

    def mean(system: bool, key: str) -> float:
        return sum(float(r[key]) for r in runs[system]) / len(runs[system])

    for key, unit in (("fp32", "images/s"), ("bf16", "images/s"),
                      ("adagrad_for_loop", "ms/step"), ("adagrad_fused", "ms/step")):
        base, tuned = mean(True, key), mean(False, key)
        gain = tuned / base if unit == "images/s" else base / tuned
        print(f"{key:17s} system {base:7.1f}  tuned {tuned:7.1f} {unit}  ({gain:.2f}x as fast)")


if __name__ == "__main__":
    main()
