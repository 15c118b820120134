"""Reproducible, class-balanced train/validation/test splits of an image set.

Order of operations (fixed, so a seed always means the same split):

0. with ``imbalance``, draw the data set's imbalanced subset: each named class keeps
   ``round(ratio × the largest class's count)`` images, the others all theirs; images left out
   are in no part;
1. carve ``test_sets`` disjoint test sets of exactly ``test_per_class`` images per class
   (or one stratified test set of ``test_fraction``);
2. cap what is left at ``train_per_class`` images per class (the *training pool*, which still
   includes the validation images); a mapping draws exactly its count of each named class;
3. take a stratified ``val_fraction`` of the pool as the validation set; the rest is training.

Everything random draws from ``np.random.default_rng(seed)``.

**Groups** (patient ids, ``groups=``) keep every group on one side of every part. Parts are then
filled with whole groups, in a seeded random order, first-fit: a group is taken when it does not
push any class beyond that part's per-class target. With many small groups this hits every target
exactly. When it cannot (large groups, few left), the part is topped up with the smallest group
holding each class that is still short, so a test or validation part may hold *more* than its
target for a class, by less than that group's size; the per-class training cap is never exceeded
(groups that would overshoot it are left out). Targets: ``test_per_class`` per test set; the
class's share ``round(fraction × count)`` (at least 1) for ``test_fraction`` and ``val_fraction``.
:meth:`Split.summary` shows the counts reached. Without groups the behaviour is unchanged.

Stratified (grouped) k-fold cross-validation is :func:`medtransfer.data.folds.make_folds`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from medtransfer.data.balance import check_pool, class_caps, imbalanced_subset
from medtransfer.data.config import SplitConfig
from medtransfer.errors import DataError


@dataclass
class Split:
    """Index arrays into an ImageSet; all parts are pairwise disjoint and sorted."""

    train: np.ndarray
    val: np.ndarray
    tests: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def parts(self) -> dict[str, np.ndarray]:
        """``train``, ``val`` and every test set, by name."""
        return {"train": self.train, "val": self.val, **self.tests}

    def summary(self, labels: np.ndarray, classes: Sequence[str] | None = None) -> dict[str, Any]:
        """Images per class (and in total) of each part, as plain JSON-able data."""
        labels = np.asarray(labels)
        n_classes = len(classes) if classes is not None else int(labels.max(initial=-1)) + 1
        names = list(classes) if classes is not None else [str(i) for i in range(n_classes)]
        out: dict[str, Any] = {}
        for part, idx in self.parts.items():
            counts = np.bincount(labels[idx], minlength=n_classes)
            out[part] = {name: int(counts[i]) for i, name in enumerate(names)}
            out[part]["total"] = len(idx)
        return out


def make_split(
    labels: np.ndarray,
    cfg: SplitConfig,
    seed: int,
    *,
    origin: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    groups: Sequence[str] | np.ndarray | None = None,
) -> Split:
    """Split indices ``0..len(labels)-1`` per ``cfg``; the same seed gives the same split.

    With ``groups`` (one id per image) no group lands in two parts; see the module notes.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1 or len(labels) == 0:
        raise DataError(f"make_split needs a non-empty 1-D label array, got shape {labels.shape}")

    def name(c: int) -> str:
        return classes[c] if classes is not None and 0 <= c < len(classes) else str(c)

    rng = np.random.default_rng(seed)
    if cfg.imbalance:
        keep = imbalanced_subset(labels, cfg.imbalance, rng, classes)
        inner = make_split_rng(labels[keep], replace(cfg, imbalance=None), rng, name,
                               origin=None if origin is None else [origin[i] for i in keep],
                               groups=None if groups is None else [groups[i] for i in keep])
        return Split(keep[inner.train], keep[inner.val], {k: keep[v] for k, v in inner.tests.items()})
    return make_split_rng(labels, cfg, rng, name, origin=origin, groups=groups)


def make_split_rng(
    labels: np.ndarray,
    cfg: SplitConfig,
    rng: np.random.Generator,
    name: Callable[[int], str],
    *,
    origin: Sequence[str] | None = None,
    groups: Sequence[str] | np.ndarray | None = None,
) -> Split:
    """:func:`make_split` of ``labels`` (``cfg.imbalance`` already applied) drawing from ``rng``."""
    present = np.unique(labels)
    caps = class_caps(cfg.train_per_class, labels, name)
    if groups is not None:
        split = _grouped_split(labels, cfg, rng, origin, GroupTable(labels, groups), name, caps)
        _check_parts(split, labels, present, name, cfg)
        check_pool(np.concatenate([split.train, split.val]), labels, cfg.train_per_class, name)
        return split
    tests: dict[str, np.ndarray] = {}
    val = np.empty(0, dtype=np.int64)
    if cfg.use_official:
        pool, val, tests = _official(labels, origin)
    elif cfg.test_sets > 0:
        per = int(cfg.test_per_class or 0)
        k = cfg.test_sets
        chunks: list[list[np.ndarray]] = [[] for _ in range(k)]
        rest = []
        for c in present.tolist():
            members = np.flatnonzero(labels == c)
            if len(members) < k * per:
                raise DataError(
                    f"test_sets={k} × test_per_class={per} needs {k * per} images of class "
                    f"'{name(c)}' but it has {len(members)}"
                )
            shuffled = rng.permutation(members)
            for j in range(k):
                chunks[j].append(shuffled[j * per : (j + 1) * per])
            rest.append(shuffled[k * per :])
        tests = {f"test_{j + 1}": np.sort(np.concatenate(chunks[j])) for j in range(k)}
        pool = np.concatenate(rest)
    elif cfg.test_fraction > 0:
        pool, test = stratified_part(
            np.arange(len(labels)), labels, cfg.test_fraction, rng, "test", name
        )
        tests = {"test": test}
    else:
        pool = np.arange(len(labels))

    if caps is not None:
        capped = []
        for c in present.tolist():
            members = pool[labels[pool] == c]
            if len(members) > caps[c]:
                members = rng.choice(members, size=caps[c], replace=False)
            capped.append(members)
        pool = np.concatenate(capped)
        check_pool(pool, labels, cfg.train_per_class, name)
    if cfg.val_fraction > 0 and not (cfg.use_official and len(val)):
        pool, val = stratified_part(pool, labels, cfg.val_fraction, rng, "val", name)

    split = Split(
        train=np.sort(pool), val=np.sort(val), tests={k: np.sort(v) for k, v in tests.items()}
    )
    _check_parts(split, labels, present, name, cfg)
    return split


def stratified_part(
    idx: np.ndarray,
    labels: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
    part: str,
    name: Callable[[int], str],
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (rest, part) with ``fraction`` of every class in ``part``."""
    y = labels[idx]
    values, counts = np.unique(y, return_counts=True)
    if (counts < 2).any():
        c = int(values[np.argmin(counts)])
        raise DataError(
            f"class '{name(c)}' has {counts.min()} image(s) left, too few to split off a {part} set"
        )
    n_part = int(np.ceil(fraction * len(idx)))
    if n_part < len(values) or len(idx) - n_part < len(values):
        raise DataError(
            f"{part} fraction {fraction} of {len(idx)} images gives {n_part} {part} images, "
            f"fewer than one per class ({len(values)} classes) on one side"
        )
    state = int(rng.integers(0, 2**31 - 1))
    rest, taken = train_test_split(idx, test_size=fraction, stratify=y, random_state=state)
    return np.asarray(rest, dtype=np.int64), np.asarray(taken, dtype=np.int64)


def _official(
    labels: np.ndarray, origin: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    if origin is None:
        raise DataError(
            "split.use_official needs each image's official split: a MedMNIST .npz, or a CSV "
            "source with data.split_column (train/val/test per row). Set use_official: false "
            "to split at random"
        )
    if len(origin) != len(labels):
        raise DataError(f"origin has {len(origin)} entries for {len(labels)} labels")
    where = np.asarray(origin)
    found = sorted(set(where.tolist()))
    for needed in ("train", "test"):
        if needed not in found:
            raise DataError(
                f"split.use_official needs an official '{needed}' split; the data has "
                f"{', '.join(found)} (check data.npz_splits)"
            )
    return (
        np.flatnonzero(where == "train"),
        np.flatnonzero(where == "val"),
        {"test": np.flatnonzero(where == "test")},
    )


def _check_parts(
    split: Split,
    labels: np.ndarray,
    present: np.ndarray,
    name: Callable[[int], str],
    cfg: SplitConfig,
) -> None:
    for part, idx in split.parts.items():
        if part == "val" and cfg.val_fraction == 0 and len(idx) == 0:
            continue
        have = set(labels[idx].tolist())
        lacking = [name(c) for c in present.tolist() if c not in have]
        if lacking:
            raise DataError(
                f"the {part} part would get 0 images of class(es) "
                f"{', '.join(map(repr, lacking))}: too few images for test_sets="
                f"{cfg.test_sets}, test_per_class={cfg.test_per_class}, test_fraction="
                f"{cfg.test_fraction}, train_per_class={cfg.train_per_class}, "
                f"val_fraction={cfg.val_fraction}"
            )


def group_leaks(split: Split, groups: Sequence[str] | np.ndarray) -> dict[str, list[str]]:
    """Groups found in more than one part of ``split``: group → the parts holding it."""
    where: dict[str, list[str]] = {}
    for part, idx in split.parts.items():
        for i in np.asarray(idx).tolist():
            parts = where.setdefault(str(groups[i]), [])
            if not parts or parts[-1] != part:
                parts.append(part)
    return {g: parts for g, parts in where.items() if len(parts) > 1}


class GroupTable:
    """Group code per image and images per (group, class)."""

    def __init__(self, labels: np.ndarray, groups: Sequence[str] | np.ndarray) -> None:
        if len(groups) != len(labels):
            raise DataError(f"groups has {len(groups)} entries for {len(labels)} labels")
        ids = np.asarray([str(g) for g in groups])
        self.names, self.code = np.unique(ids, return_inverse=True)
        self.n_classes = int(labels.max()) + 1
        self.counts = np.zeros((len(self.names), self.n_classes), dtype=np.int64)
        np.add.at(self.counts, (self.code, labels), 1)

    def members(self, codes: np.ndarray) -> np.ndarray:
        """Sorted image indices of the groups ``codes``."""
        return np.flatnonzero(np.isin(self.code, codes))


def class_shares(labels: np.ndarray, idx: np.ndarray, fraction: float) -> np.ndarray:
    """Per-class target: ``round(fraction × count)``, at least 1 for every class in ``idx``."""
    counts = np.bincount(labels[idx], minlength=int(labels.max()) + 1)
    return np.where(counts > 0, np.maximum(1, np.rint(fraction * counts)), 0).astype(np.int64)


def take_groups(
    table: GroupTable,
    available: np.ndarray,
    target: np.ndarray,
    rng: np.random.Generator,
    overshoot: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """(taken, rest) group codes: first-fit towards ``target`` images per class, in random order.

    ``overshoot`` tops up classes still short with the smallest group that holds them."""
    order = rng.permutation(np.asarray(available, dtype=np.int64))
    counts = table.counts[order]
    have = np.zeros(table.n_classes, dtype=np.int64)
    taken = np.zeros(len(order), dtype=bool)
    for i in range(len(order)):
        short = have < target
        if not short.any():
            break
        if (counts[i][short] > 0).any() and (have + counts[i] <= target).all():
            have += counts[i]
            taken[i] = True
    for c in np.flatnonzero(have < target) if overshoot else []:
        while have[c] < target[c]:
            holders = np.flatnonzero(~taken & (counts[:, c] > 0))
            if not len(holders):
                break
            pick = holders[np.argmin(counts[holders].sum(axis=1))]
            have += counts[pick]
            taken[pick] = True
    return order[taken], order[~taken]


def _grouped_split(
    labels: np.ndarray,
    cfg: SplitConfig,
    rng: np.random.Generator,
    origin: Sequence[str] | None,
    table: GroupTable,
    name: Callable[[int], str],
    caps: np.ndarray | None,
) -> Split:
    present = np.unique(labels).tolist()
    codes = np.arange(len(table.names))
    tests: dict[str, np.ndarray] = {}
    val = np.empty(0, dtype=np.int64)
    if cfg.use_official:
        pool, val, tests = _official(labels, origin)
        codes = np.unique(table.code[pool])
    elif cfg.test_sets > 0:
        per, k = int(cfg.test_per_class or 0), cfg.test_sets
        counts = np.bincount(labels)
        for c in present:
            if counts[c] < k * per:
                raise DataError(
                    f"test_sets={k} × test_per_class={per} needs {k * per} images of class "
                    f"'{name(c)}' but it has {counts[c]}"
                )
        target = np.zeros(table.n_classes, dtype=np.int64)
        target[present] = per
        for j in range(k):
            taken, codes = take_groups(table, codes, target, rng, True)
            got = table.counts[taken].sum(axis=0)
            for c in present:
                if got[c] < per:
                    raise DataError(
                        f"test_{j + 1}: the whole groups left give only {got[c]} images of class "
                        f"'{name(c)}' for test_per_class={per}; lower test_sets or test_per_class"
                    )
            tests[f"test_{j + 1}"] = table.members(taken)
    elif cfg.test_fraction > 0:
        target = class_shares(labels, np.arange(len(labels)), cfg.test_fraction)
        taken, codes = take_groups(table, codes, target, rng, True)
        tests = {"test": table.members(taken)}
    if caps is not None:
        codes, _ = take_groups(table, codes, caps, rng, False)
    if cfg.val_fraction > 0 and not (cfg.use_official and len(val)):
        pool = table.members(codes)
        taken, codes = take_groups(table, codes, class_shares(labels, pool, cfg.val_fraction), rng, True)
        val = table.members(taken)
    split = Split(
        train=table.members(codes),
        val=np.sort(val),
        tests={k: np.sort(v) for k, v in tests.items()},
    )
    leaks = group_leaks(split, table.names[table.code])
    if leaks:
        first = next(iter(leaks.items()))
        raise DataError(
            f"{len(leaks)} group(s) span several parts of the official split, e.g. "
            f"'{first[0]}' in {', '.join(first[1])}; split at random instead (use_official: false)"
        )
    return split
