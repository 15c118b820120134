"""The one CSV writer of everything medtransfer writes (run records, report tables, ``predict``'s
table, training histories), and its reader.

Text cells a spreadsheet would run as a formula are written formula-safe (:func:`fileio.cell_out`:
a leading ``'``; :func:`read_csv` gives the original back); numbers are written as numbers, with
``float_format`` (6 significant digits unless the caller keeps full precision) and NaN as ``nan``.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medtransfer.fileio import cell_in, cell_out, write_text_atomic

__all__ = ["append_csv_row", "csv_cell", "csv_text", "read_csv", "write_csv"]

# Text that is a plain number (or a lone "-", the records' blank) is no formula: left as it is.
_NUMBER = re.compile(r"-|[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def csv_cell(value: Any, *, float_format: str | None = ".6g", nan: str = "") -> str:
    """One cell: a bool as ``true``/``false``, an integer as is, a float with ``float_format``
    (``None``: Python's shortest repr) and NaN as ``nan``, None as empty, anything else as
    formula-safe text."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        number = float(value)
        if math.isnan(number):
            return nan
        return str(value) if float_format is None else format(number, float_format)
    if value is None:
        return ""
    text = str(value)
    return text if _NUMBER.fullmatch(text) else cell_out(text)


def _rows(rows: Iterable[Mapping[str, Any] | Sequence[Any]], columns: Sequence[str],
          **fmt: Any) -> Iterable[list[str]]:
    for row in rows:
        cells = [row.get(c, "") for c in columns] if isinstance(row, Mapping) else list(row)
        yield [csv_cell(v, **fmt) for v in cells]


def csv_text(rows: Iterable[Mapping[str, Any] | Sequence[Any]], columns: Sequence[str], *,
             header: bool = True, float_format: str | None = ".6g", nan: str = "") -> str:
    """``rows`` (mappings by ``columns``, or sequences in their order) as CSV text, a newline
    after each row; a cell is quoted only where it holds a comma, a quote or a line break."""
    out = io.StringIO()
    row_buf = io.StringIO()
    # "\r\n" as the writer's terminator makes it quote a cell holding either character.
    writer = csv.writer(row_buf, lineterminator="\r\n")
    lines = _rows(rows, columns, float_format=float_format, nan=nan)
    for cells in _with_header(lines, columns, header):
        row_buf.seek(0)
        row_buf.truncate()
        writer.writerow(cells)
        out.write(row_buf.getvalue()[:-2] + "\n")
    return out.getvalue()


def _with_header(lines: Iterable[list[str]], columns: Sequence[str], header: bool) -> Iterable[list[str]]:
    if header:
        yield [csv_cell(c) for c in columns]
    yield from lines


def write_csv(path: Path, rows: Iterable[Mapping[str, Any] | Sequence[Any]], columns: Sequence[str], *,
              float_format: str | None = ".6g", nan: str = "") -> Path:
    """``rows`` as a CSV file (header ``columns``), written atomically; returns ``path``."""
    path = Path(path)
    write_text_atomic(path, csv_text(rows, columns, float_format=float_format, nan=nan))
    return path


def append_csv_row(path: Path, row: Mapping[str, Any], columns: Sequence[str], *, header: bool,
                   float_format: str | None = None, nan: str = "nan") -> None:
    """Append one row (and the header first, with ``header``) to a CSV that grows as it is
    written (a training history, epoch by epoch)."""
    text = csv_text([row], columns, header=header, float_format=float_format, nan=nan)
    with Path(path).open("a", newline="", encoding="utf-8") as fh:
        fh.write(text)


def read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV written by :func:`write_csv`, text cells as they were before writing."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return [{cell_in(k): "" if v is None else cell_in(v) for k, v in row.items() if k is not None}
                for row in csv.DictReader(fh)]
