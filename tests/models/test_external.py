"""``timm:<arch>`` and ``torchvision:<arch>`` models: built by name with the head API, grey
policies, freezing, Grad-CAM's target layer, ``file:`` weights, and names, options and weights
checked before anything runs. Nothing here downloads (random init, files from tmp_path)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medtransfer.errors import ConfigError
from medtransfer.explain import cam_maps, last_conv_layer
from medtransfer.freezing import FreezeConfig, freeze, train_mode, weight_layers
from medtransfer.models import (
    ModelConfig,
    WeightsError,
    build_model,
    build_pretrained,
    check_model,
    create_model,
    model_info,
)
from medtransfer.models.chain import forward_chain, run_chain

NAMES = ["timm:resnet10t", "timm:mobilenetv3_small_050", "torchvision:resnet18",
         "torchvision:mobilenet_v3_small"]


def _seeded(name: str, **kw) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return create_model(name, **kw)


def test_timm_resnet18_for_grey_images_builds_and_trains_a_step():
    m = _seeded("timm:resnet18", num_classes=3, in_chans=1, img_size=32)
    assert m.conv1.in_channels == 1 and m.get_classifier().out_features == 3
    report = freeze(m, FreezeConfig(trainable_layers=3))
    assert report.frozen_params > 0 and report.trainable_params > 0
    before = {k: v.detach().clone() for k, v in m.named_parameters()}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    train_mode(m)
    loss = torch.nn.functional.cross_entropy(m(torch.rand(4, 1, 32, 32)), torch.tensor([0, 1, 2, 0]))
    assert math.isfinite(loss.item())
    loss.backward()
    opt.step()
    moved = {k for k, p in m.named_parameters() if not torch.equal(before[k], p)}
    assert moved and moved <= {k for k, p in m.named_parameters() if p.requires_grad}
    assert "fc.weight" in moved and "conv1.weight" not in moved


@pytest.mark.parametrize("name", NAMES)
def test_head_api_chain_and_grey_policies(name):
    m = _seeded(name, num_classes=4, in_chans=1, img_size=32).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        feats = m.forward_features(x)
        out = m.forward_head(feats)
        torch.testing.assert_close(out, m(x))
        assert out.shape == (2, 4)
        width = getattr(m, "head_hidden_size", m.num_features)  # timm: a head conv may widen it
        assert m.forward_head(feats, pre_logits=True).shape == (2, width)
        torch.testing.assert_close(run_chain(forward_chain(m), x), out, rtol=1e-4, atol=1e-5)
    m.reset_classifier(6)
    assert m.get_classifier().out_features == 6 and m(x).shape == (2, 6)
    assert model_info(name).family == name.split(":")[0]
    rep = build_model(ModelConfig(name=name, in_chans_policy="repeat"), num_classes=2, in_chans=1,
                      img_size=32).eval()
    with torch.no_grad():
        torch.testing.assert_close(rep(x), rep(x.repeat(1, 3, 1, 1)))
    summed = build_model(ModelConfig(name=name, in_chans_policy="sum"), num_classes=2, in_chans=1,
                         img_size=32)
    assert summed(x).shape == (2, 1)


@pytest.mark.parametrize("name", ["timm:mobilenetv3_small_050", "torchvision:resnet18"])
def test_freezing_by_named_blocks(name):
    m = create_model(name, num_classes=2, in_chans=1, img_size=32)
    head = "classifier" if name.startswith("timm") else "fc"
    report = freeze(m, FreezeConfig(trainable_blocks=(head,)))
    assert report.trainable == [head] and report.frozen_params > 0
    assert len(weight_layers(m)) > 3
    with pytest.raises(ConfigError, match="did you mean"):
        freeze(m, FreezeConfig(train_from=head + "x"))


def test_grad_cam_targets_the_last_conv_of_the_features():
    m = create_model("timm:mobilenetv3_small_050", num_classes=2, in_chans=1, img_size=32).eval()
    name, _ = last_conv_layer(m, torch.rand(1, 1, 32, 32))
    assert name.startswith("blocks.")  # not conv_head, which runs after global pooling
    images = np.random.default_rng(0).integers(0, 256, (2, 1, 32, 32), dtype=np.uint8)
    maps = cam_maps(m, images, target=[0, 1])
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all()
    tv = create_model("torchvision:resnet18", num_classes=2, in_chans=1, img_size=32).eval()
    assert last_conv_layer(tv, torch.rand(1, 1, 32, 32))[0] == "layer4.1.conv2"


@pytest.mark.parametrize(("name", "policy"), [("timm:resnet10t", "sum"),
                                              ("torchvision:resnet18", "repeat")])
def test_file_weights_load_into_the_same_architecture(tmp_path, name, policy):
    source = _seeded(name, num_classes=5, in_chans=3, img_size=32)
    path = tmp_path / "source.pt"
    torch.save(source.state_dict(), path)
    cfg = ModelConfig(name=name, weights=f"file:{path}", in_chans_policy=policy)
    built = build_pretrained(cfg, num_classes=2, in_chans=1, img_size=32)
    got, src = built.model.state_dict(), source.state_dict()
    head = {f"{n}.{k}" for n, mod in built.model.named_modules() if mod is built.model.get_classifier()
            for k in mod.state_dict()}
    assert set(built.report.reset) == head
    conv = "conv1.0.weight" if name.startswith("timm") else "conv1.weight"
    if policy == "sum":
        assert built.report.adapted == [conv]
        torch.testing.assert_close(got[conv], src[conv].sum(dim=1, keepdim=True))
    for k in built.report.loaded:
        assert torch.equal(got[k], src[k]), k


def test_imagenet_offline_says_which_file_to_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name in ("timm:resnet10t", "torchvision:resnet18"):
        cfg = ModelConfig(name=name, weights="imagenet", in_chans_policy="sum")
        check_model(cfg, hw=(32, 32), in_chans=1)  # the spec itself is fine
        with pytest.raises(WeightsError, match="downloads are off.*file:"):
            build_pretrained(cfg, num_classes=2, in_chans=1, img_size=32, download=False)


@pytest.mark.parametrize(("cfg", "match"), [
    (ModelConfig(name="timm:nonexistent"), "timm has no architecture 'nonexistent'; closest: timm:"),
    (ModelConfig(name="timm:convnext_tinyy"), "closest: timm:convnext_tiny"),
    (ModelConfig(name="torchvision:resnet17"), "closest: torchvision:resnet18"),
    (ModelConfig(name="keras:resnet18"), "timm:local-dir:PATH, timm:hf-hub:ORG/NAME or torchvision:"),
    (ModelConfig(name="convnext_tiny"), "timm:convnext_tiny or torchvision:convnext_tiny"),
    (ModelConfig(name="timm:resnet18.nope"), "tags of resnet18: resnet18.a1_in1k"),
    (ModelConfig(name="timm:resnet10t", options={"depth": 3}), "does not take option.*depth.*drop_path_rate"),
    (ModelConfig(name="timm:resnet10t", options={"num_classes": 3}), "set by medtransfer"),
    (ModelConfig(name="timm:resnet10t", batch_norm=True), "has no batch_norm option"),
    (ModelConfig(name="torchvision:resnet18", dense_dropout=0.2), "has no dropout option"),
    (ModelConfig(name="torchvision:inception_v3"), "'preprocess.size'.*cannot take 1-channel images of 32"),
    (ModelConfig(name="timm:botnet50ts_256", weights="imagenet"), "no pretrained weights"),
])
def test_names_options_sizes_and_weights_are_checked_without_building(cfg, match):
    with pytest.raises(ConfigError, match=match):
        check_model(cfg, hw=(32, 32), in_chans=1)


def test_options_reach_the_library():
    m = create_model("timm:resnet10t", num_classes=2, in_chans=1, img_size=32, drop_path_rate=0.1)
    assert m.external_kwargs == {"drop_path_rate": 0.1}
    d = build_model(ModelConfig(name="timm:resnet10t", dense_dropout=0.3), num_classes=2, in_chans=1,
                    img_size=32)
    assert d.drop_rate == 0.3
    vit = create_model("timm:vit_tiny_patch16_224", num_classes=2, in_chans=1, img_size=32)
    assert vit(torch.rand(1, 1, 32, 32)).shape == (1, 2)  # built for the study's image size
    drop = build_model(ModelConfig(name="torchvision:mobilenet_v3_small", dense_dropout=0.3),
                       num_classes=2, in_chans=1, img_size=32)
    assert any(isinstance(mod, torch.nn.Dropout) and mod.p == 0.3 for mod in drop.modules())
