"""Records that vouch for themselves and for the files beside them.

A record (a unit's ``result.json``, a run's ``manifest.json``) carries ``digest``: the SHA-256 of
the canonical JSON of the rest of it, so a record damaged or edited by hand is noticed on every
read. A record lists, under ``files``, the size and SHA-256 of the files it vouches for (a unit's
checkpoints, predictions and history); :func:`check_file` is the one check of such a file, used
by the study's store, by every reader of a run and by ``run:`` weights.

Records written before records carried a digest are accepted, with a warning once per file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medtransfer.errors import IntegrityError
from medtransfer.fileio import file_record, write_json_atomic

__all__ = ["DIGEST", "check_file", "check_files", "content_digest", "measured", "read_record", "write_record"]

DIGEST = "digest"
log = logging.getLogger("medtransfer")
_WARNED: set[str] = set()


def content_digest(data: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of ``data`` without its ``digest``, as canonical JSON (keys sorted, no
    spaces) of what the JSON file holds, so the digest written equals the digest read back."""
    plain = json.loads(json.dumps({k: v for k, v in data.items() if k != DIGEST}, default=str))
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_record(path: Path, data: Mapping[str, Any]) -> None:
    """``data`` as JSON with its own digest, written atomically and durably."""
    write_json_atomic(path, {**data, DIGEST: content_digest(data)})


def read_record(path: Path, group: Path | None = None) -> dict[str, Any]:
    """The record in ``path`` without its digest, once the digest matches; IntegrityError naming
    the file otherwise. A record without a digest (an earlier medtransfer's) is accepted, with a
    warning the first time one of ``group`` (e.g. its run folder; default: the file) is read."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{path} is unreadable ({exc})") from exc
    if not isinstance(data, dict):
        raise IntegrityError(f"{path} does not hold a mapping")
    if DIGEST not in data:
        key = str(group or path)
        if key not in _WARNED:
            _WARNED.add(key)
            also = f" (and the other records of {group})" if group is not None else ""
            log.warning("%s%s: no digest of its own (written by an earlier medtransfer), used "
                        "unchecked", path, also)
        return data
    want = data.pop(DIGEST)
    if want != content_digest(data):
        raise IntegrityError(f"{path} was changed after it was written (its content does not match "
                             "its own digest): damaged or edited by hand")
    return data


_DIGESTS: dict[tuple[str, int, int], dict[str, Any]] = {}


def measured(file: Path) -> dict[str, Any]:
    """A file's size and SHA-256 (:func:`~medtransfer.fileio.file_record`), remembered while its
    size and mtime stay the same: the one digest cache of medtransfer."""
    st = file.stat()
    key = (str(file), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_record(file)
    return _DIGESTS[key]


def _expected(want: Any) -> tuple[Any, Any]:
    """(size, sha256) of a ``files`` entry: a mapping, or a record with those attributes."""
    if isinstance(want, Mapping):
        return want.get("size"), want.get("sha256")
    return getattr(want, "size", None), getattr(want, "sha256", None)


def check_file(file: Path, files: Any, record: Path) -> Path:
    """``file`` once it is the file that ``files`` (a record's ``files``: name → size and
    SHA-256) lists; IntegrityError naming it and ``record`` otherwise."""
    file = Path(file)
    size, sha = _expected(files.get(file.name) if isinstance(files, Mapping) else None)
    if size is None or sha is None:
        raise IntegrityError(f"{record} records no size and SHA-256 of {file.name} (damaged, or written "
                             f"by an older medtransfer), so {file} cannot be checked")
    if not file.is_file():
        raise IntegrityError(f"{file} is missing (its unit's {record} lists it)")
    got = measured(file)
    if got["size"] != size:
        raise IntegrityError(f"{file} has {got['size']} bytes, but its unit's {record} recorded "
                             f"{size}: damaged or replaced")
    if got["sha256"] != sha:
        raise IntegrityError(f"{file} differs from the file its unit's {record} recorded (SHA-256 "
                             "mismatch): damaged or replaced")
    return file


def check_files(folder: Path, files: Any, record: Path, names: Iterable[str] | None = None) -> None:
    """Every file ``files`` lists (or those of ``names``), in ``folder``, by :func:`check_file`."""
    if not isinstance(files, Mapping):
        raise IntegrityError(f"{record}: 'files' is not a mapping")
    for name in sorted(files if names is None else names):
        check_file(Path(folder) / name, files, record)
