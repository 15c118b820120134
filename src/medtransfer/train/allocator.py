"""Keep freed memory for reuse instead of handing it back to the kernel after every step.

glibc's malloc serves blocks above its mmap threshold (128 KiB, rising to at most 32 MiB) with
fresh ``mmap`` pages and unmaps them when freed, and it trims the heap's free top above 128 KiB.
A CPU training step allocates and frees the same few hundred MB every step (activations,
gradients, the optimizer's temporaries: Adagrad's ``sqrt`` of a 76M-parameter AlexNet is 300 MB),
so every step page-faults all of it back in, zero-filled by the kernel. Raising both thresholds
to 1 GiB lets malloc reuse those blocks: a bare training step of the Krizhevsky AlexNet ran 1.2×
as fast in fp32 and in bf16 on a 2-core CPU (``benchmarks/bench_allocator.py``), with identical
numbers: the allocator decides where tensors live, never what they hold. The price is that a
process keeps up to 1 GiB of freed memory (plus fragmentation) instead of returning it.

This is what PyTorch's CPU performance guides get by preloading jemalloc or tcmalloc; medtransfer
sets glibc's own knobs (``mallopt``) so nothing needs installing. It is left alone where the
user chose an allocator: ``MEDTRANSFER_MALLOC=system``, any ``MALLOC_*_`` tuning variable, or a
jemalloc / tcmalloc / mimalloc in ``LD_PRELOAD``; and where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import logging
import os

__all__ = ["ENV_VAR", "THRESHOLD", "tune_allocator"]

log = logging.getLogger(__name__)

ENV_VAR = "MEDTRANSFER_MALLOC"  # "system": leave the C library's malloc as it is
THRESHOLD = 1 << 30  # bytes: blocks up to this size are reused, free memory up to this kept
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's <malloc.h>
_USER_TUNING = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")
_STATE: str | None = None


def tune_allocator() -> str:
    """Raise glibc's mmap and trim thresholds to :data:`THRESHOLD` for this process (once);
    returns what was done, e.g. ``"glibc 2.36: mmap/trim thresholds 1 GiB"`` or ``"untouched: ..."``
    with the reason. Safe to call repeatedly and from any entry point."""
    global _STATE
    if _STATE is None:
        _STATE = _tune()
        log.debug("allocator: %s", _STATE)
    return _STATE


def _tune() -> str:
    choice = os.environ.get(ENV_VAR, "").strip().lower()
    if choice == "system":
        return f"untouched: {ENV_VAR}=system"
    if choice not in ("", "tuned"):
        log.warning("%s: got %r; allowed: 'system' (leave malloc alone) or 'tuned' (default); "
                    "using 'tuned'", ENV_VAR, choice)
    preload = os.environ.get("LD_PRELOAD", "")
    other = next((a for a in _OTHER_ALLOCATORS if a in preload), None)
    if other is not None:
        return f"untouched: {other} is preloaded"
    user = next((v for v in _USER_TUNING if v in os.environ), None)
    if user is not None:
        return f"untouched: {user} is set"
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):
        glibc = None
    if not glibc:
        return "untouched: the C library is not glibc"
    try:
        libc = ctypes.CDLL(None)
        ok = all(libc.mallopt(param, THRESHOLD) == 1
                 for param in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD))
    except (OSError, AttributeError) as exc:
        return f"untouched: mallopt unavailable ({exc})"
    if not ok:
        return f"untouched: {glibc} refused the thresholds"
    return f"{glibc}: mmap/trim thresholds {THRESHOLD >> 30} GiB"
