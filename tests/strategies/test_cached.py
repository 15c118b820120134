"""Training the tail on cached activations equals training the partly frozen model; where it
would not (augmentation, dropout or train-mode BN in the frozen part) the full path runs."""

import re

import numpy as np
import pytest
import torch

from medtransfer.data import AugmentConfig, Augmenter, ImageCache
from medtransfer.freezing import BNPolicy, FreezeConfig, freeze, train_mode
from medtransfer.models import create_model
from medtransfer.strategies import CacheConfig, Stage, TailModel, TransferData, plan_cache, train_stage
from medtransfer.train import (
    EarlyStoppingConfig,
    OptimizerConfig,
    TensorBatches,
    TrainConfig,
    TrainEnv,
    load_checkpoint,
)


def _data(n, seed, size=32):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2)
    x = np.clip(rng.normal(90 + 70 * y[:, None, None, None], 40, (n, 1, size, size)), 0, 255)
    return x.astype(np.uint8), y.astype(np.int64)


def _model(seed=0, **kw):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model("alexnet_small", num_classes=1, in_chans=1, img_size=32, base=4, **kw)


CFG = TrainConfig(epochs=4, batch_size=8, progress=False, optimizer=OptimizerConfig(lr=3e-3),
                  early_stopping=EarlyStoppingConfig(patience=3))


def _stage(model, tmp, name, *, cache, freeze_cfg, augment=None, norm=None, disk_cache=None, seed=7):
    return train_stage(
        Stage(name, freeze_cfg, CFG, CacheConfig(enabled=cache)), model,
        TransferData(_data(40, 1), _data(16, 2), augment=augment),
        TrainEnv(seed, tmp / name, num_classes=2, input_norm=norm, cache=disk_cache),
    )


@pytest.mark.parametrize("norm", [None, ((0.4,), (0.2,))])
def test_cached_path_equals_full_path(tmp_path, norm):
    # BN in the frozen convs (policy frozen) and dropout only in the trainable dense layers.
    freeze_cfg = FreezeConfig(trainable_layers=3, bn_policy=BNPolicy.FROZEN)
    full_model = _model(batch_norm=True, dense_dropout=0.3)
    cached_model = _model(batch_norm=True, dense_dropout=0.3)
    full = _stage(full_model, tmp_path, "full", cache=False, freeze_cfg=freeze_cfg, norm=norm)
    cached = _stage(cached_model, tmp_path, "cached", cache=True, freeze_cfg=freeze_cfg, norm=norm)
    assert full.path == "full" and cached.path == "cached", cached.reason
    assert cached.fit.best_epoch == full.fit.best_epoch
    for a, b in zip(full.fit.history, cached.fit.history, strict=True):
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    pairs = zip(full_model.state_dict().items(), cached_model.state_dict().items(), strict=True)
    for (k, a), (k2, b) in pairs:
        assert k == k2
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # The checkpoints are the full model's, under its own names, on both paths.
    best_full = load_checkpoint(full.fit.best_path)["model_state"]
    best_cached = load_checkpoint(cached.fit.best_path)["model_state"]
    assert list(best_full) == list(best_cached) == list(full_model.state_dict())
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(full_model.eval()(x), cached_model.eval()(x), rtol=1e-4, atol=1e-6)


def test_prefix_activations_are_kept_on_disk_for_the_same_frozen_part_only(tmp_path):
    freeze_cfg = FreezeConfig(trainable_layers=2)
    store = ImageCache(tmp_path / "cache")

    def run(name, model, seed=7):
        hits, misses = store.hits, store.misses
        res = _stage(model, tmp_path, name, cache=True, freeze_cfg=freeze_cfg, disk_cache=store, seed=seed)
        assert res.path == "cached"
        return res, store.hits - hits, store.misses - misses

    plain = _model()
    _stage(plain, tmp_path, "plain", cache=True, freeze_cfg=freeze_cfg)
    first_model, second_model = _model(), _model()
    first, hits, misses = run("first", first_model)
    assert (hits, misses) == (0, 2) and "computed once" in first.reason  # train and val
    # A new tail (another seed's head) on the same frozen part and images: read back.
    with torch.no_grad():
        second_model.get_classifier().weight.mul_(-1.0)
    second, hits, misses = run("second", second_model, seed=8)
    assert (hits, misses) == (2, 0) and "read from the disk cache" in second.reason
    # Same numbers as without the disk, whether the activations were stored or read back.
    again = _model()
    _, hits, _ = run("again", again)
    assert hits == 2
    for model in (first_model, again):
        for a, b in zip(plain.state_dict().values(), model.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    # Changed frozen weights are a different prefix: computed again.
    changed = _model()
    with torch.no_grad():
        changed.features[0][0].weight.add_(0.01)
    _, hits, misses = run("changed", changed)
    assert (hits, misses) == (0, 2)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 4


def test_frozen_parameters_do_not_move_on_the_cached_path(tmp_path):
    model = _model(batch_norm=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = _stage(model, tmp_path, "c", cache=True, freeze_cfg=FreezeConfig(trainable_layers=2))
    assert res.path == "cached"
    frozen = [k for k in before if k.startswith("features") or k.startswith("pre_logits.1")]
    assert frozen and all(torch.equal(before[k], model.state_dict()[k]) for k in frozen)
    assert not torch.equal(before["classifier.weight"], model.state_dict()["classifier.weight"])


@pytest.mark.parametrize(
    ("kw", "freeze_cfg", "augment", "reason"),
    [
        ({}, FreezeConfig(trainable_layers=3), Augmenter(AugmentConfig(horizontal_flip=True)),
         "augmentation"),
        ({"conv_dropout": 0.2}, FreezeConfig(trainable_layers=3), None, "dropout 'features.0.2'"),
        ({"batch_norm": True}, FreezeConfig(trainable_layers=3, bn_policy=BNPolicy.STATS), None,
         "batch norm 'features.0.1'.*train mode"),
        ({}, FreezeConfig(), None, "nothing is frozen"),
    ],
)
def test_caching_falls_back_to_the_full_path_and_says_why(tmp_path, kw, freeze_cfg, augment, reason):
    res = _stage(_model(**kw), tmp_path, "f", cache=True, freeze_cfg=freeze_cfg, augment=augment)
    assert res.path == "full"
    assert len(res.fit.history) >= 1
    assert re.search(reason, res.reason), res.reason


def test_train_mode_bn_in_front_of_the_first_trainable_layer_cuts_there():
    model = _model(batch_norm=True)
    freeze(model, FreezeConfig(trainable_layers=3, bn_policy=BNPolicy.TRAIN))
    plan = plan_cache(model, _data(2, 0)[0], augment=None, input_norm=None, train_mode=train_mode)
    # BN weights train under policy "train": the prefix stops before the first BN layer.
    assert plan.split is not None and plan.split.boundary == "features.0.1"


def test_memory_cap_and_timm_models(tmp_path):
    model = _model()
    freeze(model, FreezeConfig(trainable_layers=1))
    plan = plan_cache(model, _data(2, 0)[0], augment=None, input_norm=None, train_mode=train_mode,
                      n_images=10**6, max_bytes=1e6)
    assert plan.split is None and "GiB (limit" in plan.reason
    lite = create_model("efficientnet_lite0", num_classes=2, in_chans=1, img_size=32)
    freeze(lite, FreezeConfig(trainable_layers=1))
    plan = plan_cache(lite, _data(2, 0)[0], augment=None, input_norm=None, train_mode=train_mode)
    assert plan.split is not None and plan.split.boundary == "forward_head"


def test_activations_are_a_batch_source_and_the_tail_model_is_the_full_model():
    n = 70_000
    acts = torch.arange(n, dtype=torch.float64).view(n, 1)
    source = TensorBatches("train", acts, np.arange(n) % 2, 2, torch.device("cpu"))
    idx = np.array([69_999, 0, 65_536, 3])
    assert torch.equal(source.train_batch(idx, slice(1, 3), torch.Generator())[:, 0],
                       torch.tensor([0.0, 65_536.0], dtype=torch.float64))
    assert torch.equal(source.eval_batch(idx)[:, 0], torch.from_numpy(idx).double())
    full = torch.nn.Sequential(torch.nn.Linear(1, 2), torch.nn.Linear(2, 1))
    tail = TailModel(full, full[1])
    assert list(tail.state_dict()) == list(full.state_dict())
    assert [p is q for p, q in zip(tail.parameters(), full.parameters(), strict=True)] == [True] * 4
    x = torch.rand(3, 2)
    assert torch.equal(tail(x), full[1](x))


class _FunctionalDropout(torch.nn.Module):
    """A frozen layer with functional dropout: invisible to the module checks."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Conv2d(1, 2, 3)
        self.head = torch.nn.Linear(2, 1)

    def forward_features(self, x):
        return torch.nn.functional.dropout(self.body(x), 0.5, self.training).mean(dim=(2, 3))

    def forward_head(self, x, pre_logits=False):
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def test_the_probe_catches_what_the_module_checks_cannot_see():
    model = _FunctionalDropout()
    freeze(model, FreezeConfig(trainable_blocks=("head",)))
    plan = plan_cache(model, _data(2, 0, size=8)[0], augment=None, input_norm=None, train_mode=train_mode)
    assert plan.split is None and "different outputs in training mode" in plan.reason
    freeze(model, FreezeConfig(trainable_blocks=("body",)))
    plan = plan_cache(model, _data(2, 0, size=8)[0], augment=None, input_norm=None, train_mode=train_mode)
    assert plan.split is None and "first step 'forward_features' trains" in plan.reason


def test_channels_last_cached_path_equals_its_full_path_and_has_its_own_disk_entries(tmp_path):
    from dataclasses import replace

    freeze_cfg = FreezeConfig(trainable_layers=3, bn_policy=BNPolicy.FROZEN)
    store = ImageCache(tmp_path / "cache")
    data = TransferData(_data(40, 1), _data(16, 2))

    def run(name, cfg, cache):
        model = _model(batch_norm=True)
        res = train_stage(Stage(name, freeze_cfg, cfg, CacheConfig(enabled=cache)), model, data,
                          TrainEnv(7, tmp_path / name, num_classes=2, cache=store))
        assert res.path == ("cached" if cache else "full"), res.reason
        assert all(p.is_contiguous() for p in model.parameters())  # given back in NCHW
        return model

    nhwc = replace(CFG, channels_last=True)
    full, cached = run("full", nhwc, False), run("cached", nhwc, True)
    for a, b in zip(full.state_dict().values(), cached.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    misses = store.misses
    run("nchw", CFG, True)  # the NCHW activations are not the NHWC ones' disk entries
    assert store.misses == misses + 2
