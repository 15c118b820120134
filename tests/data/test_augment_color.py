"""Intensity and colour augmentation: Keras's channel shift, RGB and HSV shifts, random grey and
histogram equalisation — checked against Keras's own formula, matplotlib's HSV conversion and
PIL's equalize, and kept apart from the geometric transforms' draws."""

from __future__ import annotations

import matplotlib.colors as mcolors
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from medtransfer.config import from_dict
from medtransfer.data import AugmentConfig, Augmenter, color
from medtransfer.data.augment import _COLOR_DRAWS, _DRAWS
from medtransfer.errors import ConfigError


def _batch(shape: tuple[int, ...] = (6, 3, 10, 12), seed: int = 0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _keras_channel_shift(x: np.ndarray, intensity: float) -> np.ndarray:
    """keras_preprocessing.image.affine_transformations.apply_channel_shift, channel axis 0."""
    min_x, max_x = np.min(x), np.max(x)
    return np.stack([np.clip(c + intensity, min_x, max_x) for c in x], axis=0)


def test_channel_shift_is_keras_apply_channel_shift():
    x = _batch()
    shifts = torch.tensor([-0.3, -0.05, 0.0, 0.02, 0.2, 0.5])
    out = color.channel_shift(x, shifts)
    for i in range(len(x)):
        ref = _keras_channel_shift(x[i].numpy(), float(shifts[i]))
        np.testing.assert_allclose(out[i].numpy(), ref, atol=1e-6)


def test_channel_shift_draw_is_uniform_in_its_range_in_8bit_units():
    aug = Augmenter(AugmentConfig(channel_shift=51))  # ± 0.2 of the [0, 1] range
    p = aug.draw(4000, 4, 4, _gen(0))
    assert p.channel_shift is not None and p.rotation is None and p.rgb_shift is None
    assert float(p.channel_shift.abs().max()) <= 0.2 + 1e-6
    assert float(p.channel_shift.min()) < -0.18 and float(p.channel_shift.max()) > 0.18


def test_hsv_conversion_matches_matplotlib_both_ways():
    x = _batch()
    hsv = color.rgb_to_hsv(x)
    ref = mcolors.rgb_to_hsv(x.permute(0, 2, 3, 1).numpy())
    np.testing.assert_allclose(hsv.permute(0, 2, 3, 1).numpy(), ref, atol=1e-6)
    back = color.hsv_to_rgb(torch.from_numpy(ref).permute(0, 3, 1, 2))
    np.testing.assert_allclose(back.permute(0, 2, 3, 1).numpy(), mcolors.hsv_to_rgb(ref), atol=1e-6)
    grey = torch.full((1, 3, 2, 2), 0.4)  # no saturation: hue 0, like matplotlib
    assert torch.equal(color.rgb_to_hsv(grey)[:, :2], torch.zeros(1, 2, 2, 2))


def test_hsv_shift_turns_red_green_and_zero_shift_keeps_the_image():
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    green = color.hsv_shift(red, torch.tensor([[1 / 3, 0.0, 0.0]]))
    assert torch.allclose(green[0, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)
    x = _batch()
    assert torch.allclose(color.hsv_shift(x, torch.zeros(len(x), 3)), x, atol=1e-6)
    darker = color.hsv_shift(x, torch.tensor([[0.0, 0.0, -0.1]] * len(x)))
    assert torch.allclose(darker.amax(dim=1), (x.amax(dim=1) - 0.1).clamp(0, 1), atol=1e-6)


def test_rgb_shift_shifts_each_channel_within_its_limit():
    x = torch.full((500, 3, 2, 2), 0.5)
    out = Augmenter(AugmentConfig(rgb_shift=(51, 0, 25.5)))(x, _gen(1))
    delta = (out - x)[:, :, 0, 0]
    assert float(delta[:, 0].abs().max()) <= 0.2 + 1e-6 and float(delta[:, 0].abs().max()) > 0.15
    assert torch.equal(delta[:, 1], torch.zeros(500))
    assert float(delta[:, 2].abs().max()) <= 0.1 + 1e-6
    assert torch.equal(out, out[:, :, :1, :1].expand_as(out))  # one amount over the whole image


def test_grayscale_makes_luma_in_three_channels_for_about_p_of_the_images():
    x = _batch((400, 3, 4, 4))
    out = Augmenter(AugmentConfig(grayscale=0.25))(x, _gen(2))
    grey = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))
    assert 60 < int(grey.sum()) < 140
    luma = 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(out[grey][:, 0], luma[grey], atol=1e-3)
    assert torch.equal(out[~grey], x[~grey])


def test_equalize_is_pils_imageops_equalize():
    raw = torch.randint(40, 180, (5, 3, 16, 20), dtype=torch.uint8, generator=_gen(3))
    out = color.equalize(raw.float() / 255, torch.ones(5, dtype=torch.bool))
    for i in range(5):
        ref = np.asarray(ImageOps.equalize(Image.fromarray(raw[i].permute(1, 2, 0).numpy())))
        got = torch.round(out[i] * 255).to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(got, ref)
    kept = color.equalize(raw.float() / 255, torch.zeros(5, dtype=torch.bool))
    assert torch.equal(kept, raw.float() / 255)


def test_color_transforms_draw_after_the_geometric_block_only_when_on():
    x = _batch()
    geo = AugmentConfig(rotation=20, horizontal_flip=True)
    both = AugmentConfig(rotation=20, horizontal_flip=True, hsv_shift=(10, 20, 20))
    gen_a, gen_b = _gen(5), _gen(5)
    pa, pb = Augmenter(geo).draw(len(x), 10, 12, gen_a), Augmenter(both).draw(len(x), 10, 12, gen_b)
    assert pa.rotation is not None and pb.rotation is not None and pa.flip_h is not None
    assert torch.equal(pa.rotation, pb.rotation) and torch.equal(pa.flip_h, pb.flip_h)
    # Without colour transforms the generator moves by the one block it always did.
    ref = _gen(5)
    torch.rand((len(x), _DRAWS), generator=ref)
    assert torch.equal(gen_a.get_state(), ref.get_state())
    torch.rand((len(x), _COLOR_DRAWS), generator=ref)
    assert torch.equal(gen_b.get_state(), ref.get_state())


def test_colour_transforms_refuse_one_channel_batches():
    x = _batch((2, 1, 4, 4))
    for cfg in (AugmentConfig(rgb_shift=10), AugmentConfig(hsv_shift=(10, 0, 0)), AugmentConfig(grayscale=1)):
        with pytest.raises(ValueError, match=r"RGB"):
            Augmenter(cfg)(x, _gen(0))
    out = Augmenter(AugmentConfig(channel_shift=20, equalize=1.0))(x, _gen(0))  # fine on grey
    assert out.shape == x.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_color_config_keys_and_errors():
    cfg = from_dict(AugmentConfig, {"rgb_shift": [20, 10, 0], "hsv_shift": [20, 30, 20], "grayscale": 0.1,
                                    "equalize": 0.5, "channel_shift": 30})
    assert cfg.rgb_limits == (20.0, 10.0, 0.0) and cfg.colored and cfg.enabled and cfg.online
    assert sorted(cfg.needs_rgb) == ["grayscale", "hsv_shift", "rgb_shift"]
    assert not AugmentConfig(hsv_shift=(0, 0, 0)).enabled
    for kwargs, key in [({"channel_shift": 300}, "channel_shift"), ({"grayscale": 1.5}, "grayscale"),
                        ({"equalize": -0.1}, "equalize"), ({"rgb_shift": [1, 2]}, "rgb_shift"),
                        ({"hsv_shift": [200, 0, 0]}, "hsv_shift"), ({"offline_copies": -1}, "offline_copies"),
                        ({"offline_copies": 1}, "offline_copies")]:
        with pytest.raises(ConfigError, match=rf"'{key}':.* got"):
            from_dict(AugmentConfig, kwargs)
    with pytest.raises(ConfigError, match=r"did you mean 'hsv_shift'"):
        from_dict(AugmentConfig, {"hsv_shfit": [1, 1, 1]})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batch_matches_cpu_with_either_generator():
    cfg = AugmentConfig(rotation=10, channel_shift=20, rgb_shift=20, hsv_shift=(20, 30, 20), grayscale=0.3,
                        equalize=0.3)
    x = _batch((16, 3, 12, 12))
    cpu = Augmenter(cfg)(x, _gen(4))
    gpu = Augmenter(cfg)(x.cuda(), _gen(4))
    assert gpu.device.type == "cuda"
    # Equalisation bins to 256 levels: a value on a bin edge may land one level apart.
    assert torch.allclose(cpu, gpu.cpu(), atol=1.5 / 255)
    on_device = Augmenter(cfg)(x.cuda(), torch.Generator(device="cuda").manual_seed(4))
    assert on_device.shape == x.shape and float(on_device.min()) >= 0 and float(on_device.max()) <= 1
