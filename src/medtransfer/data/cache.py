"""Content-addressed disk cache of decoded images and whole preprocessed arrays.

Entries are keyed by the sha256 of the file's bytes plus :meth:`PreprocessConfig.key`, so renaming
or copying a file still hits, editing it misses, and changing the size or colour mode gets its
own entries. Files are written atomically (temp file in the same folder, then ``os.replace``), so
parallel runs sharing one cache never see half-written entries.

What the cache trusts: nothing but an entry that proves itself. Each entry is a ``.npy`` file with
a trailer holding its key, shape, dtype and the SHA-256 of its content; an entry whose trailer is
missing or disagrees (a foreign, truncated, edited or mis-shaped file, an unexpected dtype) is
discarded with a warning and recomputed. Loading never unpickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medtransfer.data.entries import not_regular, require_regular
from medtransfer.data.images import PreprocessConfig, decode_image
from medtransfer.errors import ConfigError
from medtransfer.fileio import umask_mode

_CHUNK = 1 << 20
_WARN_MAX = 5  # discarded entries warned about one by one, per cache


def default_cache_root() -> Path:
    """``$MEDTRANSFER_CACHE`` if set, else ``~/.cache/medtransfer``."""
    env = os.environ.get("MEDTRANSFER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "medtransfer"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes; a device or FIFO (never-ending or blocking) is a DataError."""
    require_regular(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _kind(key: str) -> str:
    """The folder of an array key: its prefix before ':' (``features``, ``prefix``, ``npz``)."""
    kind = key.split(":", 1)[0] if ":" in key else ""
    return kind if kind.isidentifier() else "other"


class ImageCache:
    """Disk cache for decoded images; ``hits``/``misses`` count lookups (thread-safe)."""

    def __init__(self, root: Path | None = None, *, enabled: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._write_warned = False
        self.discarded = 0  # entries found damaged or foreign, and recomputed

    @classmethod
    def disabled(cls) -> ImageCache:
        """A cache that stores nothing: every lookup decodes (counted as a miss)."""
        return cls(enabled=False)

    def __repr__(self) -> str:
        state = str(self.root) if self.enabled else "disabled"
        return f"ImageCache({state}, hits={self.hits}, misses={self.misses})"

    def get_or_decode(self, path: Path, cfg: PreprocessConfig) -> np.ndarray:
        """The decoded (C, H, W) array of ``path``, from the cache when its content was seen."""
        if not self.enabled or not_regular(path) is not None:
            self._count(hit=False)
            return decode_image(path, cfg)  # which names a device, FIFO or missing file
        try:
            digest = file_sha256(path)
        except OSError:
            # Let the decoder report the unreadable file with its usual ImageDecodeError.
            self._count(hit=False)
            return decode_image(path, cfg)
        entry = self.root / "images" / cfg.key() / digest[:2] / f"{digest}.npy"
        key = f"image:{digest}:{cfg.key()}"
        cached = self._load(entry, key, ((cfg.channels, *cfg.hw), ("uint8", "uint16")))
        if cached is not None:
            self._count(hit=True)
            return cached
        self._count(hit=False)
        array = decode_image(path, cfg)
        self._store(entry, key, array)
        return array

    def get_or_compute_array(self, key: str, fn: Callable[[], np.ndarray]) -> np.ndarray:
        """The array stored under ``key``, computing and storing it with ``fn()`` on a miss."""
        if not self.enabled:
            self._count(hit=False)
            return fn()
        name = hashlib.sha256(key.encode("utf-8")).hexdigest()
        entry = self.root / "arrays" / _kind(key) / name[:2] / f"{name}.npy"
        cached = self._load(entry, key)
        if cached is not None:
            self._count(hit=True)
            return cached
        self._count(hit=False)
        array = np.asarray(fn())
        self._store(entry, key, array)
        return array

    def usage(self) -> dict[str, tuple[int, int]]:
        """(entries, bytes) per section: ``images`` and each kind of array (``npz``,
        ``features``, ``prefix``: frozen-prefix activations, ...)."""
        sections = {"images": self.root / "images"}
        arrays = self.root / "arrays"
        if arrays.is_dir():
            sections.update({d.name: d for d in sorted(arrays.iterdir()) if d.is_dir()})
        out = {}
        for name, folder in sections.items():
            files = list(folder.rglob("*.npy")) if folder.is_dir() else []
            out[name] = (len(files), sum(f.stat().st_size for f in files))
        return out

    def clear(self, section: str | None = None) -> int:
        """Delete one section (see :meth:`usage`) or, with None, the whole cache; returns the
        bytes freed. Entries are recomputed when next needed."""
        sections = self.usage()
        if section is not None and section not in sections:
            raise ConfigError(f"cache section: got {section!r}; allowed: {', '.join(sections)}")
        freed = sum(b for name, (_, b) in sections.items() if section in (None, name))
        # Only the cache's own folders: the root may be a folder the user keeps other files in.
        targets = ([self.root / "images", self.root / "arrays"] if section is None else
                   [self.root / "images" if section == "images" else self.root / "arrays" / section])
        for target in targets:
            if target.is_dir():
                shutil.rmtree(target)
        return freed

    def _count(self, *, hit: bool) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def _load(self, entry: Path, key: str, expect: tuple[tuple[int, ...], tuple[str, ...]] | None = None
              ) -> np.ndarray | None:
        """The entry's array if it is exactly what was stored under ``key`` (its trailer's key,
        shape, dtype and SHA-256 match, and ``expect``: shape and allowed dtypes); else None,
        with a warning saying why — a damaged or foreign entry is recomputed, never used."""
        if not entry.is_file():
            return None
        try:
            array, why = _read_entry(entry, key)
        except (OSError, ValueError, EOFError) as exc:
            array, why = None, f"unreadable cache entry ({exc})"
        if array is not None and expect is not None and (
                array.shape != expect[0] or array.dtype.name not in expect[1]):
            why = f"holds a {array.dtype} {array.shape} array, expected {'/'.join(expect[1])} {expect[0]}"
            array = None
        if array is None:
            with self._lock:
                self.discarded += 1
                n = self.discarded
            if n <= _WARN_MAX:
                more = " (further discarded entries are counted, not listed)" if n == _WARN_MAX else ""
                warnings.warn(f"cache entry {entry}: {why}; discarded and recomputed{more}", stacklevel=3)
        return array

    def _store(self, entry: Path, key: str, array: np.ndarray) -> None:
        tmp_name: str | None = None
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                dir=entry.parent, prefix=f".{entry.stem[:16]}.", suffix=".tmp", delete=False
            ) as handle:
                tmp_name = handle.name
                np.save(handle, array, allow_pickle=False)
                handle.write(_trailer(key, array))
            os.chmod(tmp_name, umask_mode())
            os.replace(tmp_name, entry)
            tmp_name = None
        except OSError as exc:
            # A read-only or full cache must not stop a study; it only costs speed.
            if not self._write_warned:
                self._write_warned = True
                warnings.warn(
                    f"cannot write to image cache {self.root} ({exc}); continuing without "
                    "caching. Set MEDTRANSFER_CACHE to a writable folder to enable it.",
                    stacklevel=3,
                )
        finally:
            if tmp_name is not None and os.path.exists(tmp_name):
                os.unlink(tmp_name)


# An entry is a plain .npy file (np.load reads it) followed by a trailer: JSON (key, shape,
# dtype, sha256 of the array's bytes), its length (8 bytes, little-endian) and this magic.
_MAGIC = b"MTCACHE1"


def array_sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _trailer(key: str, array: np.ndarray) -> bytes:
    meta = {"key": key, "shape": list(array.shape), "dtype": array.dtype.str, "sha256": array_sha256(array)}
    text = json.dumps(meta, sort_keys=True).encode()
    return text + len(text).to_bytes(8, "little") + _MAGIC


def _read_entry(entry: Path, key: str) -> tuple[np.ndarray | None, str]:
    """(array, "") for a sound entry of ``key``, else (None, why)."""
    with open(entry, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size < 16:
            return None, "too short to be a cache entry"
        fh.seek(size - 16)
        tail = fh.read(16)
        if tail[8:] != _MAGIC:
            return None, "no checksum trailer (a foreign or damaged file)"
        length = int.from_bytes(tail[:8], "little")
        if length > min(size - 16, 1 << 20):
            return None, "damaged checksum trailer"
        fh.seek(size - 16 - length)
        try:
            meta = json.loads(fh.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None, "damaged checksum trailer"
        if not isinstance(meta, dict) or meta.get("key") != key:
            return None, "written for another key (a foreign file)"
        fh.seek(0)
        array = np.load(fh, allow_pickle=False)
    if not isinstance(array, np.ndarray) or array.dtype.hasobject:
        return None, "not a plain array"
    if list(array.shape) != meta.get("shape") or array.dtype.str != meta.get("dtype"):
        return None, f"holds a {array.dtype} {array.shape} array, its trailer says {meta.get('dtype')} " \
                     f"{meta.get('shape')}"
    if array_sha256(array) != meta.get("sha256"):
        return None, "content does not match its checksum"
    return array, ""
