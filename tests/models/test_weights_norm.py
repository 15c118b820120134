"""model.weights_norm: the normalisation a file: state dict expects (it carries none)."""

import pytest
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from medtransfer.errors import ConfigError
from medtransfer.models import create_model
from medtransfer.models.config import ModelConfig
from medtransfer.models.pretrained import build_pretrained


@pytest.fixture
def state_file(tmp_path):
    torch.manual_seed(0)
    model = create_model("alexnet_seed002", num_classes=1, in_chans=3, img_size=32, base=4)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    return path


def _build(weights, norm, chans=3):
    cfg = ModelConfig(name="alexnet_seed002", options={"base": 4}, weights=weights,
                      weights_norm=norm)
    return build_pretrained(cfg, num_classes=2, in_chans=chans, img_size=32)


def test_a_file_state_dict_carries_no_normalisation_unless_named(state_file):
    assert _build(f"file:{state_file}", None).input_norm is None
    built = _build(f"file:{state_file}", "imagenet")
    assert built.input_norm == (tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD))
    assert built.weights is not None and built.weights.path == state_file


def test_inception_normalisation_for_grey_images_averages_the_channels(state_file):
    cfg = ModelConfig(name="alexnet_seed002", options={"base": 4}, weights=f"file:{state_file}",
                      weights_norm="inception", in_chans_policy="sum")
    built = build_pretrained(cfg, num_classes=2, in_chans=1, img_size=32)
    assert built.input_norm == ((0.5,), (0.5,))


def test_weights_norm_is_a_known_name_and_leaves_random_init_alone():
    assert build_pretrained(ModelConfig(name="alexnet_seed002", options={"base": 4},
                                        weights_norm="imagenet"),
                            num_classes=2, in_chans=3, img_size=32).input_norm is None
    with pytest.raises(ConfigError, match=r"'model.weights_norm': got 'imagnet'"):
        ModelConfig(weights="file:x.pt", weights_norm="imagnet")


def test_weights_that_carry_another_normalisation_are_an_error(state_file):
    torch.save({"model_state": torch.load(state_file), "extra": {"input_norm": [[0.1] * 3, [0.2] * 3]}},
               state_file.with_name("ckpt.pt"))
    with pytest.raises(ConfigError, match=r"carry their own normalisation"):
        _build(f"file:{state_file.with_name('ckpt.pt')}", "imagenet")
