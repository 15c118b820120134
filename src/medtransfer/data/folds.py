"""Stratified k-fold cross-validation, grouped with scikit-learn's ``StratifiedGroupKFold`` when
patient groups are given; each fold is a :class:`~medtransfer.data.splits.Split` whose
``tests["test"]`` is held out, with an optional (grouped) validation part."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from medtransfer.data.splits import GroupTable, Split, class_shares, stratified_part, take_groups
from medtransfer.errors import ConfigError, DataError

__all__ = ["make_folds"]


def make_folds(
    labels: np.ndarray,
    k: int,
    seed: int,
    *,
    groups: Sequence[str] | np.ndarray | None = None,
    val_fraction: float = 0.0,
    classes: Sequence[str] | None = None,
) -> list[Split]:
    """Stratified k-fold cross-validation: fold i holds out ``tests["test"]`` and trains on the rest.

    Every index is in exactly one fold's test part. With ``groups`` the folds come from
    ``StratifiedGroupKFold`` and no group is on two sides; ``val_fraction`` > 0 also carves a
    stratified (grouped) validation part from each fold's training part.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1 or len(labels) == 0:
        raise DataError(f"make_folds needs a non-empty 1-D label array, got shape {labels.shape}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ConfigError(f"'folds': got {k!r}; expected an integer >= 2")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"'val_fraction': got {val_fraction}; expected 0 <= x < 1")

    def name(c: int) -> str:
        return classes[c] if classes is not None and 0 <= c < len(classes) else str(c)

    rng = np.random.default_rng(seed)
    state = int(rng.integers(0, 2**31 - 1))
    present = np.unique(labels)
    placeholder = np.zeros((len(labels), 1))
    table = None if groups is None else GroupTable(labels, groups)
    if table is None:
        counts = np.bincount(labels)
        for c in present.tolist():
            if counts[c] < k:
                raise DataError(
                    f"class '{name(c)}' has {counts[c]} image(s), fewer than folds={k}; "
                    "every fold needs each class"
                )
        pairs = StratifiedKFold(k, shuffle=True, random_state=state).split(placeholder, labels)
    else:
        for c in present.tolist():
            holders = int((table.counts[:, c] > 0).sum())
            if holders < k:
                raise DataError(
                    f"class '{name(c)}' occurs in {holders} group(s), fewer than folds={k}; "
                    "grouped folds need each class in at least k groups"
                )
        splitter = StratifiedGroupKFold(k, shuffle=True, random_state=state)
        pairs = splitter.split(placeholder, labels, table.code)
    folds = []
    for i, (train, test) in enumerate(pairs):
        val = np.empty(0, dtype=np.int64)
        if val_fraction > 0 and table is None:
            train, val = stratified_part(train, labels, val_fraction, rng, "val", name)
        elif val_fraction > 0 and table is not None:
            codes = np.unique(table.code[train])
            taken, rest = take_groups(table, codes, class_shares(labels, train, val_fraction), rng, True)
            train, val = table.members(rest), table.members(taken)
        split = Split(np.sort(train), np.sort(val), {"test": np.sort(test)})
        for part, idx in split.parts.items():
            lacking = [name(c) for c in present.tolist() if c not in set(labels[idx].tolist())]
            if lacking and not (part == "val" and val_fraction == 0):
                raise DataError(
                    f"fold {i + 1} of {k}: the {part} part gets 0 images of class(es) "
                    f"{', '.join(map(repr, lacking))}; use fewer folds"
                )
        folds.append(split)
    return folds
