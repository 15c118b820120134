"""Ray nodes of a test's own (the tiny study is in tests/conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

import medtransfer


@contextmanager
def _ray_node(log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A Ray node (``ray start ARGS --block``) in a session of its own, with this process's
    medtransfer importable; stopped on exit: SIGTERM (``ray start --block`` then stops its own
    processes), its process group killed only if that fails. Never ``ray stop``, which stops
    every Ray on the machine. Token authentication is off, so a process joining needs no token."""
    src = str(Path(medtransfer.__file__).resolve().parents[1])
    env = {**os.environ, "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    cmd = [str(Path(sys.executable).parent / "ray"), "start", *args, "--block"]
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while "Ray runtime started" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start {' '.join(args)} failed:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def ray_node() -> Callable[..., AbstractContextManager[subprocess.Popen[bytes]]]:
    """``with ray_node(log, "--head", ...)``: a Ray node of this test's own (see ``_ray_node``)."""
    pytest.importorskip("ray")
    return _ray_node
