"""A Vision Transformer through what strategies do to a model: "the last N layers" are its last
transformer blocks, the frozen blocks' activations are cached (and the cached path equals the full
one), features come from the class token or the mean of the patch tokens, Grad-CAM lays the tokens
back on the patch grid, and layer-wise learning-rate decay groups it by block."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medtransfer.errors import ConfigError
from medtransfer.explain import cam_layer, cam_maps, token_grid
from medtransfer.freezing import FreezeConfig, freeze, layer_units, train_mode, transformer_blocks
from medtransfer.models import create_model
from medtransfer.strategies import CacheConfig, Stage, TransferData, plan_cache, train_stage
from medtransfer.strategies.features import layer_features
from medtransfer.train import OptimizerConfig, TrainConfig, TrainEnv
from medtransfer.train.optim import build_optimizer, layer_decay_groups

VIT = {"patch_size": 4, "depth": 3, "embed_dim": 16, "num_heads": 2}


def _vit(seed: int = 0, **kw) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model("timm:vit_tiny_patch16_224", num_classes=1, in_chans=1, img_size=16,
                            **{**VIT, **kw})


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2)
    x = np.clip(rng.normal(90 + 70 * y[:, None, None, None], 40, (n, 1, 16, 16)), 0, 255)
    return x.astype(np.uint8), y.astype(np.int64)


def test_the_last_layers_of_a_vit_are_its_last_blocks():
    model = _vit()
    assert transformer_blocks(model) == ["blocks.0", "blocks.1", "blocks.2"]
    units = ["patch_embed.proj", "blocks.0", "blocks.1", "blocks.2", "head"]
    assert [n for n, _ in layer_units(model)] == units
    report = freeze(model, FreezeConfig(trainable_layers=3))
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n.split(".")[0] + "." + n.split(".")[1] for n in trains if n.startswith("blocks.")} == \
        {"blocks.1", "blocks.2"}
    assert {"norm.weight", "head.weight"} <= trains and not {"cls_token", "pos_embed"} & trains
    assert report.frozen_params > 0
    freeze(model, FreezeConfig(trainable_layers=1))  # LP-FT's head stage: the output layer only
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}
    with pytest.raises(ConfigError, match=r"only 5 conv/linear layers \(a transformer block counting"):
        freeze(model, FreezeConfig(trainable_layers=6))


def test_frozen_blocks_are_cached_and_the_cached_path_equals_the_full_path(tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=8, progress=False, optimizer=OptimizerConfig(lr=3e-3))
    results, models = [], []
    for cache in (False, True):
        model = _vit()
        data = TransferData(_data(24, 1), _data(8, 2))
        env = TrainEnv(7, tmp_path / str(cache), num_classes=2, input_norm=((0.5,), (0.5,)))
        stage = Stage("s", FreezeConfig(trainable_layers=2), cfg, CacheConfig(enabled=cache))
        results.append(train_stage(stage, model, data, env))
        models.append(model)
    full, cached = results
    assert (full.path, cached.path) == ("full", "cached")
    assert "frozen prefix (3 steps, up to 'blocks.2')" in cached.reason
    for a, b in zip(full.fit.history, cached.fit.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    for (k, a), (_, b) in zip(models[0].state_dict().items(), models[1].state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=k)
    # the class token is part of the frozen prefix: training it rules the cache out
    model = _vit()
    freeze(model, FreezeConfig(trainable_layers=2))
    model.cls_token.requires_grad_(True)
    plan = plan_cache(model, _data(2, 3)[0], augment=None, input_norm=None, train_mode=train_mode)
    assert plan.split is None and "first step 'embed' trains" in plan.reason


def test_features_from_the_class_token_or_the_mean_of_the_patch_tokens():
    model = _vit().eval()
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        tokens = model.forward_features(x)  # (2, 1 + 16, 16): class token first
        assert torch.equal(layer_features(model, "pooled", "cls")(x), tokens[:, 0])
        assert torch.allclose(layer_features(model, "pooled", "mean")(x), tokens[:, 1:].mean(1))
        assert torch.allclose(layer_features(model, "pooled", "avg")(x), tokens[:, 1:].mean(1))
        assert layer_features(model, "blocks.1", "cls")(x).shape == (2, 16)
        # pre_logits: the model's own pooling (its class token, through fc_norm)
        assert torch.allclose(layer_features(model, "pre_logits", "avg")(x), tokens[:, 0])
    cnn = create_model("timm:resnet10t", num_classes=2, in_chans=1, img_size=16)
    with pytest.raises(ConfigError, match="'strategy.pool': cls takes a transformer's class token"):
        layer_features(cnn, "pooled", "cls")(x)


def test_grad_cam_of_a_vit_maps_its_patch_tokens():
    model = _vit()
    assert cam_layer(model)[0] == "blocks.2.norm1"
    images = _data(3, 4)[0]
    maps = cam_maps(model, images, input_norm=((0.5,), (0.5,)))
    assert maps.shape == (3, 16, 16) and np.isfinite(maps).all() and maps.max() > 0
    assert len(np.unique(np.round(maps[0], 4))) > 1  # a map over the 4×4 patch grid, not a constant


def test_grad_cam_of_a_swin_turns_its_channels_last_blocks_to_maps():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_model("timm:swin_tiny_patch4_window7_224", num_classes=1, in_chans=1, img_size=32,
                             window_size=4, embed_dim=8, depths=(1, 1), num_heads=(1, 1)).eval()
    name, layer = cam_layer(model)
    assert name == "layers.1.blocks.0.norm1"
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, o: seen.append(o))
    model(torch.zeros(2, 1, 32, 32))
    handle.remove()
    assert seen[0].shape == (2, 4, 4, 16)  # Swin's blocks run channels last: (N, h, w, D)
    assert token_grid(model)(seen[0]).shape == (2, 16, 4, 4)  # what Grad-CAM weighs: D channels
    images = np.random.default_rng(0).random((3, 1, 32, 32)).astype(np.float32)
    maps = cam_maps(model, images)
    assert maps.shape == (3, 32, 32) and np.isfinite(maps).all()


def test_layer_decay_scales_the_learning_rate_per_block():
    model = _vit()
    cfg = OptimizerConfig(name="adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    groups = layer_decay_groups(model, cfg)
    lr = {id(p): g["lr"] for g in groups for p in g["params"]}
    # timm's grouping: stem 0, blocks 1..3, final norm 4, head (not matched) the top layer 4
    assert lr[id(model.head.weight)] == pytest.approx(1e-3)
    assert lr[id(model.blocks[2].mlp.fc1.weight)] == pytest.approx(1e-3 * 0.5)
    assert lr[id(model.blocks[0].attn.qkv.weight)] == pytest.approx(1e-3 * 0.5**3)
    assert lr[id(model.patch_embed.proj.weight)] == pytest.approx(1e-3 * 0.5**4)
    assert all(g["weight_decay"] == 0.05 for g in groups)
    freeze(model, FreezeConfig(trainable_layers=2))
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(trainable, cfg, model=model)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(trainable)
    plain = create_model("alexnet_small", num_classes=2, in_chans=1, img_size=32, base=4)
    with pytest.raises(ConfigError, match="'optimizer.layer_decay': model .* cannot be grouped"):
        build_optimizer(list(plain.parameters()), cfg, model=plain)
    with pytest.raises(ConfigError, match="'optimizer.layer_decay'"):
        OptimizerConfig(layer_decay=1.5)
