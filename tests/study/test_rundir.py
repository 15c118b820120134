"""The run folder's one owner (``medtransfer.study.rundir``, issue 27): typed unit results written
and read with to_dict/from_dict, result.json files of earlier versions loading as they are, and a
unit's files read only as its result.json vouches for them."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import pytest

from medtransfer.errors import IntegrityError
from medtransfer.fileio import file_record
from medtransfer.integrity import read_record, write_record
from medtransfer.study.rundir import (
    CellResult,
    FileRecord,
    PretrainResult,
    StageRecord,
    read_predictions,
    read_result,
    result_from_json,
    result_to_json,
    trained_checkpoint,
    unit_problem,
)

# result.json of a features cell and of a pretraining as medtransfer wrote them before results had
# types and records a digest (keys in the file's order; the cell's strategy holds its own extras).
OLD_CELL = {
    "classes": ["covid", "normal"],
    "files": {"backbone.pt": {"sha256": "fd" * 32, "size": 27529},
              "predictions.csv": {"sha256": "ed" * 32, "size": 1176}},
    "head_reset": False, "input_norm": [[0.5], [0.25]],
    "messages": ["output layer kept: source classes ['neg', 'pos'] map by position"],
    "path": "sklearn", "path_reason": "Platt scaling (sigmoid) of LinearSVC's decision function",
    "precision": "fp32", "prediction_rows": {"test_1": 16, "val": 9},
    "strategy": {"classifier": "svm", "classifier_saved": True, "feature_cache_hits": 0, "features_dim": 8,
                 "kind": "features", "layer": "pre_logits", "precision": "fp32", "seconds": 0.43,
                 "stages": [{"name": "svm", "path": "sklearn", "reason": "Platt scaling"}]},
    "tests": {"test_1": {"accuracy": 0.9375, "auc": 0.984375, "fn": 0.0}},
    "val": {"accuracy": 0.7777777777777778, "auc": 0.95},
}
OLD_PRETRAIN = {
    "best_epoch": 2, "checkpoint": "best.pt", "classes": ["neg", "pos"], "compile": True, "epochs_run": 3,
    "files": {"best.pt": {"sha256": "c3" * 32, "size": 27251}, "final.pt": {"sha256": "c4" * 32, "size": 9}},
    "images_per_second": 554.8, "input_norm": [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]],
    "precision": "fp32", "seconds": 0.69, "stop_reason": "completed", "transfer_checkpoint": "final.pt",
    "val": {"accuracy": 0.5, "auc": 1.0, "loss": 0.6924083828926086},
}


def test_result_json_of_an_earlier_version_loads_typed(tmp_path):
    cell = result_from_json(json.loads(json.dumps(OLD_CELL)), "cell", tmp_path / "u" / "result.json")
    assert isinstance(cell, CellResult) and cell.dir == tmp_path / "u"
    assert cell.tests["test_1"]["accuracy"] == 0.9375 and cell.val["auc"] == 0.95
    assert cell.input_norm == ((0.5,), (0.25,))  # a tuple type, once, when read
    assert cell.strategy is not None and cell.strategy_kind == "features"
    assert cell.strategy.extra["features_dim"] == 8 and cell.strategy.extra["classifier"] == "svm"
    assert cell.strategy.stages == (StageRecord("svm", "sklearn", "Platt scaling"),)
    assert cell.files["predictions.csv"] == FileRecord(1176, "ed" * 32)
    assert cell.best_epoch is None and cell.trainable_params is None  # what a features cell lacks
    pre = result_from_json(dict(OLD_PRETRAIN), "pretrain", tmp_path / "p" / "result.json")
    assert isinstance(pre, PretrainResult) and pre.transfer_checkpoint == "final.pt" and pre.compile
    assert pre.input_norm == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    # A key this version does not know (a later or earlier one's) is left out, not an error.
    assert result_from_json({**OLD_PRETRAIN, "gpu": "x"}, "pretrain", tmp_path / "result.json").val == pre.val


def test_results_round_trip_through_json_and_pickle_without_their_folder(tmp_path):
    for data, kind in ((OLD_CELL, "cell"), (OLD_PRETRAIN, "pretrain"), (OLD_CELL, "trial")):
        result = result_from_json(json.loads(json.dumps(data)), kind, tmp_path / "u" / "result.json")
        plain = result_to_json(result)
        assert "dir" not in plain and plain == json.loads(json.dumps(plain))
        assert {k: v for k, v in plain.items() if k in data} == json.loads(json.dumps(data))
        assert result_from_json(plain, kind, tmp_path / "u" / "result.json") == result
        assert pickle.loads(pickle.dumps(result)) == result  # as the executors pass it


@pytest.mark.parametrize("kind, drop, missing", [("cell", "tests", "tests"), ("cell", "files", "files"),
                                                 ("pretrain", "checkpoint", "checkpoint")])
def test_a_result_lacking_what_its_kind_records_is_named(tmp_path, kind, drop, missing):
    data = {k: v for k, v in (OLD_CELL if kind == "cell" else OLD_PRETRAIN).items() if k != drop}
    with pytest.raises(IntegrityError, match=rf"result\.json lacks {missing} \(damaged"):
        result_from_json(data, kind, tmp_path / "result.json")
    with pytest.raises(IntegrityError, match=r"result\.json: 'val.auc': expected a number"):
        result_from_json({**OLD_PRETRAIN, "val": {"auc": "high"}}, "pretrain", tmp_path / "result.json")


def _unit(tmp_path: Path, *, best: bool = True) -> Path:
    """A finished cell folder written as the store writes one."""
    folder = tmp_path / "units" / "cell-x-0123456789"
    folder.mkdir(parents=True)
    names = ["best.pt", "last.pt"] if best else ["last.pt"]
    for name in [*names, "predictions.csv"]:
        (folder / name).write_bytes(name.encode() * 50)
    files = {p.name: FileRecord(**file_record(p)) for p in folder.iterdir()}
    result = dataclasses.replace(result_from_json(dict(OLD_CELL), "cell", folder / "result.json"),
                                 files=files, strategy=None)
    write_record(folder / "result.json", result_to_json(result))
    return folder


def test_unit_problem_and_the_checkpoint_choice(tmp_path):
    folder = _unit(tmp_path)
    assert unit_problem(folder, "cell") is None
    result = read_result(folder, "cell")
    assert trained_checkpoint(result) == folder / "best.pt"
    assert trained_checkpoint(read_result(_unit(tmp_path / "lean", best=False), "cell")).name == "last.pt"

    (folder / "best.pt").write_bytes(b"best.pt" * 49 + b"BEST.pt")  # one bit of it, as it were
    assert "best.pt differs from the file its unit's" in str(unit_problem(folder, "cell"))
    with pytest.raises(IntegrityError, match=r"best\.pt differs"):
        trained_checkpoint(result)  # never silently last.pt instead

    data = read_record(folder / "result.json")
    data["tests"]["test_1"]["accuracy"] = 0.7  # edited by hand, the digest left as it was
    text = json.dumps({**data, "digest": json.loads((folder / "result.json").read_text())["digest"]})
    (folder / "result.json").write_text(text)
    assert "was changed after it was written" in str(unit_problem(folder, "cell"))
    assert unit_problem(tmp_path / "nowhere", "cell") == "not finished (no result.json)"


def test_predictions_with_formula_ids_and_test_set_names_read_back(tmp_path):
    from medtransfer.csvfile import write_csv

    path = write_csv(tmp_path / "predictions.csv",
                     [["=ext", "=cmd|' -C calc'!A0_2.png", 1, 0.25, 0.75], ["val", "+e'f", 0, 0.5, 0.5]],
                     ["test_set", "id", "label", "p_a", "p_=b"])
    preds = read_predictions(path)
    assert list(preds.test_set) == ["=ext", "val"] and list(preds.ids) == ["=cmd|' -C calc'!A0_2.png", "+e'f"]
    assert preds.classes == ["a", "=b"] and preds.proba.tolist() == [[0.25, 0.75], [0.5, 0.5]]
