"""Commands that only print something answer without importing torch (issue 31): ``models``,
``keys``, ``--help``, ``--version`` and ``help(medtransfer)``. Each runs in a fresh interpreter;
its time is measured as a ratio to a bare ``python -c pass`` in the same test (no wall-clock
limit): here about 5-9×, where importing torch alone takes over 100×."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medtransfer import catalog
from medtransfer.models import list_models
from medtransfer.study.keys import catalog_text

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
HEAVY = ("torch", "numpy", "timm", "torchvision", "sklearn", "scipy", "matplotlib")
MAX_RATIO = 40  # a command that imports torch (or numpy + scipy + ...) ends far above
# runs the command, then says which heavy packages it imported
RUN = f"""
import contextlib, io, sys
from medtransfer.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
heavy = [m for m in {HEAVY!r} if m in sys.modules]
print(code, len(out.getvalue()), ",".join(heavy) or "-")
"""
HELP = f"""
import pydoc, sys
import medtransfer
text = pydoc.render_doc(medtransfer, renderer=pydoc.plaintext)
heavy = [m for m in {HEAVY!r} if m in sys.modules]
print("__getattr__" in text, "__dir__" in text, "run_study" in text, ",".join(heavy) or "-")
"""


def _timed(code: str, *args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return time.perf_counter() - t0, proc.stdout.strip()


@pytest.mark.parametrize("argv", [["models"], ["keys"], ["keys", "pretrain.train"], ["keys", "--json-schema"],
                                  ["--help"], ["--version"], ["run", "--help"]])
def test_trivial_commands_import_no_torch(argv):
    bare = min(_timed("pass")[0] for _ in range(3))
    took, out = _timed(RUN, *argv)
    code, printed, heavy = out.split()
    print(f"medtransfer {' '.join(argv)}: {took / bare:.1f}x the time of `python -c pass`")
    assert code in ("0", "None") and int(printed) > 0
    assert heavy == "-", f"medtransfer {' '.join(argv)} imported {heavy}"
    assert took / bare < MAX_RATIO


def test_help_of_the_package_imports_nothing_heavy_and_lists_no_hooks():
    _, out = _timed(HELP)
    getattr_listed, dir_listed, _, heavy = out.split()
    assert heavy == "-", f"help(medtransfer) imported {heavy}"
    assert getattr_listed == "False" and dir_listed == "False"


def test_the_lazy_api_still_resolves():
    import medtransfer

    assert medtransfer.create_model.__module__ == "medtransfer.models.factory"
    assert "create_model" in medtransfer.__all__


def test_static_model_names_match_the_registry():
    assert list(catalog.MODEL_NAMES) == list_models(), (
        "medtransfer.catalog.MODEL_NAMES is stale: set it to medtransfer.models.list_models()")


def test_packaged_keys_json_is_current():
    packaged = Path(catalog.__file__).with_name(catalog.KEYS_FILE).read_text(encoding="utf-8")
    assert packaged == catalog_text(), (
        "src/medtransfer/keys.json is stale: regenerate it with  python -m medtransfer.study.keys")


def test_a_closed_pipe_ends_quietly():
    # `medtransfer keys | head -1`: the reader goes away after one line
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from medtransfer.cli import main; "
                             "sys.exit(main(sys.argv[1:]))", "keys"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)
    assert proc.stdout is not None and proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()
    assert proc.returncode in (0, 141)
