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
    model = create_model("alexnet_small", num_classes=1, in_chans=3, img_size=32, base=4)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    return path


def _build(weights, norm, chans=3):
    cfg = ModelConfig(name="alexnet_small", options={"base": 4}, weights=weights,
                      weights_norm=norm)
    return build_pretrained(cfg, num_classes=2, in_chans=chans, img_size=32)


def test_a_file_state_dict_carries_no_normalisation_unless_named(state_file):
    assert _build(f"file:{state_file}", None).input_norm is None
    built = _build(f"file:{state_file}", "imagenet")
    assert built.input_norm == (tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD))
    assert built.weights is not None and built.weights.path == state_file


def test_inception_normalisation_for_grey_images_averages_the_channels(state_file):
    cfg = ModelConfig(name="alexnet_small", options={"base": 4}, weights=f"file:{state_file}",
                      weights_norm="inception", in_chans_policy="sum")
    built = build_pretrained(cfg, num_classes=2, in_chans=1, img_size=32)
    assert built.input_norm == ((0.5,), (0.5,))


def test_weights_norm_is_a_known_name_and_leaves_random_init_alone():
    assert build_pretrained(ModelConfig(name="alexnet_small", options={"base": 4},
                                        weights_norm="imagenet"),
                            num_classes=2, in_chans=3, img_size=32).input_norm is None
    with pytest.raises(ConfigError, match=r"'model.weights_norm': got 'imagnet'"):
        ModelConfig(weights="file:x.pt", weights_norm="imagnet")


def test_weights_that_carry_another_normalisation_are_an_error(state_file):
    torch.save({"model_state": torch.load(state_file), "extra": {"input_norm": [[0.1] * 3, [0.2] * 3]}},
               state_file.with_name("ckpt.pt"))
    with pytest.raises(ConfigError, match=r"carry their own normalisation"):
        _build(f"file:{state_file.with_name('ckpt.pt')}", "imagenet")


def test_weights_norm_by_numbers_mean_std_or_a_value_range(state_file):
    """{mean, std} (one value stands for every channel) and TorchXRayVision's range [-1024, 1024]:
    pixels in [0, 1] become -1024 + 2048 x, i.e. (x - 0.5) / (1 / 2048)."""
    built = _build(f"file:{state_file}", {"mean": [0.2], "std": [0.3]})
    assert built.input_norm == ((0.2,) * 3, (0.3,) * 3)
    cfg = ModelConfig(name="alexnet_small", options={"base": 4}, weights=f"file:{state_file}",
                      weights_norm={"range": [-1024, 1024]}, in_chans_policy="sum")
    norm = build_pretrained(cfg, num_classes=2, in_chans=1, img_size=32).input_norm
    assert norm == ((0.5,), (1 / 2048,))
    x = torch.tensor([0.0, 0.25, 1.0])
    assert torch.allclose((x - norm[0][0]) / norm[1][0], torch.tensor([-1024.0, -512.0, 1024.0]))
    # the same numbers the weights carry are not a conflict; mean/std with range, or half a pair, are
    assert _build(f"file:{state_file}", {"mean": [0.485, 0.456, 0.406],
                                         "std": [0.229, 0.224, 0.225]}).input_norm is not None
    for bad, match in (({"mean": [0.5]}, "give mean and std"),
                       ({"range": [1, -1]}, "high > low"),
                       ({"range": [0, 1], "mean": [0.5], "std": [0.5]}, "not both"),
                       ({"mean": [0.5, 0.5], "std": [0.5]}, "as many values")):
        with pytest.raises(ConfigError, match=match):
            ModelConfig(weights=f"file:{state_file}", weights_norm=bad)


def test_weights_norm_numbers_come_from_yaml_and_back(state_file):
    from medtransfer.config import from_dict, to_dict

    cfg = from_dict(ModelConfig, {"weights": f"file:{state_file}", "weights_norm": {"range": [-1024, 1024]}},
                    "model")
    assert to_dict(cfg)["weights_norm"] == {"mean": None, "std": None, "range": [-1024.0, 1024.0]}
    assert from_dict(ModelConfig, to_dict(cfg), "model") == cfg
    with pytest.raises(ConfigError, match="unknown key 'rnage'"):
        from_dict(ModelConfig, {"weights_norm": {"rnage": [0, 1]}}, "model")
