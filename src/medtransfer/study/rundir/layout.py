"""The names of a run folder's files, in one place.

::

    <run>/config.yaml        the resolved study config
    <run>/data.yaml          every data set: classes, split counts, skipped images, fingerprint
    <run>/splits/<name>.csv  part,id,label of every image
    <run>/manifest.json      every finished job → its unit and result (a record with a digest)
    <run>/results.csv        one tidy row per metric
    <run>/summary.csv        each arm's statistics over its replicates (the report's)
    <run>/differences.csv    paired differences between two strategies of a matrix (the report's)
    <run>/target_means.csv   a matrix's source × strategy means over targets and target groups
                             (the report's)
    <run>/units/<kind>-<label>-<key>/
        unit.json            the unit's spec (what decides its result) and key
        result.json          its result (a record with a digest, vouching for the files below)
        best.pt / last.pt    checkpoints (the best epoch's, the last epoch's)
        final.pt             a pretraining's last epoch's weights (pretrain.transfer_from: last)
        backbone.pt, classifier.npz   a features unit's backbone and scikit-learn classifier
        predictions.csv      test_set,id,label,p_<class>... of every evaluated image
        history.csv          one row per epoch
"""

from __future__ import annotations

from medtransfer.strategies.linear_head import BACKBONE_FILE, CLASSIFIER_FILE

__all__ = ["BACKBONE", "BEST", "CLASSIFIER", "CONFIG", "DATA", "DIFFERENCES", "FINAL", "HISTORY", "LAST",
           "MANIFEST", "PREDICTIONS", "RESULT", "RESULTS", "SPLITS", "SUMMARY", "TARGET_MEANS", "UNITS",
           "UNIT_SPEC", "VOUCHED"]

CONFIG = "config.yaml"
DATA = "data.yaml"
SPLITS = "splits"
MANIFEST = "manifest.json"
RESULTS = "results.csv"
SUMMARY = "summary.csv"
DIFFERENCES = "differences.csv"
TARGET_MEANS = "target_means.csv"
UNITS = "units"

UNIT_SPEC = "unit.json"
RESULT = "result.json"
BEST = "best.pt"
LAST = "last.pt"
FINAL = "final.pt"
BACKBONE = BACKBONE_FILE
CLASSIFIER = CLASSIFIER_FILE
PREDICTIONS = "predictions.csv"
HISTORY = "history.csv"

# The files a unit's result.json vouches for (size and SHA-256): every checkpoint (a features
# unit's classifier too), its predictions and its training history.
VOUCHED = ("*.pt", "*.npz", PREDICTIONS, HISTORY)
