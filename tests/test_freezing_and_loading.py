import pytest
import torch
from torch import nn

from medtransfer.errors import ConfigError, DataError
from medtransfer.freezing import BNPolicy, FreezeConfig, freeze, train_mode, weight_layers
from medtransfer.models import create_model
from medtransfer.models.loading import HeadPolicy, load_source_weights


def _model(**kw):
    return create_model("alexnet_small", num_classes=1, img_size=32, **kw)


def test_freeze_last_three_weight_layers_of_alexnet():
    m = create_model("alexnet_krizhevsky", num_classes=1, img_size=64)
    report = freeze(m, FreezeConfig(trainable_layers=3))
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    # the last three Linear layers: dense 4096 (2nd), dense 1000, output
    assert trainable == ["pre_logits.3.weight", "pre_logits.3.bias", "pre_logits.5.weight",
                         "pre_logits.5.bias", "classifier.weight", "classifier.bias"]
    assert report.trainable == ["pre_logits.3", "pre_logits.5", "classifier"]
    assert report.trainable_params > 0 and report.frozen_params > 0


def test_freeze_none_trains_everything_and_too_many_is_an_error():
    m = _model()
    freeze(m, FreezeConfig(trainable_layers=None))
    assert all(p.requires_grad for p in m.parameters())
    with pytest.raises(ConfigError, match="only 8 conv/linear layers"):
        freeze(m, FreezeConfig(trainable_layers=9))
    assert len(weight_layers(m)) == 8


@pytest.mark.parametrize("policy", list(BNPolicy))
def test_batch_norm_policy(policy):
    m = _model(batch_norm=True)
    freeze(m, FreezeConfig(trainable_layers=2, bn_policy=policy))
    bn = m.features[0][1]
    assert isinstance(bn, nn.BatchNorm2d)
    assert bn.weight.requires_grad is (policy is BNPolicy.TRAIN)
    train_mode(m)
    fixed = policy in (BNPolicy.FROZEN, BNPolicy.EVAL)
    assert bn.training is not fixed
    before = bn.running_mean.clone()
    m(torch.rand(4, 1, 32, 32))
    changed = not torch.equal(before, bn.running_mean)
    assert changed is not fixed


def test_eval_policy_keeps_trainable_batch_norm_in_eval_mode():
    m = _model(batch_norm=True)
    freeze(m, FreezeConfig(bn_policy=BNPolicy.EVAL))  # everything trains (Keras fine-tuning)
    train_mode(m)
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    assert bns and all(bn.weight.requires_grad and not bn.training for bn in bns)
    assert m.pre_logits.training


def test_frozen_parameters_do_not_change_in_a_training_step():
    m = _model(batch_norm=True)
    freeze(m, FreezeConfig(trainable_layers=3))
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.1)
    train_mode(m)
    loss = m(torch.rand(4, 1, 32, 32)).pow(2).mean()
    loss.backward()
    opt.step()
    for n, p in m.named_parameters():
        assert torch.equal(before[n], p) is (not p.requires_grad), n


def test_load_source_weights_copies_everything_when_heads_match():
    src, dst = _model(), _model()
    report = load_source_weights(dst, src.state_dict())
    assert not report.reset
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k])


def test_head_reset_when_class_count_differs():
    src = _model()
    dst = create_model("alexnet_small", num_classes=3, img_size=32)
    fresh = dst.classifier.weight.detach().clone()
    report = load_source_weights(dst, src.state_dict(), source_classes=["a", "b"],
                                 target_classes=["x", "y", "z"])
    assert set(report.reset) == {"classifier.weight", "classifier.bias"}
    assert torch.equal(dst.classifier.weight, fresh)
    assert "output layer reset" in report.messages[0]
    assert torch.equal(dst.features[0][0].weight, src.features[0][0].weight)
    with pytest.raises(DataError, match="head is 'keep'.*\\['a', 'b'\\].*\\['x', 'y', 'z'\\]"):
        load_source_weights(dst, src.state_dict(), head=HeadPolicy.KEEP,
                            source_classes=["a", "b"], target_classes=["x", "y", "z"])


def test_architecture_mismatch_is_never_silently_skipped():
    src, dst = _model(batch_norm=True), _model()
    with pytest.raises(DataError, match="unexpected.*features.0.1"):
        load_source_weights(dst, src.state_dict())
    rgb = create_model("alexnet_small", num_classes=1, in_chans=3, img_size=32)
    with pytest.raises(DataError, match="features.0.0.weight' has shape"):
        load_source_weights(_model(), rgb.state_dict())


def test_freeze_by_block_names():
    m = create_model("resnet18", num_classes=2, in_chans=1, img_size=32)
    freeze(m, FreezeConfig(train_from="layer4"))
    trainable = {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"layer4", "fc"}
    report = freeze(m, FreezeConfig(trainable_blocks=("layer3", "fc")))
    trainable = {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"layer3", "fc"}
    assert "layer4.0.conv1" in report.frozen and "layer3.0.conv1" in report.trainable


def test_unknown_block_name_suggests_the_closest():
    m = create_model("resnet18", num_classes=2, in_chans=1, img_size=32)
    with pytest.raises(ConfigError, match="'train_from': got 'layr4'; did you mean 'layer4'.*e.g. conv1"):
        freeze(m, FreezeConfig(train_from="layr4"))
    with pytest.raises(ConfigError, match="'trainable_blocks': got 'head'"):
        freeze(m, FreezeConfig(trainable_blocks=("head",)))


def test_freeze_settings_are_exclusive():
    with pytest.raises(ConfigError, match="trainable_layers and train_from; allowed: at most one"):
        FreezeConfig(trainable_layers=2, train_from="layer4")
    with pytest.raises(ConfigError, match="empty list"):
        FreezeConfig(trainable_blocks=())


def test_load_report_names_adapted_and_dropped_tensors():
    src = create_model("alexnet_small", num_classes=5, in_chans=3, img_size=32)
    dst = _model()  # 1 channel, 1 output
    report = load_source_weights(dst, src.state_dict(), adapt_input="features.0.0")
    assert report.adapted == ["features.0.0.weight"]
    assert torch.allclose(dst.features[0][0].weight, src.features[0][0].weight.sum(1, keepdim=True))
    assert report.dropped == ["classifier.bias", "classifier.weight"]
    assert report.reset == ["classifier.weight", "classifier.bias"]
    assert "features.0.0.weight" not in report.loaded and "features.0.0.bias" in report.loaded
    assert any("summed over 3 source input channels → 1" in m for m in report.messages)
    with pytest.raises(DataError, match="features.0.0.weight' has shape"):
        load_source_weights(_model(), src.state_dict())  # no adaptation unless asked
