"""Optional tracking: TensorBoard event files and MLflow runs of a tiny study."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from medtransfer.api import run_study
from medtransfer.errors import ConfigError
from medtransfer.study import study_from_dict
from medtransfer.tracking import TrackingConfig, flat_params, unit_callbacks

TRAIN = {"epochs": 2, "batch_size": 16, "progress": False}


def _study(tmp_path: Path, folders: Callable[..., Path], tracking: dict) -> dict:
    return {
        "name": "tracked", "seed": 1, "cache_dir": str(tmp_path / "cache"), "audit": False,
        "preprocess": {"size": 16}, "tracking": tracking,
        "source": {"data": {"path": str(folders(tmp_path / "src", {"a": 20, "b": 20}, 1))}},
        "target": {"data": {"path": str(folders(tmp_path / "tgt", {"c": 20, "d": 20}, 2))},
                   "split": {"test_sets": 1, "test_per_class": 5, "val_fraction": 0.2}},
        "model": {"name": "alexnet_small", "options": {"base": 4, "dense": [8, 8]}},
        "pretrain": {"train": TRAIN},
        "transfer": {"freeze": {"trainable_layers": 3}, "train": TRAIN},
    }


def test_tensorboard_and_mlflow_log_every_unit_without_changing_results(tmp_path, class_folders):
    pytest.importorskip("tensorboard", reason="optional extra medtransfer[tracking]")
    mlflow = pytest.importorskip("mlflow", reason="optional extra medtransfer[tracking]")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tracked"
    run_study(study_from_dict(_study(tmp_path, class_folders, {"tensorboard": True, "mlflow": True})), out,
              echo=lambda m: None, report=False)
    plain = tmp_path / "plain"
    run_study(study_from_dict(_study(tmp_path, class_folders, {})), plain, echo=lambda m: None, report=False)
    assert (out / "results.csv").read_text() == (plain / "results.csv").read_text()

    logs = sorted((out / "units").glob("*/tensorboard"))
    assert len(logs) == 2  # pretrain and transfer
    events = EventAccumulator(str(logs[0]))
    events.Reload()
    assert "loss/train" in events.Tags()["scalars"] and len(events.Scalars("loss/val")) == 2

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tracked")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    run = next(r for r in runs if r.data.params.get("stage") == "cell")
    assert [m.value for m in client.get_metric_history(run.info.run_id, "val_loss")]
    assert run.data.params["transfer.freeze.trainable_layers"] == "3"
    assert any(a.path == "history.csv" for a in client.list_artifacts(run.info.run_id))
    with (logs[0].parent / "history.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 2
    assert not (Path.cwd() / "mlruns").exists()


def test_tracking_is_off_by_default_and_unknown_keys_fail(tmp_path, class_folders):
    assert unit_callbacks(TrackingConfig(), run_dir=tmp_path, unit_dir=tmp_path, study="s", name="n",
                          params={}) == []
    with pytest.raises(ConfigError, match=r"did you mean 'tensorboard'"):
        study_from_dict(_study(tmp_path, class_folders, {"tensorbord": True}))
    assert flat_params({"a": {"b": 1, "c": [1, 2]}}) == {"a.b": "1", "a.c": "[1, 2]"}


def test_matrix_cells_log_to_tensorboard(tmp_path, class_folders):
    pytest.importorskip("tensorboard", reason="optional extra medtransfer[tracking]")
    base = _study(tmp_path, class_folders, {"tensorboard": True})
    cfg = {k: v for k, v in base.items() if k not in ("source", "target", "transfer")}
    cfg.update(sources={"src": base["source"]}, targets={"tgt": base["target"]},
               strategies={"ft": {"kind": "finetune", "head_fit": "train", "head": TRAIN,
                                  "finetune": TRAIN}})
    out = tmp_path / "matrix"
    run_study(study_from_dict(cfg), out, echo=lambda m: None, report=False)
    (cell,) = (out / "units").glob("cell-*")
    assert list((cell / "tensorboard").glob("events.out.tfevents.*"))
