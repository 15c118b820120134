"""conv_dropout on block-built architectures: dropout after every stage, where seed 004 puts it,
without renaming a pretrained tensor, seen by train/eval mode and by the forward chain."""

import pytest
import torch
from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.freezing import FreezeConfig, freeze, train_mode
from medtransfer.models import ModelConfig, build_model, create_model
from medtransfer.models.chain import forward_chain, run_chain
from medtransfer.strategies.cached import plan_cache

SITES = {
    "resnet18": ["relu", "layer1.1", "layer2.1", "layer3.1", "layer4.1"],
    "densenet121": ["features.relu0", *(f"features.denseblock{i}" for i in range(1, 5))],
    "vgg_small": ["features.3", "features.8", "features.15", "features.22", "features.29"],
    "mobilenet_v2": ["features.1", "features.3", "features.6", "features.13", "features.18.2"],
    "efficientnet_b0": ["blocks.0.0", "blocks.1.1", "blocks.2.1", "blocks.4.2", "blocks.6.0"],
}


@pytest.mark.parametrize("name", sorted(SITES))
def test_conv_dropout_follows_every_stage_and_keeps_the_state_dict(name):
    size = 32
    torch.manual_seed(0)
    plain = create_model(name, num_classes=2, in_chans=1, img_size=size)
    m = build_model(ModelConfig(name=name, conv_dropout=0.3), num_classes=2, in_chans=1, img_size=size)
    assert list(m.state_dict()) == list(plain.state_dict())  # pretrained files load as they are
    assert [k.replace("_", ".") for k in m.block_dropout] == [s.replace("_", ".") for s in SITES[name]]
    assert {d.p for d in m.block_dropout.values()} == {0.3}
    x = torch.rand(2, 1, size, size)
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m(x))  # eval: no dropout
    m.train()
    with torch.no_grad():
        torch.manual_seed(1)
        first = m(x)
        torch.manual_seed(1)
        chained = run_chain(forward_chain(m), x)  # the chain applies the same dropout
        second = m(x)
    torch.testing.assert_close(first, chained)
    assert not torch.allclose(first, second)


def test_frozen_stage_dropout_stops_activation_caching():
    m = build_model(ModelConfig(name="resnet_cifar", conv_dropout=0.2, options={"depth": 8, "base": 4}),
                    num_classes=2, in_chans=1, img_size=16)
    freeze(m, FreezeConfig(trainable_layers=1))
    plan = plan_cache(m, (torch.rand(4, 1, 16, 16) * 255).to(torch.uint8).numpy(), augment=None,
                      input_norm=None, train_mode=train_mode)
    assert plan.split is None and "dropout 'block_dropout.layer1_0'" in plan.reason


def test_models_without_known_stages_refuse_conv_dropout():
    with pytest.raises(ConfigError, match="'model.conv_dropout': model 'torchvision:resnet18' does not say"):
        build_model(ModelConfig(name="torchvision:resnet18", conv_dropout=0.3), num_classes=2,
                    in_chans=1, img_size=32)
    m = build_model(ModelConfig(name="timm:resnet18", conv_dropout=0.3), num_classes=2, in_chans=1,
                    img_size=32)
    assert isinstance(m.block_dropout["layer4_1"], nn.Dropout)  # timm: its feature_info stages
