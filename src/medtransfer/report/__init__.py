"""Study reports: ``summary.md``/``summary.csv`` (mean ± sd tables), and ``write_report`` —
CIs, paired comparisons, figures, Grad-CAM gallery, as a self-contained HTML page."""

from medtransfer.report.analysis import (
    comparison_rows,
    metrics_ci_rows,
    write_comparisons,
    write_metrics_ci,
)
from medtransfer.report.html import write_report
from medtransfer.report.rundir import POOLED, RunDir, load_run
from medtransfer.report.summary import aggregate, write_summary

__all__ = [
    "POOLED",
    "RunDir",
    "aggregate",
    "comparison_rows",
    "load_run",
    "metrics_ci_rows",
    "write_comparisons",
    "write_metrics_ci",
    "write_report",
    "write_summary",
]
