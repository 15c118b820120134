"""Seed 004's ResNet-152 in torchvision's layout, and CheXNet's checkpoint as published
(``module.densenet121.…``, old-style ``norm.1`` names, a 14-output ``classifier.0``) loading into
densenet121 through ``model.weights: file:PATH``."""

import re

import pytest
import torch
import torchvision.models as tvm

from medtransfer.errors import DataError
from medtransfer.models import ModelConfig, build_pretrained, create_model, get_imagenet_weights
from medtransfer.models.loading import HeadPolicy


def test_resnet152_has_torchvisions_layout_and_imagenet_weights():
    with torch.device("meta"):
        ours = create_model("resnet152", num_classes=1000, in_chans=3)
        theirs = tvm.resnet152()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [len(getattr(ours, f"layer{i}")) for i in range(1, 5)] == [3, 8, 36, 3]
    url = tvm.ResNet152_Weights.IMAGENET1K_V1.url
    assert get_imagenet_weights("resnet152").filename == url.rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def chexnet_file(tmp_path_factory):
    """A file in CheXNet's published layout (PyTorch 0.3: no batch-norm counters)."""
    torch.manual_seed(0)
    state = {k: v for k, v in tvm.densenet121(num_classes=14).state_dict().items()
             if not k.endswith("num_batches_tracked")}
    old = {}
    for key, value in state.items():
        key = re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", key)
        old["module.densenet121." + key.replace("classifier.", "classifier.0.")] = value
    path = tmp_path_factory.mktemp("chexnet") / "model.pth.tar"
    torch.save({"epoch": 7, "arch": "densenet121", "state_dict": old, "best_loss": 0.1}, path)
    return path, state


def _load(path, policy=HeadPolicy.AUTO, **model):
    cfg = ModelConfig(name="densenet121", weights=f"file:{path}", in_chans_policy="repeat", **model)
    return build_pretrained(cfg, num_classes=2, in_chans=1, img_size=32, head=policy)


def test_chexnet_checkpoint_maps_its_keys_and_resets_the_14_output_classifier(chexnet_file):
    path, state = chexnet_file
    built = _load(path)
    got = built.model.state_dict()
    for key in ("features.conv0.weight", "features.denseblock1.denselayer1.norm1.weight",
                "features.denseblock4.denselayer16.conv2.weight", "features.norm5.running_var"):
        assert torch.equal(got[key], state[key]), key
    assert set(built.report.dropped) == {"classifier.weight", "classifier.bias"}  # 14 outputs
    assert "module.densenet121.features.conv0.weight" in built.report.messages[0]
    with pytest.raises(DataError, match="transfer.head is 'keep'"):
        _load(path, policy=HeadPolicy.KEEP)


def test_chexnet_under_seed001s_head_keeps_the_features_and_starts_the_head_fresh(chexnet_file):
    path, state = chexnet_file
    built = _load(path, head={"pool": "avg", "pool_size": 1, "hidden": [64], "dropout": 0.5})
    assert torch.equal(built.model.state_dict()["features.conv0.weight"], state["features.conv0.weight"])
    assert {k.split(".")[0] for k in built.report.reset} == {"head"}
    assert set(built.report.dropped) == {"classifier.weight", "classifier.bias"}
