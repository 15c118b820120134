"""The report's comparisons in words."""

from __future__ import annotations

from typing import Any

from medtransfer.document import fmt, p_text

__all__ = ["sentence"]


def sentence(r: dict[str, Any], alpha: float) -> str:
    """One comparison in words, e.g. ``bn vs baseline (pooled): AUC +0.053 [0.021, 0.085],
    DeLong p=0.001, Holm p=0.004 — significant at 0.05``."""
    metric = "AUC" if r["metric"] == "auc" else r["metric"]
    method = str(r["method"])
    test = method.split("; ")[-1].removesuffix(" p") if "; " in method else method
    test = test.replace(" (continuity-corrected)", "").replace(" (macro one-vs-rest AUC)", "")
    verdict = "significant" if r["significant"] else "not significant"
    return (f"{r['variant']} vs {r['reference']} ({r['test_set']}): {metric} {r['diff']:+.3f} "
            f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}], {test} {p_text(r['p'])}, "
            f"Holm {p_text(r['p_holm'])} — {verdict} at {alpha:g}")
