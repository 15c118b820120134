"""Build the demo data bundled in src/medtransfer/demo_data/ from the official MedMNIST v2 files.

    python scripts/make_demo_data.py [--src ../shared/data/medmnist] [--per-class 800] [--seed 0]

* demo_source.npz: a class-balanced subset of PneumoniaMNIST (``--per-class`` images per class,
  drawn with ``np.random.default_rng(seed)`` from the pooled official train/val/test splits);
  every drawn image stays in its official split, so the MedMNIST keys keep their meaning.
* demo_target.npz: BreastMNIST, all 780 images, arrays unchanged.

Both get an extra ``classes`` key (string array) naming the labels. The output is byte-for-byte
reproducible for the same inputs and arguments.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SRC = REPO.parent / "shared" / "data" / "medmnist"
DEFAULT_OUT = REPO / "src" / "medtransfer" / "demo_data"
SPLITS = ("train", "val", "test")
SOURCE_CLASSES = ["normal", "pneumonia"]
TARGET_CLASSES = ["malignant", "benign_or_normal"]

ATTRIBUTION = """\
# Demo data: attribution and licence

The two files in this folder are derived from **MedMNIST v2** and are distributed under the
**Creative Commons Attribution 4.0 International licence (CC BY 4.0)**,
https://creativecommons.org/licenses/by/4.0/ . Changes from the originals are described below.

Please cite MedMNIST when you use them:

> Jiancheng Yang, Rui Shi, Donglai Wei, Zequan Liu, Lin Zhao, Bilian Ke, Hanspeter Pfister,
> Bingbing Ni. "MedMNIST v2 — a large-scale lightweight benchmark for 2D and 3D biomedical image
> classification". *Scientific Data* 10, 41 (2023). https://doi.org/10.1038/s41597-022-01721-8

and the source data sets:

* PneumoniaMNIST — Daniel S. Kermany et al. "Identifying medical diagnoses and treatable
  diseases by image-based deep learning". *Cell* 172(5), 1122–1131 (2018).
* BreastMNIST — Walid Al-Dhabyani, Mohammed Gomaa, Hussien Khaled, Aly Fahmy. "Dataset of
  breast ultrasound images". *Data in Brief* 28, 104863 (2020).

## Files

All images are 28×28 grayscale (uint8).

| file | from | images (per class) | classes (label 0, 1) |
|---|---|---|---|
| demo_source.npz | PneumoniaMNIST (chest X-ray) | {n_source} ({source_counts}) | {source_classes} |
| demo_target.npz | BreastMNIST (ultrasound) | {n_target} ({target_counts}) | {target_classes} |

Keys follow MedMNIST: `train_images`, `train_labels`, `val_images`, `val_labels`, `test_images`,
`test_labels` (uint8; labels of shape (N, 1)), plus `classes`, a string array of class names.

## How they were made

Made by `scripts/make_demo_data.py` (seed {seed}, {per_class} per class) from the unchanged
official MedMNIST v2 files:

* `demo_source.npz`: {per_class} images per class drawn without replacement with
  `numpy.random.default_rng({seed})` from the pooled official train/val/test splits of
  PneumoniaMNIST; each image stays in its official split (train/val/test: {source_splits}).
* `demo_target.npz`: every BreastMNIST image, arrays unchanged (train/val/test:
  {target_splits}). MedMNIST label 1 merges the original "normal" and "benign" classes.

Input files (sha256):

{inputs}
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return {k: archive[k] for k in archive.files}


def balanced_subset(
    data: dict[str, np.ndarray], per_class: int, seed: int
) -> dict[str, np.ndarray]:
    """``per_class`` images of every class from the pooled splits; each keeps its split."""
    labels = np.concatenate([data[f"{s}_labels"].reshape(-1) for s in SPLITS])
    split_of = np.concatenate([np.full(len(data[f"{s}_labels"]), i) for i, s in enumerate(SPLITS)])
    offset = np.concatenate([np.arange(len(data[f"{s}_labels"])) for s in SPLITS])
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise SystemExit(f"class {c} has only {len(members)} images, fewer than {per_class}")
        chosen.append(rng.choice(members, size=per_class, replace=False))
    picked = np.sort(np.concatenate(chosen))
    out = {}
    for i, split in enumerate(SPLITS):
        idx = offset[picked[split_of[picked] == i]]
        out[f"{split}_images"] = data[f"{split}_images"][idx]
        out[f"{split}_labels"] = data[f"{split}_labels"][idx]
    return out


def describe(data: dict[str, np.ndarray]) -> tuple[int, str, str]:
    labels = np.concatenate([data[f"{s}_labels"].reshape(-1) for s in SPLITS])
    counts = " / ".join(str(int(n)) for n in np.bincount(labels))
    splits = " / ".join(str(len(data[f"{s}_labels"])) for s in SPLITS)
    return len(labels), counts, splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help="folder of MedMNIST .npz")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="demo_data folder")
    parser.add_argument("--per-class", type=int, default=800)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pneumonia_file = args.src / "pneumoniamnist.npz"
    breast_file = args.src / "breastmnist.npz"
    for path in (pneumonia_file, breast_file):
        if not path.is_file():
            raise SystemExit(f"{path} not found; pass --src <folder with the MedMNIST files>")
    source = balanced_subset(load(pneumonia_file), args.per_class, args.seed)
    target = load(breast_file)

    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "demo_source.npz", **source, classes=np.array(SOURCE_CLASSES))
    np.savez_compressed(args.out / "demo_target.npz", **target, classes=np.array(TARGET_CLASSES))
    n_source, source_counts, source_splits = describe(source)
    n_target, target_counts, target_splits = describe(target)
    inputs = "\n".join(f"* `{p.name}`: `{sha256(p)}`" for p in (pneumonia_file, breast_file))
    text = ATTRIBUTION.format(
        n_source=n_source,
        source_counts=source_counts,
        source_classes=", ".join(SOURCE_CLASSES),
        n_target=n_target,
        target_counts=target_counts,
        target_classes=", ".join(TARGET_CLASSES),
        seed=args.seed,
        per_class=args.per_class,
        source_splits=source_splits,
        target_splits=target_splits,
        inputs=inputs,
    )
    (args.out / "ATTRIBUTION.md").write_text(text, encoding="utf-8")
    for name in ("demo_source.npz", "demo_target.npz", "ATTRIBUTION.md"):
        path = args.out / name
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
