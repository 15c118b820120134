"""Targeted mutation check: does the test suite notice the regressions that matter?

Each mutation is applied to a temporary copy of the package (``src/`` and ``tests/``, as they are
in the working tree), the tests that guard it run against the copy, and a mutation counts as
killed when they fail. Not part of ``make test`` (minutes, not seconds).

    .venv/bin/python scripts/mutation_check.py            # all
    .venv/bin/python scripts/mutation_check.py shear_sign  # one, by name
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # relative to src/medtransfer
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = [
    Mutation("shear_sign", "data/augment.py", "shear = torch.deg2rad(get(p.shear, 0.0))",
             "shear = -torch.deg2rad(get(p.shear, 0.0))", ("tests/data/test_augment_keras.py",)),
    Mutation("zoom_axes", "data/augment.py",
             "zoom_x, zoom_y = get(p.zoom_x, 1.0), get(p.zoom_y, 1.0)",
             "zoom_y, zoom_x = get(p.zoom_x, 1.0), get(p.zoom_y, 1.0)",
             ("tests/data/test_augment_keras.py",)),
    Mutation("bca_is_percentile", "stats/bootstrap.py",
             'bounds = _bca(boot, estimate[m], jack[m], level) if method == "bca" else None',
             "bounds = None", ("tests/test_stats.py",)),
    Mutation("summary_mean_is_median", "report/summary.py", "mean=float(x.mean()),",
             "mean=float(np.median(x)),", ("tests/study/test_summary_tables.py",)),
    Mutation("transfer_from_last_epoch", "study/units.py", "(res.best_path or res.last_path).name",
             "(res.last_path or res.best_path).name", ("tests/study/test_wiring.py",)),
]


def _copy(dest: Path) -> None:
    for part in ("src", "tests"):
        shutil.copytree(ROOT / part, dest / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")


def run(mutation: Mutation | None, work: Path, tests: tuple[str, ...]) -> tuple[bool, float, str]:
    """(the tests failed, seconds, last line of pytest's output) on a fresh copy with
    ``mutation`` applied (None: the unmutated control)."""
    if work.exists():
        shutil.rmtree(work)
    _copy(work)
    if mutation is not None:
        target = work / "src" / "medtransfer" / mutation.file
        text = target.read_text(encoding="utf-8")
        if text.count(mutation.old) != 1:
            raise SystemExit(f"{mutation.name}: the code to mutate is not in {mutation.file} exactly "
                             f"once ({text.count(mutation.old)} times): {mutation.old!r}; update this script")
        target.write_text(text.replace(mutation.old, mutation.new), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(work / "src")}  # the copy shadows the editable install
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                           *tests], cwd=work, env=env, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode != 0, time.perf_counter() - t0, lines[-1] if lines else proc.stderr[-200:]


def main(argv: list[str]) -> int:
    chosen = [m for m in MUTATIONS if not argv or m.name in argv]
    if argv and len(chosen) != len(argv):
        known = ", ".join(m.name for m in MUTATIONS)
        raise SystemExit(f"unknown mutation in {argv}; known: {known}")
    survived = []
    with tempfile.TemporaryDirectory() as tmp:
        # Control: the guarding tests pass on an unmutated copy, so a failure below is the mutation's.
        guards = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        failed, seconds, last = run(None, Path(tmp) / "copy", guards)
        state = "FAILED" if failed else "passed"
        print(f"{'(control, no mutation)':28s} {state:9s} {seconds:6.1f} s  {last}")
        if failed:
            raise SystemExit("the guarding tests fail without any mutation: fix them first")
        for m in chosen:
            killed, seconds, last = run(m, Path(tmp) / "copy", m.tests)
            verdict = "killed" if killed else "SURVIVED"
            print(f"{m.name:28s} {verdict:9s} {seconds:6.1f} s  {last}", flush=True)
            if not killed:
                survived.append(m.name)
    print(f"{len(chosen) - len(survived)} of {len(chosen)} mutations killed"
          + (f"; survived: {', '.join(survived)}" if survived else ""))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
