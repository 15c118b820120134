"""``train.compile`` (torch.compile) against eager training, for the seed-000 AlexNet (128 px,
Adagrad) and EfficientNet-Lite0 (64 px, 3 channels, Adam), batch 64: the first step's seconds
(compiling included), then training steps' and evaluation batches' images/s, in fp32 and bf16.

Run: ``python benchmarks/bench_compile.py [--device cuda] [--steps 6]``. Synthetic images; one
run's numbers, printed with their ratios (never asserted). The first run on a machine also fills
TorchInductor's cache (``/tmp/torchinductor_$USER``), so its compile times are the cold ones.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from medtransfer.models import create_model
from medtransfer.train.compiled import compile_model, compile_problem
from medtransfer.train.precision import resolve_precision

MODELS: dict[str, tuple[int, int, Callable[[list[nn.Parameter]], torch.optim.Optimizer]]] = {
    "alexnet_krizhevsky": (128, 1, lambda p: torch.optim.Adagrad(p, lr=1e-2, initial_accumulator_value=0.1)),
    "efficientnet_lite0": (64, 3, lambda p: torch.optim.Adam(p, lr=1e-3)),
}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(name: str, device: str, precision: str, compiled: bool, steps: int,
            channels_last: bool = False) -> dict[str, float]:
    """First step seconds, training and evaluation images/s of one model in one setting."""
    size, chans, make_opt = MODELS[name]
    torch.manual_seed(0)
    model = create_model(name, num_classes=1, in_chans=chans, img_size=size).to(device)
    x = torch.rand(64, chans, size, size, device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if compiled:
        compile_model(model, device)
    y = torch.randint(0, 2, (64,), device=device).float()
    amp = resolve_precision(precision, device)
    opt = make_opt(list(model.parameters()))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with amp.autocast():
            logits = model(x)
        nn.functional.binary_cross_entropy_with_logits(logits.float()[:, 0], y).backward()
        opt.step()

    model.train()
    t0 = time.perf_counter()
    step()
    _sync(device)
    first = time.perf_counter() - t0
    step()  # a second warm-up: compiled graphs may specialise once more
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    train_ips = steps * 64 / (time.perf_counter() - t0)
    model.eval()
    with torch.no_grad():
        for i in range(steps + 2):
            if i == 2:
                _sync(device)
                t0 = time.perf_counter()
            with amp.autocast():
                model(x)
        _sync(device)
    return {"first": first, "train": train_ips, "eval": steps * 64 / (time.perf_counter() - t0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--channels-last", action="store_true", help="NHWC inputs and weights (both runs)")
    args = ap.parse_args()
    problem = compile_problem(args.device)
    if problem is not None:
        raise SystemExit(f"bench_compile: torch.compile needs {problem}")
    reduced = "bf16" if args.device == "cpu" else resolve_precision("auto", args.device).name
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch 64")
    layout = "channels_last" if args.channels_last else "contiguous"
    print("| model | precision, layout | eager train img/s | compiled train img/s | eager eval img/s | "
          "compiled eval img/s | first step eager / compiled |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        for precision in ("fp32", reduced):
            e = measure(name, args.device, precision, False, args.steps, args.channels_last)
            c = measure(name, args.device, precision, True, args.steps, args.channels_last)
            print(f"| {name} | {precision}, {layout} | {e['train']:.1f} "
                  f"| {c['train']:.1f} ({c['train'] / e['train']:.2f}×) "
                  f"| {e['eval']:.1f} | {c['eval']:.1f} ({c['eval'] / e['eval']:.2f}×) "
                  f"| {e['first']:.1f} s / {c['first']:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
