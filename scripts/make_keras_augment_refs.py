"""Reference outputs of Keras's own ``ImageDataGenerator.apply_transform`` for the augmentation
tests (``tests/data/test_augment_keras.py``), written to ``tests/data/keras_augment_refs.npz``.

Run it in a TensorFlow environment kept apart from medtransfer's (see ../shared/bench/README.md)::

    python3 -m venv /tmp/keras-venv && /tmp/keras-venv/bin/pip install -q tensorflow-cpu keras pillow
    /tmp/keras-venv/bin/python scripts/make_keras_augment_refs.py

What is stored: a small asymmetric test image (random integer levels / 255, square 16 × 16 × 3
and non-square 12 × 20 × 3, channels last), and for each case the Keras parameter dict (JSON)
and ``apply_transform``'s output. Every case uses ``ImageDataGenerator()``'s defaults: bilinear
(``interpolation_order=1``), ``fill_mode="nearest"``.

* Square cases call Keras unchanged.
* Non-square cases (``wide_*``) call Keras with one fix: Keras centres its matrix with
  ``transform_matrix_offset_center(m, h, w)`` although the matrix is in (x, y) = (column, row)
  order, so on a non-square image it rotates about a point off the centre. Those cases swap the
  two arguments back (the centre is then the image centre); everything else is Keras's code.
* Brightness cases go through Keras's PIL path, which needs 0–255 values: the image is passed
  as ``255 · x`` and the output divided by 255 (PIL works in whole levels and Keras truncates
  to them, so these outputs are exact only to about 1/255).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from keras.src.legacy.preprocessing import image as kimage

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "keras_augment_refs.npz"

GEOMETRY = {
    "rotation": {"theta": 23.0},
    "rotation_negative": {"theta": -61.0},
    "shift_x": {"tx": 3.4},  # Keras's tx moves along the columns (see augment.AugmentParams)
    "shift_y": {"ty": -2.2},
    "zoom_x": {"zx": 0.7},
    "zoom_y": {"zy": 1.25},
    "shear": {"shear": 17.0},
    "shear_negative": {"shear": -30.0},
    "flip_h": {"flip_horizontal": True},
    "flip_v": {"flip_vertical": True},
    "compose": {
        "theta": -15.0, "tx": 2.5, "ty": 1.5, "shear": 12.0, "zx": 0.85, "zy": 1.15,
        "flip_horizontal": True, "flip_vertical": True,
    },
    "compose_rotate_shift": {"theta": 40.0, "tx": 3.0, "ty": -2.0},
}
BRIGHTNESS = {
    "brightness_dark": {"brightness": 0.6},
    "brightness_bright": {"brightness": 1.5},  # clips at 255
    "compose_brightness": {
        "theta": 10.0, "tx": -1.5, "shear": -8.0, "zy": 0.9, "flip_horizontal": True,
        "brightness": 0.7,
    },
}
WIDE = {
    "wide_rotation": {"theta": 30.0},
    "wide_compose": {"theta": -25.0, "tx": 2.0, "ty": 1.0, "shear": 10.0, "zx": 1.2, "zy": 0.8},
}


def _swapped_center(matrix: np.ndarray, x: float, y: float) -> np.ndarray:
    return _keras_center(matrix, y, x)


_keras_center = kimage.transform_matrix_offset_center


def main() -> int:
    rng = np.random.default_rng(17)
    square = (rng.integers(0, 256, size=(16, 16, 3)) / 255.0).astype(np.float64)
    wide = (rng.integers(0, 256, size=(12, 20, 3)) / 255.0).astype(np.float64)
    gen = kimage.ImageDataGenerator()
    out: dict[str, np.ndarray] = {"square": square.astype(np.float32), "wide": wide.astype(np.float32)}
    cases: dict[str, dict] = {}
    for name, params in GEOMETRY.items():
        out[name] = gen.apply_transform(square.copy(), dict(params)).astype(np.float32)
        cases[name] = {"image": "square", "params": params}
    for name, params in BRIGHTNESS.items():
        y = gen.apply_transform(np.rint(square * 255.0), dict(params)) / 255.0
        out[name] = y.astype(np.float32)
        cases[name] = {"image": "square", "params": params}
    kimage.transform_matrix_offset_center = _swapped_center
    try:
        for name, params in WIDE.items():
            out[name] = gen.apply_transform(wide.copy(), dict(params)).astype(np.float32)
            cases[name] = {"image": "wide", "params": params}
    finally:
        kimage.transform_matrix_offset_center = _keras_center
    out["cases"] = np.array(json.dumps(cases, sort_keys=True))
    out["keras_version"] = np.array(keras.__version__)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(cases)} cases, keras {keras.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
