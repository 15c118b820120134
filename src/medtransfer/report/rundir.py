"""Moved to :mod:`medtransfer.study.rundir`, the run folder's one owner; these names stay
importable from here."""

from medtransfer.study.rundir import (
    POOLED,
    Arm,
    Predictions,
    RunDir,
    UnitInfo,
    load_run,
    read_predictions,
    read_results,
    unit_predictions,
)

__all__ = ["POOLED", "Arm", "Predictions", "RunDir", "UnitInfo", "load_run", "read_predictions",
           "read_results", "unit_predictions"]
