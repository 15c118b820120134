"""Study reports, made from a finished run folder alone: ``summary.md``/``summary.csv`` (tables
over replicates), and ``write_report`` — CIs, paired comparisons, figures, Grad-CAM gallery, as
a self-contained HTML page."""

from medtransfer.report.analysis import (
    comparison_rows,
    metrics_ci_rows,
    write_comparisons,
    write_metrics_ci,
)
from medtransfer.report.html import write_report
from medtransfer.report.summary import arm_stats, summarize, write_summary
from medtransfer.study.rundir import POOLED, Arm, RunDir, load_run

__all__ = [
    "POOLED",
    "Arm",
    "RunDir",
    "arm_stats",
    "comparison_rows",
    "load_run",
    "metrics_ci_rows",
    "summarize",
    "write_comparisons",
    "write_metrics_ci",
    "write_report",
    "write_summary",
]
