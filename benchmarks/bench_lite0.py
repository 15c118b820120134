"""Where EfficientNet-Lite0 spends a training step at 64 px on this CPU (batch 64, 3 channels,
Adam), and what changes it: threads, channels-last, bf16, TF "same" padding.

Run: ``python benchmarks/bench_lite0.py [--steps 4]``. Prints images/s per setting and a
profile of one fp32 step by kind of work (depthwise 3×3/5×5 convolutions, 1×1 and stem/head
convolutions, batch norm, padding, activations, the optimizer, the rest), forward and backward
together. Synthetic images; one run's numbers, never asserted.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from _step import bare_step
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from medtransfer.models import create_model

SIZE, BATCH = 64, 64


def _model(tf_padding: bool) -> nn.Module:
    torch.manual_seed(0)
    return create_model("efficientnet_lite0", num_classes=1, in_chans=3, img_size=SIZE, tf_padding=tf_padding)


def images_per_second(steps: int, *, threads: int, precision: str = "fp32", channels_last: bool = False,
                      tf_padding: bool = True) -> float:
    """Training images/s (forward, backward, Adam) on one random batch, after a warm-up step."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return bare_step(_model(tf_padding), torch.rand(BATCH, 3, SIZE, SIZE),
                         lambda p: torch.optim.Adam(p, lr=1e-3), precision=precision,
                         channels_last=channels_last, steps=steps)
    finally:
        torch.set_num_threads(old)


def _kind(name: str, shapes: list) -> str:
    """The kind of work of one profiled op, from its name and input shapes."""
    if "conv" in name:
        weights = [s for s in shapes if isinstance(s, list) and len(s) == 4]
        if any(w[1] == 1 and w[2] > 1 for w in weights):
            return "depthwise conv (3×3 / 5×5, groups = channels)"
        return "1×1 / stem / head conv"
    if "batch_norm" in name:
        return "batch norm"
    if "pad" in name:
        return "padding (TF 'same', strided convs)"
    if any(k in name for k in ("hardtanh", "relu", "clamp", "threshold")):
        return "ReLU6"
    return "rest (copies, pooling, head, loss, autograd)"


def _phase(ev: object) -> str:
    """forward / backward / optimizer: the record_function block an op ran in."""
    while ev is not None:
        if getattr(ev, "name", "") in ("forward", "backward", "optimizer"):
            return str(ev.name)  # type: ignore[attr-defined]
        ev = getattr(ev, "cpu_parent", None)
    return "other"


def profile_step() -> dict[str, dict[str, float]]:
    """Self CPU milliseconds of one fp32 training step, by kind of work and phase."""
    model = _model(True)
    x, y = torch.rand(BATCH, 3, SIZE, SIZE), torch.randint(0, 2, (BATCH,)).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with record_function("forward"):
            loss = nn.functional.binary_cross_entropy_with_logits(model(x)[:, 0], y)
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            opt.step()

    model.train()
    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    kinds: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for ev in prof.events():  # self times: every op counted once, without its children
        phase = _phase(ev)
        kind = "optimizer (Adam)" if phase == "optimizer" else _kind(ev.name, list(ev.input_shapes or []))
        kinds[kind][phase] += ev.self_cpu_time_total / 1000
    return dict(sorted(kinds.items(), key=lambda kv: -sum(kv[1].values())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    n = torch.get_num_threads()
    print(f"EfficientNet-Lite0, {SIZE} px, batch {BATCH}, torch {torch.__version__}, {n} threads by default")
    settings = [
        ("fp32, 1 thread", {"threads": 1}),
        (f"fp32, {n} threads", {"threads": n}),
        (f"fp32 channels_last, {n} threads", {"threads": n, "channels_last": True}),
        (f"bf16, {n} threads", {"threads": n, "precision": "bf16"}),
        (f"bf16 channels_last, {n} threads", {"threads": n, "precision": "bf16", "channels_last": True}),
        (f"fp32, symmetric padding (tf_padding: false), {n} threads", {"threads": n, "tf_padding": False}),
    ]
    base = None
    for label, kw in settings:
        ips = images_per_second(args.steps, **kw)  # type: ignore[arg-type]
        base = base or ips
        print(f"{label:58s} {ips:7.1f} images/s ({ips / base:.2f}× 1 thread)", flush=True)
    kinds = profile_step()
    total = sum(sum(v.values()) for v in kinds.values())
    print(f"\none fp32 step, {n} threads: {total:.0f} ms of op self time (forward / backward)")
    for kind, phases in kinds.items():
        ms = sum(phases.values())
        split = f"{phases.get('forward', 0):.0f} / {phases.get('backward', 0):.0f} ms"
        print(f"  {kind:48s} {ms:8.1f} ms {ms / total:6.1%}   {split}")


if __name__ == "__main__":
    main()
