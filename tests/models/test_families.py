"""Architecture details of the VGG and ResNet families and the grayscale input policies."""

import pytest
import torch
from torch import nn

from medtransfer.errors import ConfigError
from medtransfer.models import ModelConfig, build_model, create_model
from medtransfer.models.vgg import cfgs, scaled


def _convs(m):
    return [c.out_channels for c in m.modules() if isinstance(c, nn.Conv2d)]


def test_vgg16_is_configuration_d_and_batch_norm_adds_bn_after_every_conv():
    m = create_model("vgg16", num_classes=2, in_chans=3, img_size=32)
    assert _convs(m) == [v for v in cfgs["D"] if v != "M"]
    assert [lin.out_features for lin in m.classifier if isinstance(lin, nn.Linear)] == [4096, 4096, 2]
    bn = create_model("vgg16", num_classes=2, in_chans=3, img_size=32, batch_norm=True)
    convs = [i for i, mod in enumerate(bn.features) if isinstance(mod, nn.Conv2d)]
    assert all(isinstance(bn.features[i + 1], nn.BatchNorm2d) for i in convs) and len(convs) == 13


def test_vgg_small_scales_widths_from_base_with_three_dense_64():
    m = create_model("vgg_small", num_classes=1, in_chans=1, img_size=64, base=4)
    assert _convs(m) == [v for v in scaled(cfgs["D"], 4) if v != "M"]
    assert _convs(m)[:2] == [4, 4] and _convs(m)[-1] == 32
    dense = [lin.out_features for lin in m.classifier if isinstance(lin, nn.Linear)]
    assert dense == [64, 64, 64, 1]
    assert [d.p for d in m.classifier if isinstance(d, nn.Dropout)] == [0.4, 0.4, 0.4]
    # flatten (no pooling): 64 px / 2**5 = 2 → 32 channels × 2 × 2
    assert m.classifier[0].in_features == 32 * 2 * 2


def test_dense_dropout_flag_reaches_every_family():
    for name in ("vgg16", "resnet18", "densenet121", "mobilenet_v2", "efficientnet_b0"):
        m = build_model(ModelConfig(name=name, dense_dropout=0.3), num_classes=2, in_chans=3, img_size=32)
        rates = [d.p for d in m.modules() if isinstance(d, nn.Dropout)]
        assert (0.3 in rates) or getattr(m, "drop_rate", None) == 0.3, name
    with pytest.raises(ConfigError, match="'model.batch_norm': model 'resnet18' has no batch_norm option"):
        build_model(ModelConfig(name="resnet18", batch_norm=True), num_classes=2, in_chans=3, img_size=32)


@pytest.mark.parametrize(("depth", "n"), [(8, 1), (20, 3)])
def test_resnet_cifar_depth_is_6n_plus_2(depth, n):
    m = create_model("resnet_cifar", num_classes=2, in_chans=1, img_size=32, depth=depth, base=4)
    for stage in (m.layer1, m.layer2, m.layer3):
        assert len(stage) == n
    main_path = [c for name, c in m.named_modules() if isinstance(c, nn.Conv2d) and "downsample" not in name]
    assert len(main_path) + 1 == depth  # convs + the output layer
    assert m(torch.rand(2, 1, 32, 32)).shape == (2, 2)


def test_resnet_cifar_rejects_other_depths():
    with pytest.raises(ConfigError, match="'model.options.depth': got 21; allowed: 6n \\+ 2"):
        create_model("resnet_cifar", num_classes=2, depth=21)


def test_repeat_policy_feeds_grey_images_to_a_three_channel_model():
    cfg = ModelConfig(name="resnet18", in_chans_policy="repeat")
    m = build_model(cfg, num_classes=2, in_chans=1, img_size=32).eval()
    assert m.conv1.in_channels == 3 and m.in_chans_policy == "repeat"
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(x.repeat(1, 3, 1, 1)))
        torch.testing.assert_close(m.forward_features(x), m.forward_features(x.repeat(1, 3, 1, 1)))
    summed = build_model(ModelConfig(name="resnet18", in_chans_policy="sum"), num_classes=2, in_chans=1,
                         img_size=32)
    assert summed.conv1.in_channels == 1
