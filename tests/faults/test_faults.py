"""Faults injected at random points of a finished tiny study (fixed seeds, a bounded count): a
damaged unit file, a missing unit, a damaged cache entry. A rerun into the same folder must end
with exactly the clean run's results.csv every time."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from medtransfer.api import run_study
from medtransfer.study import study_from_dict

SEEDS = range(6)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


FAULTS: dict[str, Callable[[Path], None]] = {
    "truncate": _truncate,
    "empty": lambda p: p.write_bytes(b""),
    "flip_a_bit": _flip,
    "empty_json": lambda p: p.write_text("{}"),
    "delete": lambda p: p.unlink(),
}


@pytest.fixture(scope="module")
def clean(tmp_path_factory, class_folders, tiny_study_of) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("faults")
    cfg = tiny_study_of(root, class_folders, "faults", ("normal", "covid"))
    return run_study(study_from_dict(cfg), root / "clean", echo=lambda m: None, report=False), cfg


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_random_faults_then_rerun_equals_the_clean_run(clean, tmp_path, seed):
    src, cfg = clean
    rng = random.Random(seed)
    out = tmp_path / "run"
    shutil.copytree(src, out)
    unit_files = sorted(p for p in out.glob("units/*/*") if p.is_file() and p.name != "unit.json")
    cache_files = sorted(Path(cfg["cache_dir"]).rglob("*.npy"))
    injected = []
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(unit_files if rng.random() < 0.75 else cache_files)
        if not path.exists():
            continue
        name = rng.choice(sorted(FAULTS))
        if name == "empty_json" and path.suffix != ".json":
            name = "truncate"
        FAULTS[name](path)
        injected.append(f"{name} {path.relative_to(path.parents[2])}")
    logs: list[str] = []
    run_study(study_from_dict(cfg), out, echo=logs.append, report=False)
    assert (out / "results.csv").read_text() == (src / "results.csv").read_text(), injected
    if any(" units/" in f for f in injected):  # a damaged unit was computed again
        assert any("redone" in m or ("images" in m and "target" in m) for m in logs), (injected, logs)
