import pytest
import torch
from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.models import ModelConfig, build_model, create_model, list_models
from medtransfer.models.alexnet import Conv2dSame


def test_registry_lists_both_alexnets():
    assert {"alexnet_krizhevsky", "alexnet_small"} <= set(list_models())


def test_unknown_model_suggests_closest():
    with pytest.raises(ConfigError, match="did you mean 'alexnet_krizhevsky'"):
        create_model("alexnet_krizhevksy", num_classes=2)


def test_unknown_option_names_it():
    with pytest.raises(ConfigError, match="does not take option.*widht"):
        create_model("alexnet_small", num_classes=2, widht=3)


def test_seed000_shapes_match_keras_same_padding():
    m = create_model("alexnet_krizhevsky", num_classes=1, in_chans=1, img_size=256)
    feats = m.forward_features(torch.zeros(1, 1, 256, 256))
    # Keras: 256 -conv/4-> 64 -pool-> 32 -pool-> 16 -pool-> 8, 256 channels
    assert feats.shape == (1, 256, 8, 8)
    linears = [mod for mod in m.modules() if isinstance(mod, nn.Linear)]
    assert [lin.out_features for lin in linears] == [4096, 4096, 1000, 1]
    assert linears[0].in_features == 256 * 8 * 8
    assert [c.out_channels for c in m.modules() if isinstance(c, nn.Conv2d)] == [96, 256, 384, 384, 256]


def test_conv2d_same_matches_tensorflow_output_size():
    conv = Conv2dSame(1, 2, 11, 4)
    for size in (224, 227, 128, 97):
        assert conv(torch.zeros(1, 1, size, size)).shape[-1] == -(-size // 4)


def test_seed002_widths_from_base():
    m = create_model("alexnet_small", num_classes=1, in_chans=1, img_size=128, base=32)
    assert [c.out_channels for c in m.modules() if isinstance(c, nn.Conv2d)] == [32, 64, 128, 128, 64]
    assert [lin.out_features for lin in m.modules() if isinstance(lin, nn.Linear)] == [64, 64, 1]


def test_regularization_flags_insert_layers_where_the_seeds_put_them():
    bn = create_model("alexnet_krizhevsky", num_classes=1, img_size=64, batch_norm=True)
    blocks = list(bn.features)
    for block in blocks:  # conv → BN → ReLU
        assert isinstance(block[0], nn.Conv2d) and isinstance(block[1], nn.BatchNorm2d)
        assert isinstance(block[2], nn.ReLU)
    dr = create_model("alexnet_krizhevsky", num_classes=1, img_size=64, conv_dropout=0.3)
    with_dropout = [any(isinstance(x, nn.Dropout) for x in b) for b in dr.features]
    assert with_dropout == [False, True, True, True, True]  # seed 000: conv 2–5
    sp = create_model("alexnet_small", num_classes=1, img_size=64, spatial_dropout=0.1)
    assert all(any(isinstance(x, nn.Dropout2d) for x in b) for b in sp.features)
    dd = create_model("alexnet_small", num_classes=1, img_size=64, dense_dropout=0.4)
    assert sum(isinstance(x, nn.Dropout) for x in dd.pre_logits) == 2


def test_build_model_single_logit_for_binary_and_pair_on_request():
    assert build_model(ModelConfig(), num_classes=2, in_chans=1, img_size=64).classifier.out_features == 1
    cfg = ModelConfig(binary_output="pair")
    assert build_model(cfg, num_classes=2, in_chans=1, img_size=64).classifier.out_features == 2
    assert build_model(ModelConfig(), num_classes=5, in_chans=3, img_size=64).classifier.out_features == 5


def test_bad_dropout_rate_is_named():
    with pytest.raises(ConfigError, match="model.dense_dropout"):
        ModelConfig(dense_dropout=1.5)


def test_head_api_and_reset_classifier():
    m = create_model("alexnet_small", num_classes=1, img_size=32)
    x = torch.rand(2, 1, 32, 32)
    assert m.forward_head(m.forward_features(x), pre_logits=True).shape == (2, 64)
    m.reset_classifier(3)
    assert m(x).shape == (2, 3)
    assert m.get_classifier().out_features == 3
