"""bf16 against fp32 on a real task: PneumoniaMNIST chest X-rays from ../shared/data (skipped where
that folder is absent). The tolerance is the one the README states for reduced precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medtransfer.evaluate import compute_metrics
from medtransfer.models import create_model
from medtransfer.train import OptimizerConfig, TrainConfig, TrainEnv, fit, predict_proba

NPZ = Path(__file__).resolve().parents[3] / "shared" / "data" / "medmnist" / "pneumoniamnist.npz"
AUC_TOLERANCE, ACCURACY_TOLERANCE = 0.02, 0.03


def _split(data: np.lib.npyio.NpzFile, name: str, rows: np.ndarray | None = None):
    x, y = data[f"{name}_images"][:, None], data[f"{name}_labels"][:, 0].astype(np.int64)
    return (x, y) if rows is None else (x[rows], y[rows])


@pytest.mark.integration
@pytest.mark.slow
def test_bf16_test_metrics_within_tolerance_of_fp32_on_pneumoniamnist(tmp_path, one_thread):
    if not NPZ.is_file():
        pytest.skip(f"shared data file {NPZ} is absent")
    with np.load(NPZ) as data:
        rows = np.random.default_rng(0).permutation(len(data["train_labels"]))[:2400]
        train, val, test = _split(data, "train", rows), _split(data, "val"), _split(data, "test")
    metrics, params = {}, {}
    for precision in ("fp32", "bf16"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the same initial weights for both
            model = create_model("alexnet_seed002", num_classes=2, in_chans=1, img_size=28, base=16,
                                 dense=(64, 64))
        cfg = TrainConfig(epochs=8, batch_size=64, progress=False, precision=precision,
                          optimizer=OptimizerConfig(name="adam", lr=1e-3))
        res = fit(model, train, val, cfg, TrainEnv(0, tmp_path / precision, 2))
        assert res.precision == precision
        proba = predict_proba(model, test[0], precision=precision)
        metrics[precision] = compute_metrics(test[1], proba)
        params[precision] = torch.cat([p.detach().flatten() for p in model.parameters()])
    ref, got = metrics["fp32"], metrics["bf16"]
    assert ref["auc"] > 0.9  # the task is learnt (624 test images), so the comparison means something
    assert abs(got["auc"] - ref["auc"]) <= AUC_TOLERANCE, (ref, got)
    assert abs(got["accuracy"] - ref["accuracy"]) <= ACCURACY_TOLERANCE, (ref, got)
    assert not torch.equal(params["fp32"], params["bf16"])  # bf16 did run: the weights differ
