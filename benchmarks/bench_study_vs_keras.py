"""Seed 000's whole study (issue 14) with medtransfer in fp32 and fast (bf16 autocast,
channels-last pretraining, fused Adagrad), then the Keras recipe it replaces on the same splits,
in one run: each phase's seconds, accuracy and AUC, the ratios Keras / medtransfer, and the fast
run's pretraining images/s against a bare training step of the same AlexNet in the same setting.

Run: ``python benchmarks/bench_study_vs_keras.py [--out DIR] [--keras-python PY]``. The study is
``benchmarks/seed000_bench.yaml`` (2 variants, 128 px, 4 pretraining epochs, batch 64, Adagrad
1e-2, 10 transfer epochs on 570 images, 4 test sets of 300) on ``../shared/data/cxr``; each
medtransfer run is a ``medtransfer run`` command with an empty image cache of its own (so it
decodes every image, as Keras does). The Keras recipe (``../shared/bench/keras_seed000_study.py``)
runs in its own TensorFlow environment (default ``/tmp/keras-venv/bin/python``; create it with
``python3 -m venv /tmp/keras-venv && /tmp/keras-venv/bin/pip install -q tensorflow-cpu keras
scikit-learn``) on the fp32 run's ``splits/*.csv``; it is skipped with a message where
TensorFlow is absent. Phase times come from each run's ``run.log`` and units' ``result.json``;
the whole study is the wall time of each command. Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from _step import bare_step, matmul_flops_per_second, train_flops_per_image

REPO = Path(__file__).resolve().parents[1]
CONFIG = Path(__file__).with_name("seed000_bench.yaml")
VARIANTS = ("baseline", "batchnorm")
SIZE, PRE_EPOCHS = 128, 4
_CLI = "import sys; from medtransfer.cli import main; sys.exit(main(sys.argv[1:]))"
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \S+\s+\S+: (.*)$")


@dataclass
class Phases:
    """One study's measurements: seconds per phase, test accuracy / AUC (mean of the 4 test
    sets) per variant."""

    name: str
    whole: float = 0.0
    pretrain: dict[str, float] = field(default_factory=dict)
    transfer: dict[str, float] = field(default_factory=dict)
    acc: dict[str, float] = field(default_factory=dict)
    auc: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    load: tuple[float, float] = (0.0, 0.0)

    @property
    def rest(self) -> float:
        return self.whole - sum(self.pretrain.values()) - sum(self.transfer.values())


def _load() -> float:
    return os.getloadavg()[0]


def _log_lines(run: Path) -> list[tuple[float, str]]:
    out = []
    for line in (run / "run.log").read_text(encoding="utf-8").splitlines():
        m = _STAMP.match(line)
        if m:
            stamp = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.append((stamp, m.group(2)))
    return out


def _after(lines: list[tuple[float, str]], i: int, end: float) -> float:
    """Seconds from line ``i`` to the next line (or ``end``)."""
    return (lines[i + 1][0] if i + 1 < len(lines) else end) - lines[i][0]


def _units(run: Path, kind: str) -> dict[str, dict]:
    """Variant → result.json of its ``kind`` unit (pretrain / cell)."""
    out = {}
    for d in sorted((run / "units").glob(f"{kind}-*")):
        variant = d.name.split("-")[1]
        out[variant] = json.loads((d / "result.json").read_text())
    return out


@dataclass(frozen=True)
class Setting:
    """How medtransfer trains in one run: precision, channels-last pretraining, fused optimizer."""

    precision: str = "fp32"
    channels_last: bool = False
    fused: bool = False

    @property
    def name(self) -> str:
        return " + ".join([self.precision, *(["channels_last"] if self.channels_last else []),
                           *(["fused Adagrad"] if self.fused else [])])

    @property
    def folder(self) -> str:
        return self.name.replace(" + ", "-").replace(" ", "_")

    def sets(self) -> dict[str, object]:
        out: dict[str, object] = {f"{s}.train.precision": self.precision for s in ("pretrain", "transfer")}
        if self.channels_last:
            out["pretrain.train.channels_last"] = "true"
        if self.fused:
            out.update({f"{s}.train.optimizer.implementation": "fused" for s in ("pretrain", "transfer")})
        return out


def medtransfer_study(out: Path, data: Path, setting: Setting) -> Phases:
    """Run the study as ``setting`` says into ``out`` (an empty cache of its own) and read its
    phases: pretraining = the unit's wall time in run.log (model, fit, checkpoints, val
    prediction); transfer = the cell's ``fit`` seconds; evaluation + rest = everything else
    (start-up, decoding, audit, frozen-prefix activations, test prediction, tables, report)."""
    name = setting.name
    sets = {"source.data.path": data / "tb", "target.data.path": data / "covid",
            "cache_dir": out / "cache", **setting.sets()}
    cmd = [sys.executable, "-c", _CLI, "-q", "run", str(CONFIG), "--out", str(out / "run"), "--no-progress",
           *(a for k, v in sets.items() for a in ("--set", f"{k}={v}"))]
    load0, t0 = _load(), time.time()
    subprocess.run(cmd, check=True, cwd=REPO)
    end = time.time()
    return read_study(Phases(name, whole=end - t0, load=(load0, _load())), out / "run", t0, end)


def read_study(res: Phases, run: Path, t0: float, end: float) -> Phases:
    """``res`` with the phases of the finished run folder ``run`` (started at ``t0``, ended at
    ``end``, both seconds since the epoch)."""
    lines = _log_lines(run)
    for i, (_, msg) in enumerate(lines):
        m = re.match(r"\[(\w+)\] pretraining on", msg)
        if m:
            res.pretrain[m.group(1)] = _after(lines, i, end)
        if msg.startswith("data: "):
            decode = re.search(r"\(([\d.]+) s, cache", msg)
            res.notes.append(f"start-up + decoding {lines[i][0] - t0:.1f} s"
                             + (f" (decoding {decode.group(1)} s)" if decode else ""))
        if msg.startswith("audit target"):
            first = next(j for j, (_, m2) in enumerate(lines) if m2.startswith("audit "))
            res.notes.append(f"model checks + audit {lines[i][0] - lines[first - 1][0]:.1f} s")
        if msg.startswith("summary: "):
            res.notes.append(f"tables + report {end - lines[i - 1][0]:.1f} s")
    cells = _units(run, "cell")
    for variant, r in cells.items():
        res.transfer[variant] = float(r["seconds"])
        res.acc[variant] = float(np.mean([t["accuracy"] for t in r["tests"].values()]))
        res.auc[variant] = float(np.mean([t["auc"] for t in r["tests"].values()]))
    res.notes.append("cells besides fit (frozen-prefix activations, test prediction) "
                     + " + ".join(f"{r['strategy']['seconds'] - r['seconds']:.1f}" for r in cells.values())
                     + " s")
    pre = _units(run, "pretrain")
    res.notes.append("pretraining fit images/s " + ", ".join(
        f"{v} {r['images_per_second']:.1f} ({r['precision']})" for v, r in pre.items()))
    return res


def keras_study(python: str, script: Path, run: Path, data: Path) -> Phases | str:
    """The Keras recipe on ``run``'s splits; a message instead where it cannot run."""
    if not Path(python).exists():
        return f"Keras skipped: {python} does not exist (see --keras-python)"
    probe = subprocess.run([python, "-c", "import tensorflow, keras, sklearn"], capture_output=True,
                           text=True)
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"Keras skipped: {python} cannot import TensorFlow, Keras and scikit-learn ({why})"
    if not script.is_file():
        return f"Keras skipped: no recipe at {script}"
    cmd = [python, str(script), str(run), str(data / "tb"), str(data / "covid"), str(SIZE), str(PRE_EPOCHS),
           *VARIANTS]
    load0, t0 = _load(), time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    res = Phases("Keras 3 / TF", whole=time.time() - t0, load=(load0, _load()))
    rest = 0.0
    for line in proc.stdout.splitlines():
        m = re.match(r"keras (\w+): pretrain ([\d.]+)s transfer ([\d.]+)s eval ([\d.]+)s "
                     r"acc ([\d.]+).* auc ([\d.]+)", line)
        if m:
            v = m.group(1)
            res.pretrain[v], res.transfer[v] = float(m.group(2)), float(m.group(3))
            res.acc[v], res.auc[v] = float(m.group(5)), float(m.group(6))
            rest += float(m.group(4))
        if line.startswith("keras total"):
            res.notes.append(f"its own total {line.split()[-1]} (without start-up); evaluation {rest:.1f} s")
    return res


def alexnet_step(setting: Setting, batch_norm: bool, steps: int = 6) -> float:
    """Images/s of a bare training step (forward under autocast, backward, Adagrad) of the
    seed-000 AlexNet as ``setting`` trains it, 128 px, batch 64, on one random batch (1 warm-up
    step)."""
    import torch

    from medtransfer.models import build_model
    from medtransfer.models.config import ModelConfig

    torch.manual_seed(0)
    model = build_model(ModelConfig(name="alexnet_krizhevsky", batch_norm=batch_norm), num_classes=2,
                        in_chans=1, img_size=SIZE)
    extra = {"fused": True} if setting.fused else {}
    return bare_step(model, torch.rand(64, 1, SIZE, SIZE),
                     lambda p: torch.optim.Adagrad(p, lr=1e-2, initial_accumulator_value=0.1, **extra),
                     precision=setting.precision, channels_last=setting.channels_last, steps=steps)


def ceiling(setting: Setting, images: int) -> tuple[str, float]:
    """The fastest any framework could pretrain here: the AlexNet's training FLOPs per image over
    this machine's matrix-product FLOP/s in fp32 and in the fast setting's precision; with the
    least seconds pretraining could take in the fast setting's precision."""
    import torch

    from medtransfer.models import create_model

    model = create_model("alexnet_krizhevsky", num_classes=1, in_chans=1, img_size=SIZE)
    flops = train_flops_per_image(model, torch.rand(8, 1, SIZE, SIZE))
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    least = 0.0
    out = [f"ceiling: a training step of the seed-000 AlexNet is {flops / 1e9:.2f} GFLOP per image"]
    for name in dict.fromkeys(("fp32", setting.precision)):
        peak = matmul_flops_per_second(dtypes[name])
        ips = peak / flops
        least = len(VARIANTS) * PRE_EPOCHS * images / ips
        out.append(f"{name} matrix products run at {peak / 1e9:.0f} GFLOP/s here, so at most {ips:.0f} "
                   f"images/s: pretraining {len(VARIANTS)} variants × {PRE_EPOCHS} epochs × {images} "
                   f"images takes at least {least:.0f} s")
    return "; ".join(out), least


def _mean(d: dict[str, float]) -> float:
    return float(np.mean(list(d.values()))) if d else float("nan")


def _cell(mine: float, theirs: float | None) -> str:
    """Seconds, with Keras's seconds / these in brackets (a speed-up) when there is a Keras run."""
    return f"{mine:.0f} s" + (f" ({theirs / mine:.1f}×)" if theirs is not None and mine > 0 else "")


def table(runs: list[Phases]) -> str:
    """The Markdown table of every run's phases, with the ratios against the Keras run."""
    keras = next((r for r in runs if r.name.startswith("Keras")), None)
    head = ("| | " + " | ".join(f"pretraining {v}" for v in VARIANTS) + " | transfer (2) | "
            "evaluation + rest | whole study | accuracy " + " / ".join(VARIANTS) + " | AUC "
            + " / ".join(VARIANTS) + " | load avg before → after |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in runs:
        ref = None if r is keras else keras
        pre = [_cell(r.pretrain.get(v, float("nan")), ref.pretrain.get(v) if ref else None) for v in VARIANTS]
        tr = _cell(sum(r.transfer.values()), sum(ref.transfer.values()) if ref else None)
        rest, whole = _cell(r.rest, ref.rest if ref else None), _cell(r.whole, ref.whole if ref else None)
        acc = " / ".join(f"{r.acc.get(v, float('nan')):.3f}" for v in VARIANTS)
        auc = " / ".join(f"{r.auc.get(v, float('nan')):.3f}" for v in VARIANTS)
        rows.append(f"| {r.name} | " + " | ".join(pre) + f" | {tr} | {rest} | **{whole}** | {acc} | {auc} "
                    f"| {r.load[0]:.1f} → {r.load[1]:.1f} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_study_vs_keras"),
                    help="a folder for the runs (emptied first)")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cxr",
                    help="a folder holding tb/ and covid/")
    ap.add_argument("--keras-python", default="/tmp/keras-venv/bin/python")
    ap.add_argument("--keras-script", type=Path,
                    default=REPO.parent / "shared" / "bench" / "keras_seed000_study.py")
    ap.add_argument("--no-keras", action="store_true", help="medtransfer runs only")
    ap.add_argument("--precision", default="bf16", help="the fast run's train.precision (bf16)")
    ap.add_argument("--no-channels-last", action="store_true", help="the fast run without channels_last")
    ap.add_argument("--no-fused", action="store_true",
                    help="the fast run with torch's Adagrad loop (not optimizer.implementation: fused)")
    args = ap.parse_args()
    missing = [p for p in (args.data / "tb", args.data / "covid") if not p.is_dir()]
    if missing:
        print(f"bench_study_vs_keras: no data at {', '.join(map(str, missing))}: this benchmark needs "
              "the chest X-rays of ../shared/data/cxr (tb/ and covid/); see --data", file=sys.stderr)
        return 2
    import torch

    shutil.rmtree(args.out, ignore_errors=True)
    print(f"seed-000 study, {SIZE} px, {PRE_EPOCHS} pretraining epochs, variants {', '.join(VARIANTS)}; "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()}", flush=True)
    runs: list[Phases] = []
    fast = Setting(args.precision, not args.no_channels_last, not args.no_fused)
    print("medtransfer fp32 ...", flush=True)
    runs.append(medtransfer_study(args.out / Setting().folder, args.data, Setting()))
    # The bare steps right before and after the fast run: the CPU is shared, so its speed drifts.
    bare = {v: [alexnet_step(fast, v == "batchnorm")] for v in VARIANTS}
    print(f"medtransfer {fast.name} ...", flush=True)
    runs.append(medtransfer_study(args.out / fast.folder, args.data, fast))
    for v in VARIANTS:
        bare[v].append(alexnet_step(fast, v == "batchnorm"))
    keras: Phases | str = "Keras skipped: --no-keras"
    if not args.no_keras:
        print("Keras recipe ...", flush=True)
        fp32_run = args.out / Setting().folder / "run"
        keras = keras_study(args.keras_python, args.keras_script, fp32_run, args.data)
    if isinstance(keras, str):
        print(keras)
    else:
        runs.insert(0, keras)
    print("\n" + table(runs) + "\n")
    for r in runs:
        print(f"{r.name}: " + "; ".join(r.notes))
    fp32, reduced = runs[-2:]
    d_acc, d_auc = _mean(reduced.acc) - _mean(fp32.acc), _mean(reduced.auc) - _mean(fp32.auc)
    print(f"{reduced.name} vs fp32, mean over variants: accuracy {d_acc:+.3f}, AUC {d_auc:+.3f} "
          f"({'within' if max(abs(d_acc), abs(d_auc)) <= 0.02 else 'NOT within'} 2 points)")
    if not isinstance(keras, str):
        print("whole study, Keras / medtransfer: " + ", ".join(f"{r.name} {keras.whole / r.whole:.2f}×"
                                                               for r in (fp32, reduced)))
    pre = _units(args.out / fast.folder / "run", "pretrain")
    for v, (before, after) in bare.items():
        fit_ips = pre[v]["images_per_second"]
        print(f"{fast.name}, {v}: pretraining in the study {fit_ips:.1f} images/s; a bare training step "
              f"{before:.1f} images/s before the run, {after:.1f} after "
              f"({fit_ips / before:.0%} / {fit_ips / after:.0%})")
    images = int(re.search(r"pretraining on (\d+) source images",
                           (args.out / fast.folder / "run" / "run.log").read_text()).group(1))  # type: ignore[union-attr]
    text, least = ceiling(fast, images)
    print(text)
    if not isinstance(keras, str):
        print(f"so no run of this study here can be more than {keras.whole / least:.1f}× faster than "
              f"the Keras "
              f"recipe's {keras.whole:.0f} s, even with nothing but pretraining at the matrix-product speed")
    print(f"load average at the end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
