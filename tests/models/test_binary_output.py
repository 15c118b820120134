"""``model.binary_output``: single (one sigmoid logit), pair (two softmax logits) and
sigmoid_pair (two independent sigmoids) build the output layer they name, for every kind of
architecture; a bad value or a sigmoid pair for more than two classes is an error naming the key."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medtransfer.config import from_dict
from medtransfer.errors import ConfigError
from medtransfer.models import ModelConfig, build_model
from medtransfer.sigmoid_pair import SigmoidPairLinear
from medtransfer.study.units import spec_key

ARCHS = [
    {"name": "alexnet_small", "options": {"base": 4, "dense": [8]}},
    {"name": "vgg_small", "options": {"base": 4, "dense": [8]}},
    {"name": "resnet_cifar"},
    {"name": "alexnet_small", "options": {"base": 4}, "head": {"hidden": [8], "dropout": 0.5}},
    {"name": "timm:resnet10t"},
    {"name": "torchvision:resnet18"},
]


def _build(raw: dict, binary_output: str, num_classes: int = 2) -> nn.Module:
    cfg = from_dict(ModelConfig, {**raw, "binary_output": binary_output})
    torch.manual_seed(0)
    return build_model(cfg, num_classes=num_classes, in_chans=1, img_size=32)


@pytest.mark.parametrize("raw", ARCHS, ids=lambda r: r["name"] + ("+head" if "head" in r else ""))
def test_sigmoid_pair_is_the_pair_model_with_a_sigmoid_output_layer(raw):
    pair, sig = _build(raw, "pair"), _build(raw, "sigmoid_pair")
    assert isinstance(sig.get_classifier(), SigmoidPairLinear)
    assert not isinstance(pair.get_classifier(), SigmoidPairLinear)
    assert list(sig.state_dict()) == list(pair.state_dict())  # checkpoints and weights load alike
    sig.load_state_dict(pair.state_dict())
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(sig.eval()(x), nn.functional.logsigmoid(pair.eval()(x)))
    assert _build(raw, "single").get_classifier().out_features == 1


def test_a_bad_value_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match="'model.binary_output': got 'sigmoid'; did you mean "
                                          "'sigmoid_pair'.*'single', 'pair', 'sigmoid_pair'"):
        from_dict(ModelConfig, {"binary_output": "sigmoid"}, "model")
    with pytest.raises(ConfigError, match="'model.binary_output': got 'two'.*single, pair, sigmoid_pair"):
        ModelConfig(binary_output="two")  # type: ignore[arg-type]


def test_sigmoid_pair_needs_two_classes():
    with pytest.raises(ConfigError, match="'model.binary_output': got 'sigmoid_pair' for 3 classes"):
        _build(ARCHS[0], "sigmoid_pair", num_classes=3)
    assert _build(ARCHS[0], "pair", num_classes=3).get_classifier().out_features == 3


def test_the_choice_enters_the_unit_key_and_the_default_does_not():
    assert spec_key(ModelConfig(binary_output="sigmoid_pair")) == {"binary_output": "sigmoid_pair"}
    assert spec_key(ModelConfig(binary_output="pair")) == {"binary_output": "pair"}
    assert spec_key(ModelConfig()) == {}
