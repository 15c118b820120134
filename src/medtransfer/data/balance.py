"""Per-class image counts of a split: the training pool's cap per class (``train_per_class``,
a number or a mapping of class name → count) and the imbalanced subset of a whole data set
(``imbalance``, e.g. a 1:10 COVID set). Draws come from the generator passed in."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from medtransfer.config import closest
from medtransfer.errors import DataError

__all__ = ["check_pool", "class_caps", "imbalanced_subset"]


def _class_index(name: str, labels: np.ndarray, label_of: Callable[[int], str], key: str) -> int:
    """The label of class ``name``; an unknown name is an error naming the classes present."""
    names = {label_of(c): c for c in range(int(labels.max()) + 1)}
    if name not in names:
        folded = {n.lower(): n for n in names}
        hint = folded.get(name.lower()) or closest(name, names)
        extra = f"; did you mean '{hint}'?" if hint else ""
        raise DataError(f"'split.{key}': got class {name!r}{extra} The data set's classes: "
                        f"{', '.join(names)}")
    return names[name]


def class_caps(caps: int | Mapping[str, int] | None, labels: np.ndarray,
               label_of: Callable[[int], str]) -> np.ndarray | None:
    """``train_per_class`` as a cap per label (a class a mapping does not name: no cap)."""
    if caps is None:
        return None
    n = int(labels.max()) + 1
    if not isinstance(caps, Mapping):
        return np.full(n, caps, dtype=np.int64)
    out = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    for cls, count in caps.items():
        out[_class_index(cls, labels, label_of, "train_per_class")] = count
    return out


def check_pool(pool: np.ndarray, labels: np.ndarray, caps: int | Mapping[str, int] | None,
               name: Callable[[int], str]) -> None:
    """Every class a ``train_per_class`` mapping names reached its count in the training pool
    ``pool`` (indices into ``labels``)."""
    if not isinstance(caps, Mapping):
        return
    have = np.bincount(labels[pool], minlength=int(labels.max()) + 1)
    for cls, count in caps.items():
        c = _class_index(cls, labels, name, "train_per_class")
        if have[c] < count:
            raise DataError(
                f"'split.train_per_class': class {cls!r} needs {count} training-pool images but "
                f"{have[c]} are left after the test sets (lower its count, or the test sets')"
            )


def imbalanced_subset(labels: np.ndarray, ratios: Mapping[str, float], rng: np.random.Generator,
                      classes: Sequence[str] | None = None) -> np.ndarray:
    """Sorted indices of the imbalanced data set: each class named in ``ratios`` keeps
    ``round(ratio × the largest class's count)`` of its images, drawn from ``rng``; the others
    keep all theirs. Too few images of a named class is an error naming it."""
    counts = np.bincount(labels)

    def label_of(c: int) -> str:
        return classes[c] if classes is not None and 0 <= c < len(classes) else str(c)

    largest = int(counts.argmax())
    keep = []
    wanted = {_class_index(cls, labels, label_of, "imbalance"): (cls, r) for cls, r in ratios.items()}
    for c in range(len(counts)):
        members = np.flatnonzero(labels == c)
        if c in wanted:
            cls, ratio = wanted[c]
            n = round(ratio * int(counts[largest]))
            if n < 1 or n > len(members):
                raise DataError(
                    f"'split.imbalance': class {cls!r} at {ratio} × {counts[largest]} (the largest "
                    f"class, {label_of(largest)!r}) needs {n} images but it has {len(members)}"
                    + ("; raise the ratio" if n < 1 else "; lower the ratio")
                )
            members = rng.choice(members, size=n, replace=False)
        keep.append(members)
    return np.sort(np.concatenate(keep))
