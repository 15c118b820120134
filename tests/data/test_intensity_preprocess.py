"""preprocess.percentiles (skimage's rescale_intensity to each image's percentiles) and
preprocess.rescale (Keras's rescale factor, folded into the input normalisation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.exposure import rescale_intensity

from medtransfer.config import from_dict
from medtransfer.data import PreprocessConfig, preprocess_array
from medtransfer.data.intensity import rescaled_norm, stretch_percentiles
from medtransfer.errors import ConfigError


def _skimage(img: np.ndarray, low: float, high: float) -> np.ndarray:
    """Seed 002's code: exposure.rescale_intensity(img, in_range=np.percentile(img, (low, high)))."""
    return rescale_intensity(img, in_range=tuple(np.percentile(img, (low, high))))


@pytest.mark.parametrize(("dtype", "top"), [(np.uint8, 256), (np.uint16, 4000)])
def test_percentiles_are_skimages_rescale_intensity(dtype, top):
    img = np.random.default_rng(0).integers(0, top, (3, 20, 30)).astype(dtype)
    for low, high in [(5, 95), (2, 98), (0, 100)]:
        got = stretch_percentiles(img, (low, high))
        assert got.dtype == img.dtype
        assert np.array_equal(got, _skimage(img, low, high))
    flat = np.full((1, 4, 4), 7, dtype=dtype)
    assert np.array_equal(stretch_percentiles(flat, (2, 98)), flat)
    assert stretch_percentiles(img, None) is img


def test_preprocess_array_applies_percentiles_after_resizing_and_keys_the_cache():
    raw = np.random.default_rng(1).integers(60, 190, (40, 50)).astype(np.uint8)
    plain = PreprocessConfig(size=16)
    stretched = from_dict(PreprocessConfig, {"size": 16, "percentiles": [2, 98]})
    assert stretched.percentiles == (2.0, 98.0)
    out = preprocess_array(raw, stretched)
    assert np.array_equal(out, _skimage(preprocess_array(raw, plain), 2, 98))
    assert out.min() == 0 and out.max() == 255
    assert stretched.key() != plain.key()
    # Options that leave the pixels alone keep the cache key (and so every cached image).
    assert PreprocessConfig(size=16, percentiles=None, rescale=1).key() == plain.key()


def test_rescale_accepts_a_factor_or_a_fraction_and_keeps_1_255_the_default():
    assert PreprocessConfig(rescale="1/255").rescale is None
    assert PreprocessConfig(rescale=1 / 255).rescale is None
    assert from_dict(PreprocessConfig, {"rescale": 1}).rescale == 1.0
    assert PreprocessConfig(rescale="2/255").rescale == pytest.approx(2 / 255)
    for bad in (0, -1, "abc", "1/0", True):
        with pytest.raises(ConfigError, match=r"'rescale':.* got"):
            from_dict(PreprocessConfig, {"rescale": bad})
    for bad in ([98, 2], [5], [-1, 50], [50, 101]):
        with pytest.raises(ConfigError, match=r"'percentiles':.* got"):
            from_dict(PreprocessConfig, {"percentiles": bad})


def test_rescaled_norm_makes_the_model_see_the_rescaled_intensities():
    x = torch.rand(2, 3, 4, 4)
    assert rescaled_norm(None, None, 3) is None
    imagenet = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert rescaled_norm(imagenet, "1/255", 3) == imagenet
    for rescale, norm in [(1.0, None), (2 / 255, None), (1.0, imagenet)]:
        mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in rescaled_norm(norm, rescale, 3))
        seen = x * 255 * rescale  # what Keras's rescale gives the model
        if norm is not None:
            seen = (seen - torch.tensor(norm[0]).view(1, -1, 1, 1)) / torch.tensor(norm[1]).view(1, -1, 1, 1)
        assert torch.allclose((x - mean) / std, seen, rtol=1e-5, atol=1e-4)
