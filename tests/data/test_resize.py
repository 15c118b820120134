"""``preprocess.resize``: PIL's antialiased bilinear (default), PIL's nearest neighbour (Keras's
``load_img``) and bilinear without antialiasing (``tf.image.resize``, OpenCV's INTER_LINEAR)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from medtransfer.data.images import PreprocessConfig, preprocess_array
from medtransfer.errors import ConfigError


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, size=(37, 29), dtype=np.uint8)


def test_nearest_is_pils_nearest_as_keras_load_img(image):
    got = preprocess_array(image, PreprocessConfig(size=(12, 10), resize="nearest"))[0]
    want = np.asarray(Image.fromarray(image).resize((10, 12), Image.Resampling.NEAREST))
    assert np.array_equal(got, want)
    assert set(np.unique(got)) <= set(np.unique(image))  # no new grey levels


def test_bilinear_has_no_antialiasing_and_the_default_has(image):
    plain = preprocess_array(image, PreprocessConfig(size=8, resize="bilinear"))[0]
    x = torch.from_numpy(image.astype(np.float32))[None, None]
    want = F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)[0, 0].numpy()
    assert np.array_equal(plain, np.clip(np.rint(want), 0, 255).astype(np.uint8))
    smooth = preprocess_array(image, PreprocessConfig(size=8))[0]
    assert smooth.std() < plain.std()  # antialiasing averages neighbourhoods: less contrast left
    wide = preprocess_array((image.astype(np.uint16) * 257), PreprocessConfig(size=8, resize="bilinear"))
    assert wide.dtype == np.uint16 and np.abs(wide[0].astype(int) - plain.astype(int) * 257).max() <= 257


def test_resize_enters_the_cache_key_only_when_not_the_default():
    assert PreprocessConfig(size=8).key() == PreprocessConfig(size=8, resize="antialias").key()
    assert PreprocessConfig(size=8).key() != PreprocessConfig(size=8, resize="nearest").key()
    with pytest.raises(ConfigError, match="'resize': got 'cubic'"):
        PreprocessConfig(resize="cubic")  # type: ignore[arg-type]
