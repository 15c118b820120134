"""Augmenter against Keras itself: each transform with fixed parameters must give what Keras's
``ImageDataGenerator.apply_transform`` gave (reference outputs made by
``scripts/make_keras_augment_refs.py`` in a TensorFlow environment, kept in
``keras_augment_refs.npz``), and the random draws must follow Keras's distributions.

Tolerances: geometric cases 1e-4 (float32 ``grid_sample`` against scipy's float64 spline of
order 1; a sign, axis, unit or order error moves pixels of a random-level image by ~0.1–0.5);
brightness cases 2/255 (Keras truncates to whole 0–255 levels for PIL, which rounds again).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medtransfer.data import AugmentConfig, Augmenter
from medtransfer.data.augment import AugmentParams

REFS = np.load(Path(__file__).with_name("keras_augment_refs.npz"), allow_pickle=False)
CASES: dict[str, dict] = json.loads(str(REFS["cases"]))
GEOMETRIC_TOL = 1e-4
BRIGHTNESS_TOL = 2 / 255

_KERAS_NAMES = {
    "theta": "rotation",
    "tx": "shift_x",
    "ty": "shift_y",
    "zx": "zoom_x",
    "zy": "zoom_y",
    "shear": "shear",
    "flip_horizontal": "flip_h",
    "flip_vertical": "flip_v",
    "brightness": "brightness",
}


def _params(keras_params: dict) -> AugmentParams:
    """The same transform as Keras's ``apply_transform`` parameter dict, for a batch of one."""
    kw = {_KERAS_NAMES[k]: torch.tensor([v]) for k, v in keras_params.items()}
    return AugmentParams(**kw)


def _to_torch(hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1)))[None].float()


def _ours(name: str) -> np.ndarray:
    case = CASES[name]
    x = _to_torch(REFS[case["image"]])
    out = Augmenter(AugmentConfig()).apply(x, _params(case["params"]))
    return out[0].numpy().transpose(1, 2, 0)


@pytest.mark.parametrize("name", sorted(n for n in CASES if "brightness" not in n))
def test_geometric_transform_matches_keras(name: str):
    ref = REFS[name]
    ours = _ours(name)
    assert ours.shape == ref.shape
    err = float(np.abs(ours - ref).max())
    assert err < GEOMETRIC_TOL, f"{name}: max |medtransfer - keras| = {err:.3g}"
    # The case really transforms the image, by far more than the tolerance.
    assert np.abs(ref - REFS[CASES[name]["image"]]).max() > 100 * GEOMETRIC_TOL


@pytest.mark.parametrize("name", sorted(n for n in CASES if "brightness" in n))
def test_brightness_matches_keras(name: str):
    ref = REFS[name]
    err = float(np.abs(_ours(name) - ref).max())
    assert err < BRIGHTNESS_TOL, f"{name}: max |medtransfer - keras| = {err * 255:.2f}/255"


def test_references_separate_the_likely_mistakes():
    """The tolerance is small against what a wrong sign, axis or order would give."""
    square = _to_torch(REFS["square"])
    aug = Augmenter(AugmentConfig())

    def gap(name: str, **changed: float) -> float:
        keras_params = {**CASES[name]["params"], **changed}
        out = aug.apply(square, _params(keras_params))[0].numpy().transpose(1, 2, 0)
        return float(np.abs(out - REFS[name]).max())

    assert gap("rotation", theta=-23.0) > 0.2
    assert gap("shear", shear=-17.0) > 0.2
    assert gap("shift_x", tx=0.0, ty=3.4) > 0.2
    assert gap("zoom_x", zx=1.0, zy=0.7) > 0.2
    assert gap("zoom_y", zy=1 / 1.25) > 0.2
    assert gap("shear", shear=math.radians(17.0)) > 0.2
    assert gap("compose", flip_horizontal=False) > 0.2


def test_draws_follow_keras_distributions():
    """Ranges, units and axes of the random parameters on a non-square image."""
    cfg = AugmentConfig(
        rotation=20, width_shift=0.1, height_shift=0.25, zoom=(0.8, 1.1), shear=15,
        horizontal_flip=True, vertical_flip=True, brightness=(0.2, 0.8),
    )
    p = Augmenter(cfg).draw(4000, 12, 40, torch.Generator().manual_seed(0))

    def spans(v: torch.Tensor | None, low: float, high: float) -> bool:
        assert v is not None
        lo, hi = v.min().item(), v.max().item()
        return low <= lo < low + 0.02 * (high - low) and high - 0.02 * (high - low) < hi <= high

    assert spans(p.rotation, -20, 20)
    assert spans(p.shift_x, -4.0, 4.0)  # 0.1 of the width (40 px), along the columns
    assert spans(p.shift_y, -3.0, 3.0)  # 0.25 of the height (12 px), along the rows
    assert spans(p.zoom_x, 0.8, 1.1) and spans(p.zoom_y, 0.8, 1.1)
    assert abs(torch.corrcoef(torch.stack([p.zoom_x, p.zoom_y]))[0, 1].item()) < 0.1
    assert spans(p.shear, -15, 15)  # degrees
    assert spans(p.brightness, 0.2, 0.8)
    for flips in (p.flip_h, p.flip_v):
        assert flips is not None and 1800 < int(flips.sum()) < 2200  # p = 1/2, sd ≈ 32
    both = int((p.flip_h & p.flip_v).sum())
    assert 850 < both < 1150  # independent: about a quarter


def test_call_is_apply_of_draw():
    x = torch.rand(6, 3, 10, 14, generator=torch.Generator().manual_seed(1))
    cfg = AugmentConfig(rotation=30, width_shift=0.2, zoom=0.2, shear=10, horizontal_flip=True)
    aug = Augmenter(cfg)
    p = aug.draw(6, 10, 14, torch.Generator().manual_seed(5))
    assert torch.equal(aug(x, torch.Generator().manual_seed(5)), aug.apply(x, p))


@pytest.mark.parametrize("axis", ["horizontal", "vertical"])
def test_flips_happen_half_the_time_and_are_exact(axis: str):
    x = torch.rand(400, 1, 5, 7, generator=torch.Generator().manual_seed(2))
    cfg = AugmentConfig(horizontal_flip=axis == "horizontal", vertical_flip=axis == "vertical")
    out = Augmenter(cfg)(x, torch.Generator().manual_seed(3))
    dim = -1 if axis == "horizontal" else -2
    flipped = sum(torch.equal(o, xi.flip(dim)) for o, xi in zip(out, x, strict=True))
    kept = sum(torch.equal(o, xi) for o, xi in zip(out, x, strict=True))
    assert flipped + kept == 400
    assert 160 < flipped < 240  # Binomial(400, 1/2): sd 10
