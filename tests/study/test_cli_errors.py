"""Config errors point home (issue 31, issue 26): every mistake at once, the data path's key and
the config file named, a YAML syntax error's file named, a bad ``--set`` blamed on that ``--set``,
and nothing written before the config and its data paths pass."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from medtransfer.cli import main


def _write(tmp_path: Path, cfg: dict[str, Any], name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_every_mistake_is_reported_at_once(tmp_path, capsys, tiny_study_config):
    cfg = tiny_study_config(tmp_path)
    cfg["seed"] = "three"
    cfg["devise"] = "cpu"
    cfg["pretrain"]["train"] = {**cfg["pretrain"]["train"], "epoks": 3}
    cfg["target"]["split"]["val_fraction"] = "a fifth"
    path = _write(tmp_path, cfg)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}: 4 problems:" in err
    for expected in ("'seed': expected an integer, got 'three'",
                     "unknown key 'devise'; did you mean 'device'?",
                     "unknown key 'epoks' in 'pretrain.train'; did you mean 'epochs'?",
                     "'target.split.val_fraction': expected a number, got 'a fifth'"):
        assert expected in err
    assert not out.exists()


def test_many_mistakes_are_listed_up_to_a_limit(tmp_path, capsys, tiny_study_config):
    cfg = tiny_study_config(tmp_path)
    cfg["preprocess"] = {f"typo{i}": i for i in range(25)}
    assert main(["run", str(_write(tmp_path, cfg)), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "25 problems:" in err and "... and 5 more" in err and err.count("unknown key 'typo") == 20


def test_a_single_mistake_keeps_its_one_line_message(tmp_path, capsys, tiny_study_config):
    cfg = tiny_study_config(tmp_path)
    cfg["seed"] = "three"
    path = _write(tmp_path, cfg)
    assert main(["run", str(path), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == f"error: {path}: 'seed': expected an integer, got 'three'\n"


def test_a_missing_data_path_names_its_key_and_the_file_and_writes_nothing(tmp_path, capsys,
                                                                             tiny_study_config):
    cfg = tiny_study_config(tmp_path)
    missing = tmp_path / "tgt_moved"
    cfg["target"]["data"]["path"] = str(missing)
    path = _write(tmp_path, cfg)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: {path}: 'target.data.path': data path {missing} does not exist" in err
    assert not out.exists(), "nothing is written before the data paths pass (no config.yaml, run.log)"


def test_a_yaml_syntax_error_names_the_file(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntarget: [1,\n", encoding="utf-8")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert f'in "{path}", line' in err and "<unicode string>" not in err


def test_a_bad_set_is_blamed_on_the_set_not_the_file(tmp_path, capsys, tiny_study_config):
    cfg = tiny_study_config(tmp_path)
    path = _write(tmp_path, cfg)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--set", "pretrain.train.epochs=many"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: --set pretrain.train.epochs=many: 'pretrain.train.epochs': expected an integer, "
                   "got 'many'\n")
    assert main(["run", str(path), "--set", "pretrain.train.epoks=2"]) == 2
    err = capsys.readouterr().err
    assert "error: --set pretrain.train.epoks=2: unknown key 'epoks' in 'pretrain.train'" in err
    assert main(["run", str(path), "--device", "tpu"]) == 2
    assert "error: --device tpu: 'device': got 'tpu'; allowed: auto, cpu, cuda, cuda:N, mps" in \
        capsys.readouterr().err
    # a mistake in the file and one in a --set: each named by its origin
    cfg["seed"] = "three"
    path = _write(tmp_path, cfg)
    assert main(["run", str(path), "--set", "pretrain.train.epochs=many"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: 'seed': expected an integer" in err
    assert "--set pretrain.train.epochs=many: 'pretrain.train.epochs'" in err
    assert main(["run", str(path), "--set", "pretrain.train.epochs=[1,"]) == 2
    assert "--set 'pretrain.train.epochs=[1,': the value is not valid YAML" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("command", ["run", "demo", "check", "predict"])
def test_device_help_names_every_device(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    assert "mps" in capsys.readouterr().out
