"""The one CSV writer: text a spreadsheet would run as a formula is written with a leading ``'``
and read back as it was; numbers are written as numbers (issue 26)."""

from __future__ import annotations

import csv
import math

import numpy as np

from medtransfer.csvfile import append_csv_row, csv_cell, read_csv, write_csv

FORMULAS = ["=cmd|' -C calc'!A0_2.png", "+e'f", "-2+3", "@SUM(A1)", "\tx", "\rx", "'quoted"]


def test_formula_text_is_neutralised_and_read_back_unchanged(tmp_path):
    rows = [{"path": f, "predicted": f, "p": 0.25} for f in FORMULAS]
    path = write_csv(tmp_path / "t.csv", rows, ["path", "predicted", "p"])
    with path.open(newline="") as fh:
        raw = list(csv.reader(fh))[1:]
    assert all(cell.startswith("'") for row in raw for cell in row[:2])
    assert [r["path"] for r in read_csv(path)] == FORMULAS and read_csv(path)[0]["p"] == "0.25"


def test_numbers_stay_numbers():
    assert [csv_cell(v) for v in (-0.5, 1 / 3, np.float32(0.1), np.int64(-3), True, None, math.nan)] == [
        "-0.5", "0.333333", "0.1", "-3", "true", "", ""]
    assert csv_cell(math.nan, nan="nan") == "nan" and csv_cell(1 / 3, float_format=None) == str(1 / 3)
    # text that is a plain number, or the records' blank "-", is no formula: left as it is
    texts = ("-", "-1.5e-3", "+2", "-x", "-1+1")
    assert [csv_cell(t) for t in texts] == ["-", "-1.5e-3", "+2", "'-x", "'-1+1"]


def test_append_writes_the_header_once(tmp_path):
    path = tmp_path / "history.csv"
    append_csv_row(path, {"epoch": 1, "loss": 0.1, "stage": "=head"}, ["epoch", "loss", "stage"], header=True)
    append_csv_row(path, {"epoch": 2, "loss": math.nan}, ["epoch", "loss", "stage"], header=False)
    assert path.read_text() == "epoch,loss,stage\n1,0.1,'=head\n2,nan,\n"
    assert read_csv(path)[0]["stage"] == "=head"
