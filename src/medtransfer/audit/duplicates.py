"""Exact and near duplicates within one data set or between two.

Exact: the same sha256 of the decoded pixels (any re-save that keeps the pixels) or of the file
bytes. Near: perceptual hashes (64-bit ``imagehash.phash``) at most ``near_hamming`` bits apart,
confirmed by the correlation of high-pass detail thumbnails (see :class:`AuditConfig`): phash
alone calls many different chest X-rays "similar", the detail check does not.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from medtransfer.audit.config import AuditConfig
from medtransfer.audit.inspect import Inventory

_BLOCK_ELEMENTS = 1 << 23  # hash comparisons per block: bounds memory to ~64 MiB


class MatchKind(StrEnum):
    """How two images match."""

    exact = "exact"  # identical decoded pixels or identical file bytes
    near = "near"  # perceptually near and with the same fine detail


@dataclass(frozen=True)
class DuplicatePair:
    """Images ``a`` and ``b`` (indices into their inventories) that match."""

    a: int
    b: int
    kind: MatchKind
    distance: int
    similarity: float


def hamming_pairs(
    hash_a: np.ndarray, hash_b: np.ndarray | None, max_distance: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, distance) of all hash pairs at most ``max_distance`` bits apart.

    With ``hash_b`` None, pairs within ``hash_a`` (i < j); else across the two arrays."""
    a = np.asarray(hash_a, dtype=np.uint64)
    b = a if hash_b is None else np.asarray(hash_b, dtype=np.uint64)
    out_i, out_j, out_d = [], [], []
    step = max(1, _BLOCK_ELEMENTS // max(1, len(b)))
    for start in range(0, len(a), step):
        block = a[start : start + step]
        dist = np.bitwise_count(block[:, None] ^ b[None, :])
        if hash_b is None:  # keep j > i only
            rows = np.arange(start, start + len(block))[:, None]
            dist = np.where(np.arange(len(b))[None, :] > rows, dist, 255)
        i, j = np.nonzero(dist <= max_distance)
        out_i.append(i + start)
        out_j.append(j)
        out_d.append(dist[i, j])
    if not out_i:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, empty
    return (np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64),
            np.concatenate(out_d).astype(np.int64))


def find_duplicates(
    inv: Inventory, cfg: AuditConfig, other: Inventory | None = None
) -> list[DuplicatePair]:
    """Exact and near duplicate pairs within ``inv`` or, given ``other``, between the two.

    Each pair is reported once, as exact if it is exact, sorted by (a, b)."""
    found: dict[tuple[int, int], DuplicatePair] = {}
    second = inv if other is None else other
    for key in ("pixel_sha", "file_sha"):
        by_hash: dict[str, list[int]] = defaultdict(list)
        for j, r in enumerate(second.records):
            if getattr(r, key):
                by_hash[getattr(r, key)].append(j)
        for i, r in enumerate(inv.records):
            for j in by_hash.get(getattr(r, key), []) if getattr(r, key) else []:
                if other is None and j <= i:
                    continue
                found[(i, j)] = DuplicatePair(i, j, MatchKind.exact, 0, 1.0)
    ii, jj, dd = hamming_pairs(inv.phash, None if other is None else other.phash, cfg.near_hamming)
    if len(ii):
        sims = _similarities(inv.detail, second.detail, ii, jj)
        side_a = np.array([min(r.width, r.height) for r in inv.records])
        side_b = np.array([min(r.width, r.height) for r in second.records])
        small = np.minimum(side_a[ii], side_b[jj]) < cfg.detail_size
        needed = np.where(small, cfg.near_similarity_small, cfg.near_similarity)
        for i, j, d, s, t in zip(ii.tolist(), jj.tolist(), dd.tolist(), sims.tolist(), needed.tolist(),
                                 strict=True):
            if s >= t and (i, j) not in found:
                found[(i, j)] = DuplicatePair(i, j, MatchKind.near, int(d), round(float(s), 4))
    return [found[k] for k in sorted(found)]


def _similarities(a: np.ndarray, b: np.ndarray, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
    """Dot products of detail rows ``a[ii]`` and ``b[jj]`` in float32, in blocks of pairs (near
    pairs of chest X-rays run into the 100,000s: gathered at once they would take GBs)."""
    a32 = a.astype(np.float32)  # once per row, not once per pair
    b32 = a32 if b is a else b.astype(np.float32)
    step = max(1, _BLOCK_ELEMENTS // (8 * max(1, a.shape[1])))
    return np.concatenate([np.einsum("ij,ij->i", a32[ii[k : k + step]], b32[jj[k : k + step]])
                           for k in range(0, len(ii), step)])


def clusters(n: int, pairs: list[DuplicatePair]) -> list[list[int]]:
    """Connected components (of size > 1) of the duplicate graph on ``n`` images, by first index."""
    parent = list(range(n))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p in pairs:
        ra, rb = root(p.a), root(p.b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        members[root(i)].append(i)
    return sorted((m for m in members.values() if len(m) > 1), key=lambda m: m[0])
