"""The package and its locks work where ``fcntl`` does not exist (Windows): checked here by a child
interpreter in which ``import fcntl`` fails, so the locks fall back to filelock's marker file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHILD = """
import sys
sys.modules["fcntl"] = None  # `import fcntl` now raises ImportError, as on Windows
import multiprocessing, os, warnings
from pathlib import Path

import medtransfer
from medtransfer.api import run_study  # the whole study path imports
from medtransfer.study import load_study
from medtransfer.study import lock

assert "fcntl" not in {m for m, v in sys.modules.items() if v is not None}
assert not lock.NATIVE
out = Path(sys.argv[1])
# a dead holder's stamp is taken over with a warning naming it
out.mkdir()
(out / lock.LOCK_NAME).write_text("pid=999999 host=elsewhere started=yesterday\\n")
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    with lock.run_lock(out), lock.run_lock(out):  # re-entrant
        assert f"pid={os.getpid()}" in (out / lock.LOCK_NAME).read_text()
        other = __import__("subprocess").run(
            [sys.executable, "-c", sys.argv[2], str(out)], capture_output=True, text=True)
        print("OTHER", other.stdout.strip(), other.stderr.strip()[-300:])
assert any("pid 999999 on host elsewhere" in str(w.message) for w in seen), seen
assert (out / lock.LOCK_NAME).read_text() == ""  # released cleanly
with lock.unit_lock(out, "cell-x"):
    pass
with lock.run_lock(out):  # free again
    pass
print("OK")
"""

SECOND = """
import sys
sys.modules["fcntl"] = None
from pathlib import Path
from medtransfer.study.lock import RunLockedError, run_lock
try:
    with run_lock(Path(sys.argv[1])):
        print("acquired")
except RunLockedError as exc:
    print("refused:", exc)
"""


def test_package_imports_and_locks_work_without_fcntl(tmp_path):
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "run"), SECOND], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout
    other = next(line for line in proc.stdout.splitlines() if line.startswith("OTHER"))
    assert "refused:" in other and "in use by pid" in other and str((tmp_path / "run").resolve()) in other
