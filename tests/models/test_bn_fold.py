"""Seed 000's "unified" transfer of its batch-norm variant: the BN AlexNet's weights load into
the plain AlexNet with every BN folded into its conv, computing the same function in eval mode."""

import pytest
import torch
from torch import nn

from medtransfer.errors import DataError
from medtransfer.models import create_model
from medtransfer.models.loading import load_source_weights


def test_batch_norm_folds_into_the_plain_alexnets_convs():
    torch.manual_seed(0)
    bn = create_model("alexnet_small", num_classes=1, img_size=32, batch_norm=True, base=4)
    with torch.no_grad():  # statistics and affine weights as a trained network has them
        for m in bn.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    plain = create_model("alexnet_small", num_classes=1, img_size=32, base=4)
    report = load_source_weights(plain, bn.state_dict(), fold_batch_norm=True)
    assert "batch norm folded into the convs" in report.messages[0]
    assert "features.0.0.bias" in report.loaded and "features.0.1.weight" not in report.dropped
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), bn.eval()(x), rtol=1e-4, atol=1e-5)
    # only when asked (pretrain.model), and the other way round nothing can be made up
    with pytest.raises(DataError, match="source weights do not fit"):
        load_source_weights(create_model("alexnet_small", num_classes=1, img_size=32, base=4),
                            bn.state_dict())
    with pytest.raises(DataError, match="source weights do not fit"):
        load_source_weights(create_model("alexnet_small", num_classes=1, img_size=32,
                                          batch_norm=True, base=4), plain.state_dict(),
                            fold_batch_norm=True)
