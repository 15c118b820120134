"""Every reader of a finished run checks what it reads (issue 26): a record edited by hand
(``result.json``, ``manifest.json``: their own digest no longer matches), a flipped bit in a
checkpoint, a truncated ``history.csv`` or an empty pretraining ``result.json`` is an error naming
the file for ``report``, ``predict``, ``export``, ``load_model`` and ``run:`` weights — never used —
and ``run`` redoes the damaged unit saying why. ``predict``'s CSV is formula-safe."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from medtransfer.api import run_study
from medtransfer.cli import main
from medtransfer.csvfile import read_csv
from medtransfer.errors import IntegrityError
from medtransfer.inference import load_model
from medtransfer.models import ModelConfig
from medtransfer.models.pretrained import build_pretrained
from medtransfer.models.weights import WeightsError
from medtransfer.report import load_run, write_report
from medtransfer.study import study_from_dict

CLASSES = ("=c", "+e'f")  # class names a spreadsheet would run as formulas


@pytest.fixture(scope="module")
def clean(tmp_path_factory, class_folders, tiny_study_of) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("readers")
    cfg = tiny_study_of(root, class_folders, "readers", CLASSES)
    return run_study(study_from_dict(cfg), root / "clean", echo=lambda m: None, report=False), cfg


def _copy(clean: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(clean[0], out)
    return out


def _unit(out: Path, kind: str) -> Path:
    return next(p for p in (out / "units").iterdir() if p.name.startswith(kind))


def _flip(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x80  # torch.load reads this file without complaint: other weights
    path.write_bytes(bytes(raw))


def _cli(args: list[str], capsys: Any) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def _edit_accuracy(path: Path) -> None:
    """tests.accuracy 0.5 → 0.7 (or whatever it is) by hand, the record's digest left as it was."""
    text = path.read_text()
    start = text.index('"accuracy": ', text.index('"tests"')) + len('"accuracy": ')
    end = text.index(",", start)
    path.write_text(text[:start] + ("0.7" if text[start:end] != "0.7" else "0.5") + text[end:])


def _readers(out: Path, tmp_path: Path, cfg: dict[str, Any]) -> dict[str, Callable[[Any], tuple[int, str]]]:
    """The CLI's readers, each as (exit code, error text)."""
    image = next(Path(cfg["target"]["data"]["path"]).rglob("*.png"))
    return {
        "predict": lambda capsys: _cli(["predict", str(out), str(image), "--out", str(tmp_path / "p.csv")],
                                       capsys),
        "export": lambda capsys: _cli(["export", str(out), "--format", "pt2", "--out",
                                       str(tmp_path / "m.pt2")], capsys),
        "report": lambda capsys: _cli(["report", str(out), "--n-boot", "20", "--gallery", "2"], capsys),
    }


def test_an_edited_result_json_is_named_by_every_reader_and_redone_by_run(clean, tmp_path, capsys):
    out = _copy(clean, tmp_path)
    record = _unit(out, "cell") / "result.json"
    _edit_accuracy(record)
    why = r"result\.json was changed after it was written"
    for name, read in _readers(out, tmp_path, clean[1]).items():
        code, err = read(capsys)
        assert code == 2 and str(record) in err and "changed after it was written" in err, (name, err)
    with pytest.raises(IntegrityError, match=why):
        load_model(out)
    with pytest.raises(IntegrityError, match=why):
        load_run(out)
    logs: list[str] = []
    run_study(study_from_dict(clean[1]), out, echo=logs.append, report=False)
    assert any("redone" in m and "changed after it was written" in m for m in logs), logs
    assert (out / "results.csv").read_text() == (clean[0] / "results.csv").read_text()
    load_model(out)  # sound again


def test_an_edited_manifest_is_named_and_rewritten_by_run(clean, tmp_path, capsys):
    out = _copy(clean, tmp_path)
    manifest = out / "manifest.json"
    _edit_accuracy(manifest)
    for name, read in _readers(out, tmp_path, clean[1]).items():
        code, err = read(capsys)
        assert code == 2 and str(manifest) in err and "changed after it was written" in err, (name, err)
    logs: list[str] = []
    run_study(study_from_dict(clean[1]), out, echo=logs.append, report=False)
    assert sum("reused" in m for m in logs) == 2  # the units are sound: only the manifest is rewritten
    tests = [load_run(o).arms["target"][0].cells[0].cell.tests for o in (out, clean[0])]
    assert tests[0] == tests[1]


@pytest.mark.parametrize("reader", ["load_model", "predict", "export", "report", "run_weights"])
def test_a_flipped_bit_in_best_pt_is_an_error_naming_it(clean, tmp_path, capsys, reader):
    out = _copy(clean, tmp_path)
    kind = "pretrain" if reader == "run_weights" else "cell"
    best = _unit(out, kind) / "best.pt"
    _flip(best)
    message = f"{best} differs from the file its unit's"
    if reader == "load_model":
        with pytest.raises(IntegrityError, match="SHA-256 mismatch") as info:
            load_model(out)
        assert message in str(info.value)
    elif reader == "run_weights":
        with pytest.raises(WeightsError, match="SHA-256 mismatch") as info:
            build_pretrained(ModelConfig(**{**clean[1]["model"], "weights": f"run:{best.parent}"}),
                             num_classes=2, in_chans=1, img_size=16)
        assert message in str(info.value)
    else:
        code, err = _readers(out, tmp_path, clean[1])[reader](capsys)
        assert code == 2 and message in err, err
    if reader == "report":  # the report stopped at the Grad-CAM gallery, after its tables
        assert not (out / "report.html").exists()


def test_the_report_fails_naming_a_truncated_history_or_an_empty_pretraining_result(clean, tmp_path):
    out = _copy(clean, tmp_path)
    history = _unit(out, "cell") / "history.csv"
    history.write_text("".join(history.read_text().splitlines(keepends=True)[:-1]))
    with pytest.raises(IntegrityError, match="bytes, but its unit's") as info:
        write_report(out, n_boot=20, gallery_images=0)
    assert str(history) in str(info.value)

    out = _copy(clean, tmp_path / "empty")
    result = _unit(out, "pretrain") / "result.json"
    result.write_text("{}")
    with pytest.raises(IntegrityError, match=r"result\.json lacks val, checkpoint, classes, files") as info:
        write_report(out, n_boot=20, gallery_images=0)
    assert str(result) in str(info.value)


def test_predict_writes_paths_and_classes_formula_safe(clean, tmp_path, monkeypatch, capsys):
    out = clean[0]
    source = sorted((out.parent / "tgt").rglob("*.png"))
    folder = tmp_path / "new"
    folder.mkdir()
    names = ["=cmd|' -C calc'!A0_2.png", "+e'f.png", "@x.png", "-1+1.png"]
    for name, image in zip(names, source, strict=False):
        shutil.copy(image, folder / name)
    monkeypatch.chdir(folder)  # paths as typed on the command line: the CSV's first cells
    table = tmp_path / "pred.csv"
    assert main(["predict", str(out), "--out", str(table), "--", *names]) == 0
    with table.open(newline="") as fh:
        raw = list(csv.reader(fh))
    assert raw[0][:2] == ["path", "predicted"]
    assert all(row[0].startswith("'") and row[1].startswith("'") for row in raw[1:]), raw
    rows = read_csv(table)
    assert [r["path"] for r in rows] == names and {r["predicted"] for r in rows} <= set(CLASSES)
    assert all(0.0 <= float(r["p_=c"]) <= 1.0 for r in rows)
