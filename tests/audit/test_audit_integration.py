"""The audit on the real chest X-rays of ../shared/data (skipped where that folder is absent).

Every number asserted here was checked by hand first, outside the audit: formats with PIL's
``Image.format`` per file, colour by comparing the RGB channels of every pixel, sizes, sha256 of
pixels and files (no exact duplicates), and the near-duplicate pairs below by looking at them (the
same film re-scanned, or the same patient; the Normal images of the two tasks are different files
but partly the same patients)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtransfer.audit import AuditResult, Severity, run_audit

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
TB, COVID = SHARED / "cxr" / "tb", SHARED / "cxr" / "covid"


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> AuditResult:
    if not (TB.is_dir() and COVID.is_dir()):
        pytest.skip(f"shared data folders {TB} and {COVID} are absent")
    return run_audit(TB, against=COVID, out=tmp_path_factory.mktemp("audit"))


@pytest.mark.integration
def test_tb_formats_colour_and_sizes(audit: AuditResult):
    assert audit.counts == {"Normal": 1200, "TB": 1200}
    assert audit.per_class["Normal"]["formats"] == {"PNG": 1113, "JPEG": 87}
    assert audit.per_class["TB"]["formats"] == {"JPEG": 937, "PNG": 263}
    assert audit.per_class["Normal"]["colour"] == {"grayscale_rgb": 1200}
    tb_colour = audit.per_class["TB"]["colour"]
    assert tb_colour["grayscale_rgb"] == 1044 and sum(tb_colour.values()) - 1044 == 156
    assert audit.per_class["TB"]["sizes"] == audit.per_class["Normal"]["sizes"] == {"256×256": 1200}
    assert "image_sizes" in audit.codes()
    assert {"format_imbalance", "colour_by_class", "name_pattern_by_class"} <= audit.codes()
    shortcut = audit.find("metadata_shortcut")[0]
    assert shortcut.severity is Severity.critical and audit.probe is not None and audit.probe.auc > 0.9
    assert audit.seconds < 60  # 2400 images, well under a minute on 2 busy cores


@pytest.mark.integration
def test_tb_duplicates(audit: AuditResult):
    assert not any(code.startswith("exact_duplicate") for code in audit.codes())
    pairs = {(d["a"], d["b"]) for d in audit.duplicates}
    assert {d["kind"] for d in audit.duplicates} == {"near"}
    assert {
        ("TB/Tuberculosis-467.png", "TB/Tuberculosis-470.png"),  # one film, scanned twice
        ("TB/TB.515.jpg", "TB/TB.528.jpg"),  # one patient, series 515/528/546
        ("TB/TB.515.jpg", "TB/TB.546.jpg"),
        ("TB/Tuberculosis-155.png", "TB/Tuberculosis-156.png"),
        ("TB/Tuberculosis-37.png", "TB/Tuberculosis-38.png"),
    } <= pairs
    assert "near_duplicate" in audit.codes()


@pytest.mark.integration
def test_covid_and_shared_patients(audit: AuditResult):
    covid = audit.against
    assert covid is not None and covid.counts == {"COVID": 900, "Normal": 900}
    assert covid.per_class["COVID"]["formats"] == {"PNG": 900}
    assert covid.per_class["Normal"]["formats"] == {"PNG": 841, "JPEG": 59}
    assert "colour_by_class" not in covid.codes()
    assert covid.find("grey_stored_as_rgb")[0].data["count"] == 1800
    assert "format_imbalance" in covid.codes()  # JPEG only among the normals
    cross = audit.find("cross_dataset_duplicate")[0]
    assert cross.data["exact"] == 0 and cross.data["near"] > 0
    shared = {(d["a"], d["b"]) for d in audit.cross_duplicates}
    assert {("Normal/Normal-5833.png", "Normal/Normal-3616.png"),
            ("Normal/Normal-1210.png", "Normal/Normal-2695.png"),
            ("Normal/Normal-5498.png", "Normal/Normal-4334.png")} <= shared
