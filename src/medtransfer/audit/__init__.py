"""Data audit: find shortcuts (acquisition differences between classes) and leakage (duplicates,
patients across splits or data sets) before anyone trains.

    from medtransfer.audit import run_audit, format_audit
    result = run_audit(Path("data/cxr/tb"), against=Path("data/cxr/covid"), out=Path("audit"))
    print(format_audit(result))
"""

from medtransfer.audit.config import AuditConfig, ProbeModel
from medtransfer.audit.core import (
    audit_inventory,
    audit_split,
    read_split_csv,
    run_audit,
    split_parts,
)
from medtransfer.audit.duplicates import DuplicatePair, MatchKind, find_duplicates
from medtransfer.audit.findings import Finding, Severity
from medtransfer.audit.inspect import ColourKind, ImageRecord, Inventory, inspect_arrays, inspect_source
from medtransfer.audit.probe import ProbeResult, run_probe
from medtransfer.audit.render import audit_markdown, format_audit, write_audit
from medtransfer.audit.result import AuditResult

__all__ = [
    "AuditConfig",
    "AuditResult",
    "ColourKind",
    "DuplicatePair",
    "Finding",
    "ImageRecord",
    "Inventory",
    "MatchKind",
    "ProbeModel",
    "ProbeResult",
    "Severity",
    "audit_inventory",
    "audit_markdown",
    "audit_split",
    "find_duplicates",
    "format_audit",
    "inspect_arrays",
    "inspect_source",
    "read_split_csv",
    "run_audit",
    "run_probe",
    "split_parts",
    "write_audit",
]
