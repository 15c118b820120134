"""``medtransfer keys``: the config reference generated from the config classes, docs/config.md
kept current, ``--version`` and a ``--help`` without reStructuredText markup."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from medtransfer import __version__
from medtransfer.cli import demo_config_path, main
from medtransfer.study import StudyConfig
from medtransfer.study.keys import all_keys, config_keys, keys_markdown, study_schema

DOCS = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def test_docs_config_md_is_current():
    assert DOCS.read_text(encoding="utf-8") == keys_markdown() + "\n", (
        "docs/config.md is stale: regenerate it with  medtransfer keys --markdown > docs/config.md")


def test_every_top_level_field_and_nested_key_is_listed():
    paths = {k.path: k for k in all_keys()}
    assert {f.name for f in dataclasses.fields(StudyConfig)} <= set(paths)
    epochs = paths["pretrain.train.epochs"]
    assert (epochs.type, epochs.default) == ("int", "10")
    assert paths["target.split.folds"].meaning.startswith("k-fold cross-validation")
    assert paths["preprocess.color"].allowed == ("grayscale", "rgb")
    assert paths["strategies.<name>.kind"].allowed == ("scratch", "features", "freeze", "finetune")
    layer = paths["strategies.<name>.layer"]
    assert layer.when == "kind: features" and layer.default == "pre_logits"
    # a section's own default shows where it differs from the class's (freeze trains 3 layers)
    assert paths["strategies.<name>.freeze.trainable_layers"].default.startswith("3 ")


def test_sections_filter_by_prefix_or_part_and_unknown_ones_are_named(capsys):
    assert [k.path for k in config_keys("pretrain.train.epochs")] == ["pretrain.train.epochs"]
    assert "transfer.train.epochs" in {k.path for k in config_keys("epochs")}
    assert main(["keys", "pretrain.train"]) == 0
    out = capsys.readouterr().out
    assert "pretrain.train.epochs  (int; default 10)" in out and "\ntransfer." not in out
    assert main(["keys", "pretrian"]) == 2
    assert "did you mean 'pretrain'" in capsys.readouterr().err


def test_json_schema_accepts_the_demo_config_and_rejects_a_typo(capsys):
    jsonschema = pytest.importorskip("jsonschema")
    assert main(["keys", "--json-schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema == json.loads(json.dumps(study_schema()))
    demo = yaml.safe_load(demo_config_path().read_text())
    jsonschema.validate(demo, schema)
    demo["pretrain"] = {"train": {"epoks": 3}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(demo, schema)


def test_version_and_help_without_rst_markup(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"medtransfer {__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "``" not in text and "-q" in text and "--verbose" in text and "keys" in text


def test_package_exports_the_python_api_lazily():
    import medtransfer

    for name in ("run_study", "load_study", "load_run", "create_model", "run_audit", "load_model", "predict"):
        assert callable(getattr(medtransfer, name)), name
    with pytest.raises(AttributeError):
        _ = medtransfer.not_an_api


def test_every_key_has_a_meaning():
    from medtransfer.study.keys import all_keys

    assert [k.path for k in all_keys() if not k.meaning] == []
