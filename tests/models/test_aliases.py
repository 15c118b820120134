"""Architectures are named for what they are; the names they had before still build the same
architecture, with a FutureWarning naming the new one."""

from __future__ import annotations

import pytest
import torch

from medtransfer.models import MODEL_ALIASES, ModelConfig, create_model


@pytest.mark.parametrize(("old", "new"), sorted(MODEL_ALIASES.items()))
def test_an_old_name_builds_the_same_architecture_and_warns(old, new):
    with pytest.warns(FutureWarning, match=rf"model name '{old}' is now '{new}'"):
        cfg = ModelConfig(name=old)
    assert cfg.name == new  # what unit keys and run records hold
    options = {"base": 4} if new != "alexnet_krizhevsky" else {"dense": (8, 8)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        with pytest.warns(FutureWarning):
            a = create_model(old, num_classes=2, in_chans=1, img_size=32, **options)
        torch.manual_seed(0)
        b = create_model(new, num_classes=2, in_chans=1, img_size=32, **options)
    assert type(a) is type(b)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(),
                                                  strict=True))


def test_the_default_model_is_named_for_what_it_is():
    assert ModelConfig().name == "alexnet_krizhevsky"
