"""Grad-CAM, feature maps, filters, activation maximisation and dead filters on registry models."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from medtransfer.errors import ConfigError, DataError
from medtransfer.explain import (
    BinaryLogitTarget,
    activation_maximization,
    cam_maps,
    conv_layers,
    dead_filter_share,
    feature_maps,
    first_layer_filters,
    last_conv_layer,
    overlay,
    save_grid,
    scale_tiles,
    to_tensor,
)
from medtransfer.models import create_model
from medtransfer.sigmoid_pair import use_sigmoid_pair

SIZE, SQUARE = 24, 6


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: single-threaded is faster


def _squares(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Noisy grey images; class 1 has a bright square at a random place."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.3, 0.08, (n, 1, SIZE, SIZE))
    y = np.arange(n) % 2
    corners = []
    for i in range(n):
        r, c = (int(v) for v in rng.integers(0, SIZE - SQUARE, 2))
        corners.append((r, c))
        if y[i]:
            x[i, 0, r : r + SQUARE, c : c + SQUARE] = 0.95
    return np.clip(x, 0, 1).astype(np.float32), y, corners


def _model(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model("alexnet_small", num_classes=1, in_chans=1, img_size=SIZE, base=8, dense=(16,))


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    """alexnet_small trained briefly to find the square (train accuracy ≥ 0.95)."""
    x, y, _ = _squares(160, seed=0)
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y).float()
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        model.train()
        for idx in torch.randperm(len(xs), generator=gen).split(32):
            loss = nn.functional.binary_cross_entropy_with_logits(model(xs[idx])[:, 0], ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            if ((model(xs)[:, 0] > 0).float() == ys).float().mean() >= 0.95:
                break
    return model


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_cam_highlights_the_planted_square(trained, method):
    x, y, corners = _squares(16, seed=1)
    pos = np.flatnonzero(y == 1)
    maps = cam_maps(trained, x[pos], method=method, target=1)
    assert maps.shape == (len(pos), SIZE, SIZE) and np.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    inside, outside = [], []
    for m, k in zip(maps, pos, strict=True):
        r, c = corners[k]
        mask = np.zeros_like(m, dtype=bool)
        mask[r : r + SQUARE, c : c + SQUARE] = True
        inside.append(m[mask].mean())
        outside.append(m[~mask].mean())
    assert np.mean(inside) > 2 * np.mean(outside)


def test_cam_targets_uint8_input_and_model_untouched(trained):
    x, _, _ = _squares(4, seed=2)
    as_uint8 = (x * 255).round().astype(np.uint8)
    relus = [m.inplace for m in trained.modules() if isinstance(m, nn.ReLU)]
    frozen = _model(seed=1).requires_grad_(False)  # as after transfer with frozen conv layers
    assert np.isfinite(cam_maps(frozen, as_uint8)).all()
    assert not any(p.requires_grad for p in frozen.parameters())
    predicted = cam_maps(trained, as_uint8)
    per_image = cam_maps(trained, as_uint8, target=[0, 1, 0, 1], method="gradcam++")
    assert predicted.shape == per_image.shape == (4, SIZE, SIZE)
    assert [m.inplace for m in trained.modules() if isinstance(m, nn.ReLU)] == relus
    with pytest.raises(ConfigError, match="'target'"):
        cam_maps(trained, as_uint8, target=[0, 1])
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        cam_maps(trained, as_uint8, target=3)
    with pytest.raises(ConfigError, match="'method'"):
        cam_maps(trained, as_uint8, method="scorecam")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'layer'.*Conv layers: features"):
        cam_maps(trained, as_uint8, layer="nope")


def test_binary_logit_target_signs():
    out = torch.tensor([[2.5]])
    assert BinaryLogitTarget(1)(out[0]).item() == 2.5
    assert BinaryLogitTarget(0)(out[0]).item() == -2.5
    with pytest.raises(ConfigError):
        BinaryLogitTarget(2)


def test_sigmoid_pair_cam_targets_the_raw_outputs_even_when_confident():
    torch.manual_seed(0)
    plain = create_model("alexnet_small", num_classes=2, in_chans=1, img_size=16, base=4, dense=(8,))
    with torch.no_grad():  # outputs of about ±30, where log σ(z)'s gradient all but vanishes
        plain.get_classifier().weight.mul_(300.0)
        plain.get_classifier().bias.copy_(torch.tensor([-30.0, 30.0]))
    pair = copy.deepcopy(plain)
    use_sigmoid_pair(pair)
    x = np.random.default_rng(0).integers(0, 256, (3, 1, 16, 16), dtype=np.uint8)
    expected = cam_maps(plain, x, target=[0, 1, 1])
    assert expected.max() > 0.5
    np.testing.assert_allclose(cam_maps(pair, x, target=[0, 1, 1]), expected, atol=1e-4)
    np.testing.assert_allclose(cam_maps(pair, x), cam_maps(plain, x), atol=1e-4)  # predicted: argmax


def test_multiclass_cam_and_overlay(tmp_path):
    model = create_model("alexnet_small", num_classes=3, in_chans=3, img_size=16, base=4, dense=(8,))
    x = np.random.default_rng(0).integers(0, 256, (2, 3, 16, 16), dtype=np.uint8)
    maps = cam_maps(model, x, target=2)
    assert maps.shape == (2, 16, 16) and np.isfinite(maps).all()
    over = overlay(x, maps)
    assert over.shape == (2, 16, 16, 3) and over.dtype == np.uint8
    path = save_grid(list(over), tmp_path / "grid.png", columns=2, scale=2)
    assert path.is_file()
    with pytest.raises(DataError, match="maps"):
        overlay(x, maps[:, :8])


def test_to_tensor_scales_and_validates():
    assert to_tensor(np.full((1, 1, 2, 2), 255, np.uint8)).max().item() == 1.0
    assert to_tensor(np.full((1, 1, 2, 2), 65535, np.uint16)).max().item() == 1.0
    normed = to_tensor(np.full((1, 1, 2, 2), 0.5, np.float32), ([0.5], [0.25]))
    assert normed.abs().max().item() == 0.0
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        to_tensor(np.full((1, 1, 2, 2), 3.0))
    with pytest.raises(DataError, match="N, C, H, W"):
        to_tensor(np.zeros((2, 2)))


def test_layers_feature_maps_and_first_filters(tmp_path):
    model = _model()
    names = [n for n, _ in conv_layers(model)]
    assert len(names) == 5 and last_conv_layer(model)[0] == names[-1]
    x, _, _ = _squares(3, seed=3)
    fm = feature_maps(model, x, names[0])
    assert fm.shape == (3, 8, SIZE, SIZE)
    filt = first_layer_filters(model)
    assert filt.shape == (8, 1, 3, 3) and filt.min() == 0.0 and filt.max() == 1.0
    tiles = scale_tiles(fm[0])
    assert len(tiles) == 8 and all(t.shape == (SIZE, SIZE) and 0 <= t.min() <= t.max() <= 1 for t in tiles)
    assert save_grid(tiles, tmp_path / "fm.png", columns=4, scale=2).is_file()
    assert save_grid(scale_tiles(filt[:, 0]), tmp_path / "filters.png", columns=4, scale=8).is_file()
    with pytest.raises(DataError, match="same size"):
        save_grid([tiles[0], filt[0, 0]], tmp_path / "bad.png", columns=2)
    with pytest.raises(ConfigError, match="no Conv2d"):
        last_conv_layer(nn.Sequential(nn.Linear(2, 2)))


def test_activation_maximization_raises_activation_and_is_seeded():
    model = _model()
    layer = conv_layers(model)[1][0]
    shape = (1, SIZE, SIZE)
    imgs = activation_maximization(model, layer, [0, 3], image_shape=shape, seed=5, steps=30, lr=0.1)
    again = activation_maximization(model, layer, [0, 3], image_shape=shape, seed=5, steps=30, lr=0.1)
    assert imgs.shape == (2, *shape) and np.array_equal(imgs, again)
    assert imgs.min() >= 0 and imgs.max() <= 1
    start = activation_maximization(model, layer, [0, 3], image_shape=shape, seed=5, steps=1, lr=1e-6)
    after = feature_maps(model, imgs, layer)
    before = feature_maps(model, start, layer)
    for i, f in enumerate([0, 3]):
        assert after[i, f].mean() > before[i, f].mean()
    with pytest.raises(ConfigError, match="'filters'"):
        activation_maximization(model, layer, [99], image_shape=shape, seed=0, steps=1)


def test_dead_filter_share_finds_a_killed_filter():
    model = _model()
    first = conv_layers(model)[0][1]
    with torch.no_grad():
        first.weight[2].zero_()
        first.bias[2] = -1.0  # channel 2 of the first block can never fire
    x, _, _ = _squares(8, seed=4)
    shares = dead_filter_share(model, x)
    name = conv_layers(model)[0][0]
    assert next(iter(shares)) == name
    assert shares[name] == pytest.approx(1 / 8)
    assert all(0.0 <= v <= 1.0 for v in shares.values())
