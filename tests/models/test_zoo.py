"""Every registered architecture: builds for 1/3 channels and 2/8 classes, exposes the head API,
its forward chain reproduces its forward, and one training step with half of it frozen moves
exactly the trainable parameters."""

import math

import pytest
import torch

from medtransfer.freezing import FreezeConfig, freeze, train_mode, weight_layers
from medtransfer.models import ModelConfig, build_model, create_model, list_models, model_info
from medtransfer.models.chain import forward_chain, run_chain

ZOO = [
    "alexnet_krizhevsky", "alexnet_small", "vgg16", "vgg_small", "resnet18", "resnet50",
    "resnet_cifar", "densenet121", "inception_v3", "inception_resnet_v2", "efficientnet_b0",
    "efficientnet_lite0", "mobilenet_v2",
]


def test_the_zoo_is_registered():
    assert set(ZOO) <= set(list_models())


def _size(name: str) -> int:
    return model_info(name).min_img_size


@pytest.mark.parametrize("name", ZOO)
def test_builds_for_channels_and_classes_with_the_head_api(name):
    size = _size(name)
    for in_chans, classes in [(1, 2), (3, 8)]:
        cfg = ModelConfig(name=name, binary_output="pair")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            m = build_model(cfg, num_classes=classes, in_chans=in_chans, img_size=size).eval()
        x = torch.rand(1, in_chans, size, size)
        with torch.no_grad():
            feats = m.forward_features(x)
            out = m.forward_head(feats)
            assert out.shape == (1, classes)
            assert m.forward_head(feats, pre_logits=True).shape == (1, m.num_features)
            torch.testing.assert_close(run_chain(forward_chain(m), x), out, rtol=1e-4, atol=1e-5)
            assert m.get_classifier().out_features == classes
            m.reset_classifier(5)
            assert m.forward_head(feats).shape == (1, 5) and m.get_classifier().out_features == 5


@pytest.mark.parametrize("name", ZOO)
def test_one_training_step_moves_exactly_the_trainable_parameters(name):
    size = _size(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = create_model(name, num_classes=3, in_chans=1, img_size=size)
    half = max(1, len(weight_layers(m)) // 2)
    report = freeze(m, FreezeConfig(trainable_layers=half))
    assert report.frozen_params > 0 and report.trainable_params > 0
    before = {k: v.detach().clone() for k, v in m.state_dict().items()}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    train_mode(m)
    gen = torch.Generator().manual_seed(0)
    loss = torch.nn.functional.cross_entropy(m(torch.rand(2, 1, size, size, generator=gen)),
                                             torch.tensor([0, 2]))
    assert math.isfinite(loss.item())
    loss.backward()
    for n, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
        else:
            assert p.grad is None, n
    opt.step()
    after = m.state_dict()
    frozen = {f"{mod}.{k}" for mod in report.frozen
              for k, _ in m.get_submodule(mod).named_parameters(recurse=False)}
    for k in frozen:
        assert torch.equal(before[k], after[k]), k
    # Frozen BN layers stay in eval mode: their running statistics do not move either.
    for bn_name in (n for n in report.frozen if "running_mean" in dict(m.get_submodule(n).named_buffers())):
        assert torch.equal(before[f"{bn_name}.running_mean"], after[f"{bn_name}.running_mean"]), bn_name
    moved = [n for n, p in m.named_parameters() if p.requires_grad and not torch.equal(before[n], p)]
    assert moved, "no trainable parameter changed"


@pytest.mark.parametrize("name", ["inception_v3", "inception_resnet_v2"])
def test_inception_names_its_minimum_input_size(name):
    with pytest.raises(Exception, match="at least 75×75 px, got 64"):
        build_model(ModelConfig(name=name), num_classes=2, in_chans=1, img_size=64)
