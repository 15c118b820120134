"""model.head: a classification head as data, for every family, with the head API, the forward
chain, freezing and weight loading seeing its dense layers."""

import pytest
import torch
from torch import nn

from medtransfer.config import from_dict
from medtransfer.errors import ConfigError, DataError
from medtransfer.explain import last_conv_layer
from medtransfer.freezing import FreezeConfig, freeze, weight_layers
from medtransfer.models import ModelConfig, build_model, check_model, create_model
from medtransfer.models.chain import forward_chain, run_chain
from medtransfer.models.head import HeadConfig
from medtransfer.models.loading import HeadPolicy, load_source_weights

SEED001 = {"pool": "avg", "pool_size": 4, "hidden": [64], "dropout": 0.5, "init": "keras"}
SEED004 = {"hidden": [64]}
FAMILIES = ["resnet18", "resnet_cifar", "densenet121", "mobilenet_v2", "vgg_small",
            "alexnet_small", "efficientnet_b0", "timm:resnet18", "torchvision:resnet18"]


def _build(name, head, size=32, in_chans=1, num_classes=2, **kw):
    return build_model(ModelConfig(name=name, head=head, **kw), num_classes=num_classes,
                       in_chans=in_chans, img_size=size)


@pytest.mark.parametrize("name", FAMILIES)
def test_head_replaces_the_families_own_and_keeps_the_head_api(name):
    torch.manual_seed(0)
    m = _build(name, {"hidden": [16, 8], "dropout": 0.25}).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        out = m(x)
        pre = m.forward_head(m.forward_features(x), pre_logits=True)
        torch.testing.assert_close(run_chain(forward_chain(m), x), out)  # cached strategies cut here
    assert out.shape == (2, 1) and pre.shape == (2, 8)
    assert m.get_classifier() is m.head.fc and m.head.fc.in_features == 8
    # pre_logits = the output layer's input
    torch.testing.assert_close(m.head.fc(pre), out)
    assert [d.p for d in m.head.modules() if isinstance(d, nn.Dropout)] == [0.25, 0.25]
    # the head's dense layers are the model's last weight layers, in forward order
    assert [n for n, _ in weight_layers(m)][-3:] == ["head.pre_logits.0", "head.pre_logits.3", "head.fc"]
    m.reset_classifier(5)
    assert m(x).shape == (2, 5) and m.head.pre_logits[0].out_features == 16
    assert m.replaced_head_keys  # the family's own output layer is gone from the state dict
    assert not set(m.replaced_head_keys) & set(m.state_dict())
    plain = build_model(ModelConfig(name=name), num_classes=2, in_chans=1, img_size=32).eval()
    assert last_conv_layer(m, x)[0] == last_conv_layer(plain, x)[0]  # Grad-CAM's target layer


def test_seed001_head_is_avgpool4_flatten_dense64_relu_dropout_dense():
    m = _build("densenet121", SEED001, size=224, in_chans=3)
    head = m.head
    assert isinstance(head.pool, nn.AvgPool2d) and head.pool.kernel_size == 4 and head.pool.stride == 4
    # 224 px → 7×7 map of 1024 → one 4×4 window (valid padding) → 1024 features
    dense, act, drop = head.pre_logits
    assert (dense.in_features, dense.out_features, type(act), drop.p) == (1024, 64, nn.ReLU, 0.5)
    assert torch.count_nonzero(dense.bias) == 0  # Keras init: zero biases
    seed004 = _build("resnet50", SEED004, size=64, in_chans=3).head
    assert isinstance(seed004.pool, nn.AdaptiveAvgPool2d)
    assert [type(x) for x in seed004.pre_logits] == [nn.Linear, nn.ReLU, nn.Dropout]
    assert seed004.pre_logits[0].in_features == 2048


def test_pooling_choices_give_their_widths():
    assert _build("resnet_cifar", {"pool": "max"}).head.in_features == 64
    # resnet_cifar (base 16) at 32 px: 64 channels × 8 × 8
    assert _build("resnet_cifar", {"pool": "flatten"}).head.in_features == 64 * 8 * 8
    assert _build("resnet_cifar", {"pool": "max", "pool_size": 3}).head.in_features == 64 * 2 * 2
    assert isinstance(_build("resnet_cifar", {"pool": "max"}).head.pool, nn.AdaptiveMaxPool2d)


def test_head_config_errors_name_the_key_and_the_allowed_values():
    with pytest.raises(ConfigError, match=r"unknown key 'hiden' in 'model.head'; did you mean 'hidden'"):
        from_dict(ModelConfig, {"head": {"hiden": [64]}}, "model")
    with pytest.raises(ConfigError, match=r"'model.head.pool': got 'mean'.*'avg', 'max', 'flatten'"):
        from_dict(ModelConfig, {"head": {"pool": "mean"}}, "model")
    with pytest.raises(ConfigError, match=r"'model.head.dropout': got 1.5"):
        HeadConfig(dropout=1.5)
    with pytest.raises(ConfigError, match=r"'model.head.hidden': got \[64, 0\]"):
        HeadConfig(hidden=(64, 0))
    with pytest.raises(ConfigError, match="'model.head.pool_size'.*'flatten'"):
        HeadConfig(pool="flatten", pool_size=2)
    with pytest.raises(ConfigError, match="'model.dense_dropout': got 0.2 with model.head"):
        ModelConfig(name="resnet18", dense_dropout=0.2, head={})


def test_model_check_on_the_meta_device_rejects_heads_the_features_cannot_take():
    with pytest.raises(ConfigError, match=r"'model.head.pool_size': got 4, larger than the 1×1 "
                                          r"feature map of 'densenet121' at 32 px"):
        check_model(ModelConfig(name="densenet121", head={"pool_size": 4}), hw=(32, 32), in_chans=1)
    with pytest.raises(ConfigError, match="'torchvision:resnet18' pools inside its own forward"):
        check_model(ModelConfig(name="torchvision:resnet18", head={"pool": "max"}), hw=(32, 32), in_chans=1)
    with pytest.raises(ConfigError, match="not a \\(channels, height, width\\) map"):
        check_model(ModelConfig(name="timm:vit_tiny_patch16_224", head={}), hw=(224, 224), in_chans=3)


def test_freezing_sees_the_heads_dense_layers():
    m = _build("resnet_cifar", {"hidden": [16]}, options={"depth": 8, "base": 4})
    freeze(m, FreezeConfig(trainable_layers=2))
    assert [n for n, p in m.named_parameters() if p.requires_grad] == [
        "head.pre_logits.0.weight", "head.pre_logits.0.bias", "head.fc.weight", "head.fc.bias"]
    freeze(m, FreezeConfig(trainable_blocks=("head",)))
    assert all(p.requires_grad == n.startswith("head.") for n, p in m.named_parameters())


def test_loading_drops_the_sources_own_head_and_keeps_or_starts_the_hidden_layers():
    torch.manual_seed(0)
    plain = create_model("resnet_cifar", num_classes=3, depth=8, base=4, img_size=32)
    headed = _build("resnet_cifar", {"hidden": [16]}, options={"depth": 8, "base": 4})
    before = headed.head.pre_logits[0].weight.clone()
    report = load_source_weights(headed, plain.state_dict())
    assert set(report.dropped) == {"fc.weight", "fc.bias"}
    assert set(report.reset) == {"head.pre_logits.0.weight", "head.pre_logits.0.bias",
                                 "head.fc.weight", "head.fc.bias"}
    assert any("hidden layers start fresh" in m for m in report.messages)
    torch.testing.assert_close(headed.head.pre_logits[0].weight, before)
    torch.testing.assert_close(headed.conv1.weight, plain.conv1.weight)
    # from a source with the same head (a pretraining): the hidden layer loads, the output layer
    # is reset for a different class count
    target = _build("resnet_cifar", {"hidden": [16]}, num_classes=4, options={"depth": 8, "base": 4})
    report = load_source_weights(target, headed.state_dict())
    torch.testing.assert_close(target.head.pre_logits[0].weight, headed.head.pre_logits[0].weight)
    assert set(report.reset) == {"head.fc.weight", "head.fc.bias"}
    with pytest.raises(DataError, match="no tensors for the output layer of model.head"):
        load_source_weights(_build("resnet_cifar", {"hidden": [16]}, options={"depth": 8, "base": 4}),
                            plain.state_dict(), head=HeadPolicy.KEEP)
    other = _build("resnet_cifar", {"hidden": [32]}, options={"depth": 8, "base": 4})
    with pytest.raises(DataError, match="head.pre_logits.0.weight"):
        load_source_weights(other, headed.state_dict())
