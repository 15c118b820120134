"""Augmenter: seeded determinism, exact flips, identity when off, [0, 1] output."""

from __future__ import annotations

import pytest
import torch

from medtransfer.config import from_dict
from medtransfer.data import AugmentConfig, Augmenter
from medtransfer.errors import ConfigError

FULL = AugmentConfig(
    rotation=20,
    width_shift=0.1,
    height_shift=0.1,
    zoom=0.2,
    shear=10,
    horizontal_flip=True,
    vertical_flip=True,
    brightness=(0.6, 1.4),
    contrast=0.3,
)


def _batch(seed: int = 0, shape: tuple[int, ...] = (8, 1, 12, 16)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_same_generator_seed_same_output_other_seed_differs():
    x = _batch()
    aug = Augmenter(FULL)
    a, b, c = aug(x, _gen(1)), aug(x, _gen(1)), aug(x, _gen(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype


def test_identity_when_nothing_is_enabled():
    x = _batch()
    assert not AugmentConfig().enabled
    assert Augmenter(AugmentConfig()).__call__(x, _gen(0)) is x
    assert not AugmentConfig(brightness=(1.0, 1.0), zoom=(1.0, 1.0)).enabled


def test_horizontal_flip_is_exact():
    x = _batch(shape=(32, 3, 5, 7))
    out = Augmenter(AugmentConfig(horizontal_flip=True))(x, _gen(0))
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x, strict=True)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 5 < sum(flipped) < 27  # about half of them


def test_vertical_flip_is_exact():
    x = _batch(shape=(16, 1, 6, 6))
    out = Augmenter(AugmentConfig(vertical_flip=True))(x, _gen(3))
    pairs = zip(out, x, strict=True)
    assert all(torch.equal(o, xi) or torch.equal(o, xi.flip(-2)) for o, xi in pairs)


def test_output_stays_in_unit_range():
    x = _batch(shape=(16, 3, 10, 10))
    out = Augmenter(AugmentConfig(brightness=(1.5, 2.5), contrast=0.9, rotation=45))(x, _gen(0))
    assert out.min() >= 0 and out.max() <= 1
    assert (out == 1).any()  # brightened pixels were clamped


def test_geometric_transform_keeps_constant_image_with_nearest_fill():
    x = torch.full((4, 1, 9, 13), 0.25)
    cfg = AugmentConfig(rotation=30, width_shift=0.3, height_shift=0.3, zoom=0.3, shear=20)
    out = Augmenter(cfg)(x, _gen(0))
    assert torch.allclose(out, x, atol=1e-6)
    zeros = Augmenter(AugmentConfig(width_shift=0.5, fill="constant"))(x, _gen(0))
    assert (zeros == 0).any() and zeros.max() <= 0.25 + 1e-6


def test_rotation_moves_pixels():
    x = torch.zeros(1, 1, 15, 15)
    x[..., 7, :] = 1.0  # a horizontal bar
    out = Augmenter(AugmentConfig(rotation=90))(x, _gen(5))
    assert not torch.allclose(out, x, atol=0.1)
    assert abs(out.sum().item() - x.sum().item()) < 4  # mass roughly kept


def test_enabling_one_transform_keeps_the_others_draws():
    x = _batch()
    flip = Augmenter(AugmentConfig(horizontal_flip=True))(x, _gen(9))
    both = Augmenter(AugmentConfig(horizontal_flip=True, brightness=(1.0, 1.0)))(x, _gen(9))
    assert torch.equal(flip, both)


def test_rejects_non_float_or_wrong_rank():
    aug = Augmenter(AugmentConfig(horizontal_flip=True))
    with pytest.raises(ValueError, match=r"float"):
        aug(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), _gen(0))
    with pytest.raises(ValueError, match=r"B, C, H, W"):
        aug(torch.zeros(1, 4, 4), _gen(0))


def test_config_from_yaml_and_errors():
    cfg = from_dict(AugmentConfig, {"zoom": [0.8, 1.1], "brightness": [0.2, 0.8], "shear": 0.2})
    assert cfg.zoom_range == (0.8, 1.1) and cfg.brightness == (0.2, 0.8) and cfg.enabled
    assert AugmentConfig(zoom=0.2).zoom_range == (0.8, 1.2)
    with pytest.raises(ConfigError, match=r"rotation"):
        AugmentConfig(rotation=-5)
    with pytest.raises(ConfigError, match=r"fill"):
        from_dict(AugmentConfig, {"fill": "wrap"})
    with pytest.raises(ConfigError, match=r"brightness"):
        AugmentConfig(brightness=(0.8, 0.2))
    with pytest.raises(ConfigError, match=r"zoom"):
        AugmentConfig(zoom=1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_with_cpu_generator_matches_cpu():
    x = _batch()
    cpu = Augmenter(FULL)(x, _gen(4))
    gpu = Augmenter(FULL)(x.cuda(), _gen(4))
    assert gpu.device.type == "cuda"
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-4)
