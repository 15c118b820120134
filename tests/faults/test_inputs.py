"""Inputs that used to hang, exhaust memory or end in a traceback (issue 26): links to ``/dev/zero``
and FIFOs (in a subprocess with a timeout, so a regression fails instead of hanging), decompression
bombs in PNG and .npz (in a subprocess whose peak memory growth is bounded), sizes bounded before
allocation, duplicate YAML keys, bad seeds, a figure on a full disk and the umask race."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from medtransfer import fileio
from medtransfer.config import read_yaml
from medtransfer.data import DataConfig, PreprocessConfig, load_dataset
from medtransfer.data import limits as limits_module
from medtransfer.errors import ConfigError, DataError, DiskFullError
from medtransfer.explain import save_grid
from medtransfer.plots import confusion_figure, save_figure
from medtransfer.search import SearchConfig
from medtransfer.study import load_study, study_from_dict

# Run in a child: ``attempt(fn)`` calls fn and returns what it raised and how much the peak
# resident memory grew meanwhile (Linux: VmHWM reset through /proc/self/clear_refs).
_PRELUDE = '''
import json, resource

def _status(key):
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith(key + ":"))

def attempt(fn):
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # the peak (VmHWM) starts again from the current resident size
        base = _status("VmRSS")
    except OSError:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        fn()
        out = {"error": None, "message": ""}
    except Exception as exc:
        out = {"error": type(exc).__name__, "message": str(exc)}
    try:
        peak = _status("VmHWM")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["growth_mib"] = (peak - base) / 1024
    return out
'''


def _child(code: str, tmp_path: Path, timeout: float = 90) -> dict[str, Any]:
    """Run ``code`` (after the prelude) in a fresh interpreter; it prints one JSON line. A hang
    fails the test after ``timeout`` seconds instead of blocking the suite."""
    env = {**os.environ, "MEDTRANSFER_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _PRELUDE + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _folders(root: Path) -> Path:
    for name, value in (("neg", 40), ("pos", 200)):
        (root / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), value + i, np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.mark.skipif(not Path("/dev/zero").exists() or not hasattr(os, "mkfifo"),
                    reason="needs /dev/zero and FIFOs")
def test_links_to_dev_zero_and_fifos_fail_fast_in_run_audit_and_predict(tmp_path):
    zero = _folders(tmp_path / "zero")
    (zero / "neg" / "zero.png").symlink_to("/dev/zero")
    fifo = _folders(tmp_path / "fifo")
    os.mkfifo(fifo / "pos" / "pipe.png")
    os.mkfifo(tmp_path / "pipe.csv")
    os.mkfifo(tmp_path / "pipe.npz")
    result = _child(f'''
        from pathlib import Path
        from medtransfer.audit import AuditConfig
        from medtransfer.audit.inspect import inspect_source
        from medtransfer.data import DataConfig, ImageCache, PreprocessConfig, decode_image, load_dataset
        pre, out = PreprocessConfig(size=8), {{}}
        for name in ("zero", "fifo"):
            for follow in (False, True):
                data = DataConfig(path=Path("{tmp_path}") / name, follow_symlinks=follow)
                out[f"run {{name}} {{follow}}"] = attempt(
                    lambda: load_dataset(data, pre, ImageCache(Path("{tmp_path}") / "c")))
                out[f"audit {{name}} {{follow}}"] = attempt(lambda: inspect_source(data, AuditConfig()))
        for path in ("zero/neg/zero.png", "fifo/pos/pipe.png"):  # what predict decodes
            out[f"predict {{path}}"] = attempt(lambda: decode_image(Path("{tmp_path}") / path, pre))
        for path in ("pipe.csv", "pipe.npz"):
            data = DataConfig(path=Path("{tmp_path}") / path)
            out[f"run {{path}}"] = attempt(lambda: load_dataset(data, pre))
        print(json.dumps(out))
    ''', tmp_path, timeout=60)
    assert len(result) == 12
    for case, got in result.items():
        kind = "character device" if "zero" in case else "FIFO"
        assert got["error"] in ("DataError", "ImageDecodeError"), (case, got)
        assert kind in got["message"] and "regular file" in got["message"], (case, got)
        assert "refused even with data.follow_symlinks: true" in got["message"], (case, got)
        assert got["growth_mib"] < 32, (case, got)  # /dev/zero was read at 1 GB/s


def _png(path: Path, width: int, height: int, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (width, height)).save(path, optimize=True)
    return path


def test_png_over_the_pixel_limit_is_refused_exactly_with_bounded_memory(tmp_path):
    limit = 4_000_000  # lowered in the child: the PNGs stay a few kB, the decode would take 24+ MB
    sides = {times: int((limit * times) ** 0.5) + 1 for times in (1.5, 2.25)}  # Pillow warned below 2x
    for times, side in sides.items():
        bomb = _png(_folders(tmp_path / f"data{times}") / "pos" / "bomb.png", side, side)
        assert bomb.stat().st_size < 100_000
    at_limit = _png(tmp_path / "at_limit.png", 2_000, 2_000, "L")  # exactly the limit: allowed
    result = _child(f'''
        from pathlib import Path
        from PIL import Image
        from medtransfer.audit import AuditConfig
        from medtransfer.audit.inspect import inspect_source
        from medtransfer.data import DataConfig, ImageCache, PreprocessConfig, decode_image, load_dataset
        Image.MAX_IMAGE_PIXELS = {limit}
        pre, out = PreprocessConfig(size=8), {{}}
        for times in {list(sides)}:
            root = Path("{tmp_path}") / f"data{{times}}"
            out[f"predict {{times}}"] = attempt(lambda: decode_image(root / "pos" / "bomb.png", pre))
            out[f"run {{times}}"] = attempt(lambda: load_dataset(DataConfig(path=root), pre,
                                                                 ImageCache(Path("{tmp_path}") / "c")))
            inv = inspect_source(DataConfig(path=root), AuditConfig())
            out[f"audit {{times}}"] = {{"message": repr(inv.unreadable), "growth_mib": 0}}
        out["at_limit"] = attempt(lambda: decode_image(Path("{at_limit}"), pre))
        print(json.dumps(out))
    ''', tmp_path)
    assert result.pop("at_limit")["error"] is None and len(result) == 6
    for case, got in result.items():
        side = sides[float(case.split()[1])]
        assert "bomb.png" in got["message"], (case, got)
        assert f"{side * side:,} pixels, over the limit of {limit:,}" in got["message"], (case, got)
        assert "MAX_IMAGE_PIXELS" in got["message"], (case, got)
        assert got["growth_mib"] < 12, (case, got)


def _npz_bomb(path: Path, declared: tuple[int, ...], held: int, compress: bool) -> Path:
    """An npz whose train_images header declares ``declared`` uint8 and whose member holds
    ``held`` zero bytes after it (zeros deflate 1000:1)."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros((0,), np.uint8))
    header["shape"] = declared
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as archive:
        with archive.open("train_images.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            chunk = bytes(1 << 22)
            for start in range(0, held, len(chunk)):
                fh.write(chunk[: min(len(chunk), held - start)])
        labels = np.zeros((declared[0], 1), np.uint8)
        with archive.open("train_labels.npy", "w") as fh:
            np.lib.format.write_array(fh, labels)
    return path


def test_npz_bombs_are_refused_from_their_headers_before_loading(tmp_path):
    declared = (96, 1024, 1024)  # 96 MiB of pixels
    bomb = _npz_bomb(tmp_path / "bomb.npz", declared, 96 << 20, compress=True)
    _npz_bomb(tmp_path / "forged.npz", declared, 1000, compress=False)
    assert bomb.stat().st_size < 200_000
    result = _child(f'''
        from pathlib import Path
        from medtransfer.audit import AuditConfig
        from medtransfer.audit.inspect import inspect_source
        from medtransfer.data import DataConfig, ImageCache, PreprocessConfig, load_dataset
        pre, out = PreprocessConfig(size=8), {{}}
        for name in ("bomb", "forged"):
            data = DataConfig(path=Path("{tmp_path}") / f"{{name}}.npz", npz_splits=["train"])
            cache = ImageCache(Path("{tmp_path}") / "c")
            out[f"run {{name}}"] = attempt(lambda: load_dataset(data, pre, cache))
            out[f"audit {{name}}"] = attempt(lambda: inspect_source(data, AuditConfig()))
        print(json.dumps(out))
    ''', tmp_path)
    for case, got in result.items():
        assert got["error"] == "DataError", (case, got)
        assert f"array 'train_images' declares shape {declared} of uint8 ({96 << 20:,} bytes)" \
            in got["message"], (case, got)
        why = "over the limit of 200x its stored size" if "bomb" in case else "but holds 1,000 bytes"
        assert why in got["message"] and ("bomb.npz" if "bomb" in case else "forged.npz") in got["message"]
        assert got["growth_mib"] < 32, (case, got)  # loading the bomb takes 96 MiB


def _study(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    train = {"epochs": 1, "batch_size": 8, "progress": False}
    data = {"data": {"path": str(tmp_path / "data")}, "split": {"test_fraction": 0.3}}
    return {"name": "inputs", "source": data, "target": data, "audit": False,
            "model": {"name": "alexnet_small", "options": {"base": 4, "dense": [8, 8]}},
            "pretrain": {"train": train}, "transfer": {"train": train}, **extra}


@pytest.mark.parametrize(("size", "shown"), [(100_000, "100000"), ([224, 5000], r"\(224, 5000\)"), (0, "0")])
def test_preprocess_size_is_bounded_by_a_config_error(tmp_path, size, shown):
    with pytest.raises(ConfigError, match=rf"'preprocess.size': got {shown}; expected an integer from 1 "
                       r"to 4096 or \[height, width\]"):
        study_from_dict(_study(tmp_path, preprocess={"size": size}))
    assert study_from_dict(_study(tmp_path, preprocess={"size": 4096})).preprocess.size == 4096


def test_a_set_too_large_for_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    root = _folders(tmp_path / "data")
    monkeypatch.setattr(limits_module, "physical_memory", lambda: 10 << 20)  # a 10 MiB machine
    with pytest.raises(DataError, match=r"6 images of 1 × 2048 × 2048 pixels need at least 24 MiB, "
                       r"more than this machine's 10 MiB of memory; lower preprocess\.size"):
        load_dataset(DataConfig(path=root), PreprocessConfig(size=2048))
    assert len(load_dataset(DataConfig(path=root), PreprocessConfig(size=8))) == 6


def test_duplicate_yaml_keys_are_an_error_naming_file_key_and_both_lines(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("name: a\nseed: 1\ntransfer:\n  train:\n    epochs: 2\n    epochs: 3\n")
    with pytest.raises(ConfigError, match=r"study\.yaml: duplicate key 'epochs': first on line 5, "
                       r"again on line 6"):
        load_study(path)
    path.write_text("name: a\nseed: 1\nname: b\n")
    with pytest.raises(ConfigError, match=r"study\.yaml: duplicate key 'name': first on line 1, "
                       r"again on line 3"):
        read_yaml(path)
    path.write_text("base: &b {lr: 1, wd: 2}\nother:\n  <<: *b\n  lr: 3\n")  # a merge key may be overridden
    assert read_yaml(path)["other"] == {"lr": 3, "wd": 2}


@pytest.mark.parametrize("seed", [-5, 10**22, 2**31, True, "1"])
def test_bad_study_seeds_are_a_config_error_naming_key_value_and_range(tmp_path, seed):
    with pytest.raises(ConfigError, match=rf"'seed': (got {seed!r}; expected an integer seed from 0 to "
                       r"2,147,483,647|expected an integer, got)"):
        study_from_dict(_study(tmp_path, seed=seed))


def test_seed_limits_are_accepted_and_search_seed_is_checked(tmp_path):
    assert study_from_dict(_study(tmp_path, seed=2**31 - 1)).seed == 2**31 - 1
    space = {"transfer.train.optimizer.lr": [0.001]}
    assert SearchConfig(space=space, seed=2**32 - 1).seed == 2**32 - 1
    for seed in (-1, 2**32):
        with pytest.raises(ConfigError, match=rf"'search.seed': got {seed}; expected an integer seed "
                           r"from 0 to 4,294,967,295"):
            SearchConfig(space=space, seed=seed)


class _FullDisk:
    """A file whose write stores half the bytes, then fails like a full disk."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.fh.close()

    def write(self, data: bytes) -> int:
        self.fh.write(data[: len(data) // 2])
        self.fh.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)


@pytest.mark.parametrize("writer", ["save_figure", "save_grid"])
def test_a_figure_on_a_full_disk_keeps_the_old_file_and_is_a_disk_full_error(tmp_path, monkeypatch, writer):
    out = tmp_path / "plots"

    def draw() -> list[Path]:
        if writer == "save_figure":
            return save_figure(confusion_figure([[3, 1], [0, 4]], ["a", "b"], "cm"), out / "cm")
        return [save_grid([np.zeros((4, 4), np.uint8)] * 2, out / "grid.png", columns=2)]

    paths = draw()
    before = {p: p.read_bytes() for p in paths}
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FullDisk(real(fd, *a, **k)))
    with pytest.raises(DiskFullError, match=rf"cannot write {paths[0]}: no space left on the device.*"
                       r"the file was left as it was"):
        draw()
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in paths} == before  # not truncated
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)  # no temp files left


def test_umask_is_read_without_a_window_while_threads_create_folders(tmp_path, monkeypatch):
    if fileio._proc_umask() is None:
        pytest.skip("this OS does not report the umask in /proc: it is read once, at import")
    calls: list[int] = []
    real_umask = os.umask
    old = real_umask(0o077)
    try:
        monkeypatch.setattr(os, "umask", lambda mask: (calls.append(mask), real_umask(mask))[1])
        stop, seen = threading.Event(), set()

        def compute() -> None:
            while not stop.is_set():
                seen.add(fileio.umask_mode())

        def create(k: int) -> None:
            for i in range(300):
                (tmp_path / f"t{k}" / f"d{i}").mkdir(parents=True)

        reader = threading.Thread(target=compute)
        makers = [threading.Thread(target=create, args=(k,)) for k in range(3)]
        reader.start()
        for t in makers:
            t.start()
        for t in makers:
            t.join()
        stop.set()
        reader.join()
        fileio.write_text_atomic(tmp_path / "x.txt", "x")
    finally:
        monkeypatch.undo()
        real_umask(old)
    assert not calls and seen == {0o600}  # the umask was never set, not even for a moment
    modes = {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.glob("t*/d*")}
    assert modes == {0o700} and len(list(tmp_path.glob("t*/d*"))) == 900
    assert stat.S_IMODE((tmp_path / "x.txt").stat().st_mode) == 0o600


def test_a_report_that_meets_a_full_disk_is_a_disk_full_error_in_run_log(tmp_path, monkeypatch,
                                                                        tiny_study_config, one_thread):
    """The error that ends a run (here: the report's first figure on a full disk) is in run.log."""
    from medtransfer.api import run_study
    from medtransfer.study import study_from_dict

    raw = tiny_study_config(tmp_path)
    raw.update(audit=False, variants=raw["variants"][:1])
    real = os.fdopen

    def full_for_figures(fd: int, *args: Any, **kwargs: Any) -> Any:
        fh = real(fd, *args, **kwargs)
        return _FullDisk(fh) if "/plots/" in str(getattr(fh, "name", "")) or _in_plots(fd) else fh

    def _in_plots(fd: int) -> bool:
        return "/plots/" in os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else False

    monkeypatch.setattr(os, "fdopen", full_for_figures)
    with pytest.raises(DiskFullError, match=r"/plots/.*no space left on the device"):
        run_study(study_from_dict(raw), tmp_path / "run", progress=False, echo=lambda m: None)
    monkeypatch.undo()
    log = (tmp_path / "run" / "run.log").read_text(encoding="utf-8")
    assert "ERROR" in log and "DiskFullError: cannot write" in log and "/plots/" in log
