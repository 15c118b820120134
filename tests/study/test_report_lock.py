"""``medtransfer report RUN`` takes the run folder's lock (issue 13): while a run writes into the
folder, the report stops at once with an error naming the holder."""

from __future__ import annotations

import subprocess
import sys

from medtransfer.cli import main
from medtransfer.study.lock import LOCK_NAME

# What a running `medtransfer run` holds (study/lock.py): an flock on the lock file, stamped
# with its pid and host; a bare interpreter starts in a fraction of medtransfer's import time.
HOLDER = """
import fcntl, os, socket, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"pid={os.getpid()} host={socket.gethostname()} started=now\\n".encode())
print("held", flush=True)
sys.stdin.read()
os.ftruncate(fd, 0)  # a clean release
"""


def test_report_of_a_folder_a_run_is_writing_into_stops_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out / LOCK_NAME)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "held\n"
        assert main(["report", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"run folder {out.resolve()} is in use by pid {proc.pid} on host" in err
        # the report has no --out: the advice is to wait for the run or stop it
        assert "--out" not in err and "Wait for that run to finish (or stop it)" in err
        assert not (out / "summary.csv").exists()
    finally:
        proc.communicate("", timeout=30)
    # once the run is over the report gets past the lock (to this empty folder's own error)
    assert main(["report", str(out)]) == 2
    assert "in use by" not in capsys.readouterr().err
    assert (out / LOCK_NAME).read_text() == ""  # and released it
