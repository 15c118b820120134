"""Sizes checked before anything is allocated: an image over Pillow's pixel limit (exactly, from
its header), a resize side over :data:`MAX_SIZE`, a data set whose decoded arrays cannot fit in this
machine's memory, and ``.npz`` members whose headers declare more than they hold or inflate far
beyond their stored size (a zip bomb) are refused with the numbers, not killed by the OOM killer."""

from __future__ import annotations

import contextlib
import io
import os
import re
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from medtransfer.errors import DataError, ImageDecodeError

__all__ = ["LIMIT_HINT", "MAX_SIZE", "NPZ_MAX_RATIO", "NPZ_RATIO_FLOOR", "check_npz_members",
           "check_set_bytes", "open_image", "physical_memory", "pixel_limit"]

# The largest side an image is resized to (preprocess.size): medical classifiers train at
# 224-1024 px, mammography and pathology tiles at up to 4096; more is almost surely a typo
# (100000 px would need 10 GB per grey image and was killed by the OOM killer).
MAX_SIZE = 4096

# A member may inflate to at most this many times its stored (compressed) size once it is larger
# than NPZ_RATIO_FLOOR: image arrays compress 1-10x (MedMNIST: 1.1-1.2x, labels up to 6x), while
# 4 GB of zeros fit in 4 MB (1000x), so 200x leaves room for mostly blank images and stops bombs.
NPZ_MAX_RATIO = 200
NPZ_RATIO_FLOOR = 64 << 20


LIMIT_HINT = ("PIL.Image.MAX_IMAGE_PIXELS, which guards against decompression bombs; if the image "
              "is genuine, raise it in Python before loading: PIL.Image.MAX_IMAGE_PIXELS = N")


def pixel_limit() -> int | None:
    """The most pixels one image may have: Pillow's ``Image.MAX_IMAGE_PIXELS`` (None: no limit)."""
    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else int(limit)


@contextlib.contextmanager
def open_image(source: Path | io.BytesIO, name: str) -> Iterator[Image.Image]:
    """``Image.open(source)``, lazily, with its declared size checked against :func:`pixel_limit`
    exactly before any pixel is decoded (Pillow itself only warns up to twice the limit)."""
    try:
        img = Image.open(source)
    except Image.DecompressionBombError as exc:  # over twice the limit: Pillow refuses, unsized
        count = re.search(r"\((\d+) pixels\)", str(exc))
        declared = f"declares {int(count.group(1)):,} pixels" if count else f"is too large ({exc})"
        raise ImageDecodeError(name, f"{declared}, over the limit of {pixel_limit() or 0:,} "
                               f"({LIMIT_HINT})") from None
    with img:
        limit, pixels = pixel_limit(), img.width * img.height
        if limit is not None and pixels > limit:
            raise ImageDecodeError(name, f"declares {img.width} × {img.height} = {pixels:,} pixels, "
                                   f"over the limit of {limit:,} ({LIMIT_HINT})")
        yield img


def physical_memory() -> int | None:
    """This machine's memory in bytes (None where the OS does not say)."""
    with contextlib.suppress(AttributeError, ValueError, OSError):
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    return None


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


def check_set_bytes(count: int, channels: int, hw: tuple[int, int], where: str) -> None:
    """Refuse, before decoding, ``count`` images at ``hw`` whose arrays (8-bit: the least they
    take) need more than this machine's memory."""
    need, have = count * channels * hw[0] * hw[1], physical_memory()
    if have is not None and need > have:
        raise DataError(
            f"{where}: {count:,} images of {channels} × {hw[0]} × {hw[1]} pixels need at least "
            f"{_gib(need)}, more than this machine's {_gib(have)} of memory; lower preprocess.size "
            "(or use fewer images)")


def check_npz_members(archive: np.lib.npyio.NpzFile, path: Path, keys: Iterable[str]) -> None:
    """Read only the headers of ``keys``' members and refuse, naming the file, the array, its
    declared shape and bytes and the limit: a member declaring more data than it holds
    (numpy would allocate it all first), one inflating more than :data:`NPZ_MAX_RATIO` times its
    stored size, and arrays that together exceed this machine's memory."""
    total, zf = 0, archive.zip
    if zf is None:
        raise DataError(f"{path}: the archive is closed")
    for key in keys:
        member = f"{key}.npy"
        if member not in zf.namelist():
            continue
        info = zf.getinfo(member)
        try:
            with zf.open(member) as fh:
                version = np.lib.format.read_magic(fh)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read(fh)
                header = fh.tell()
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: key '{key}' has no readable .npy header ({exc})") from exc
        if dtype.hasobject:
            continue  # refused when read: object arrays need pickle
        declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
        what = f"{path}: array '{key}' declares shape {tuple(shape)} of {dtype} ({declared:,} bytes)"
        if declared > info.file_size - header:
            raise DataError(f"{what} but holds {info.file_size - header:,} bytes; the archive is "
                            "damaged or forged")
        if (info.compress_type != zipfile.ZIP_STORED and declared > NPZ_RATIO_FLOOR
                and declared > NPZ_MAX_RATIO * info.compress_size):
            raise DataError(f"{what} from {info.compress_size:,} stored bytes, over the limit of "
                            f"{NPZ_MAX_RATIO}x its stored size for members over {NPZ_RATIO_FLOOR >> 20} MiB "
                            "(a decompression bomb?)")
        total += declared
    have = physical_memory()
    if have is not None and total > have:
        raise DataError(f"{path}: the arrays read declare {total:,} bytes ({_gib(total)}), more than "
                        f"this machine's {_gib(have)} of memory; read fewer parts (data.npz_splits)")
