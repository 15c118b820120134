"""The run folder's one owner: the names of its files (:mod:`.layout`), the typed results its
units record (:mod:`.unit_result`), a unit read and its files checked (:mod:`.unit`), a cell's
predictions (:mod:`.predictions`), a finished run read (:mod:`.run`, :func:`load_run`), and a
unit's trained model rebuilt (:mod:`.model`). The study writes the folder (``store``,
``manifest``, ``units``, ``runner``); the report, ``predict``, ``export`` and the model card read
it through here. The low-level checks (a record's own digest, a recorded file's size and
SHA-256) are :mod:`medtransfer.integrity`'s, which ``run:`` weights use too."""

from medtransfer.study.rundir.layout import (
    BACKBONE,
    BEST,
    CLASSIFIER,
    CONFIG,
    DATA,
    DIFFERENCES,
    FINAL,
    HISTORY,
    LAST,
    MANIFEST,
    PREDICTIONS,
    RESULT,
    RESULTS,
    SPLITS,
    SUMMARY,
    TARGET_MEANS,
    UNIT_SPEC,
    UNITS,
    VOUCHED,
)
from medtransfer.study.rundir.model import TrainedModel, is_features, unit_model
from medtransfer.study.rundir.predictions import (
    POOLED,
    Predictions,
    read_predictions,
    unit_predictions,
    youden_threshold,
)
from medtransfer.study.rundir.run import Arm, RunDir, load_run, read_manifest, read_results
from medtransfer.study.rundir.unit import (
    UnitInfo,
    read_result,
    read_spec,
    trained_checkpoint,
    unit_file,
    unit_problem,
)
from medtransfer.study.rundir.unit_result import (
    CellResult,
    FileRecord,
    NormPair,
    PretrainResult,
    StageRecord,
    StrategyRecord,
    UnitResult,
    result_from_json,
    result_to_json,
)

__all__ = [
    "BACKBONE", "BEST", "CLASSIFIER", "CONFIG", "DATA", "DIFFERENCES", "FINAL", "HISTORY", "LAST", "MANIFEST",
    "POOLED", "PREDICTIONS", "RESULT", "RESULTS", "SPLITS", "SUMMARY", "TARGET_MEANS", "UNITS", "UNIT_SPEC",
    "VOUCHED", "Arm", "CellResult", "FileRecord", "NormPair", "Predictions", "PretrainResult", "RunDir",
    "StageRecord", "StrategyRecord", "TrainedModel", "UnitInfo", "UnitResult", "is_features", "load_run",
    "read_manifest", "read_predictions", "read_result", "read_results", "read_spec", "result_from_json",
    "result_to_json", "trained_checkpoint", "unit_file", "unit_model", "unit_predictions", "unit_problem",
    "youden_threshold",
]
