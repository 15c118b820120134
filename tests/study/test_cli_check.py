"""``medtransfer check STUDY.yaml``: the resolved config, data counts per split, the units a run
would train and those a run folder has done (reused), estimated disk; exit 2 on a problem;
nothing trained and nothing written to the run folder (issue 31)."""

from __future__ import annotations

from pathlib import Path

import yaml

from medtransfer.cli import main


def _listing(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_check_prints_the_plan_and_what_a_run_folder_would_reuse(tmp_path, capsys, tiny_study_config):
    cfg = tiny_study_config(tmp_path)
    cfg["variants"] = [{"name": "baseline"}]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out = tmp_path / "run"
    assert main(["check", str(path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert not out.exists()  # nothing written, not even the folder
    assert "# resolved config" in text and "val_fraction: 0.2" in text and "batch_norm: false" in text
    # 30 images per class: 2 × 5 per class in the test sets, 15 per class for training, 20% of
    # those for validation
    assert "target (target):" in text and "test_1         10 images  normal 5, covid 5" in text
    assert "source (source):" in text
    assert "to train: 2 units" in text and "pretrain baseline" in text and "cell     baseline" in text
    assert f"reused from {out}: 0 units" in text and "estimated disk for the units to train:" in text

    assert main(["run", str(path), "--out", str(out), "--no-progress", "--no-report"]) == 0
    capsys.readouterr()
    before = _listing(out)
    assert main(["check", str(path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "to train: 0 units" in text and f"reused from {out}: 2 units" in text
    assert "estimated disk for the units to train: 0.0 MiB" in text
    # another transfer setting: the pretraining is reused, the cell is new
    assert main(["check", str(path), "--out", str(out), "--set", "transfer.train.epochs=3"]) == 0
    text = capsys.readouterr().out
    assert "to train: 1 units\n  cell     baseline" in text and f"reused from {out}: 1 units" in text
    assert _listing(out) == before  # the run folder is only read


def test_check_fails_on_a_problem_without_writing(tmp_path, capsys, tiny_study_config):
    cfg = tiny_study_config(tmp_path)
    cfg["source"]["data"]["path"] = str(tmp_path / "nowhere")
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert main(["check", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "'source.data.path': data path" in capsys.readouterr().err
    cfg["source"]["data"]["path"] = cfg["target"]["data"]["path"]
    cfg["target"]["split"]["test_per_class"] = 500  # more than the data set has
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert main(["check", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
