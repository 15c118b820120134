import enum
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from medtransfer.config import (
    ConfigError,
    check_choice,
    deep_merge,
    from_dict,
    read_yaml,
    to_dict,
)


class Color(enum.StrEnum):
    GRAY = "grayscale"
    RGB = "rgb"


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass(frozen=True)
class Outer:
    name: str
    epochs: int = 3
    color: Color = Color.GRAY
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)
    size: int | tuple[int, int] = 8
    path: Path | None = None


def test_round_trip():
    cfg = from_dict(Outer, {"name": "x", "inner": {"lr": "1e-2"}, "color": "rgb", "size": [4, 5]})
    assert cfg.inner.lr == 0.01 and cfg.color is Color.RGB and cfg.size == (4, 5)
    assert from_dict(Outer, to_dict(cfg)) == cfg


def test_unknown_key_suggests_closest_with_path():
    with pytest.raises(ConfigError) as err:
        from_dict(Outer, {"name": "x", "inner": {"lrr": 0.1}})
    msg = str(err.value)
    assert "unknown key 'lrr' in 'inner'" in msg and "did you mean 'lr'?" in msg


def test_wrong_types_are_named():
    with pytest.raises(ConfigError, match="'epochs': expected an integer, got 'ten'"):
        from_dict(Outer, {"name": "x", "epochs": "ten"})
    with pytest.raises(ConfigError, match="'epochs': expected an integer, got True"):
        from_dict(Outer, {"name": "x", "epochs": True})
    with pytest.raises(ConfigError, match="'inner.betas': expected 2 values"):
        from_dict(Outer, {"name": "x", "inner": {"betas": [0.9]}})


def test_enum_error_lists_choices_and_hint():
    with pytest.raises(ConfigError, match="'color': got 'grayscal'; did you mean 'grayscale'.*rgb"):
        from_dict(Outer, {"name": "x", "color": "grayscal"})


def test_missing_required_key():
    with pytest.raises(ConfigError, match="missing required key 'name'"):
        from_dict(Outer, {})


def test_deep_merge_overrides_leaves_only():
    base = {"a": {"b": 1, "c": 2}, "d": [1]}
    assert deep_merge(base, {"a": {"c": 3}, "d": [2]}) == {"a": {"b": 1, "c": 3}, "d": [2]}
    assert base["a"]["c"] == 2


def test_read_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*nope.yaml"):
        read_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        read_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top"):
        read_yaml(lst)


def test_check_choice():
    check_choice("opt", "adam", ["adam", "sgd"])
    with pytest.raises(ConfigError, match="'opt': got 'adma'; did you mean 'adam'"):
        check_choice("opt", "adma", ["adam", "sgd"])


def test_to_dict_skip_defaults_keeps_only_what_differs():
    cfg = from_dict(Outer, {"name": "x", "inner": {"lr": 0.5}})
    assert to_dict(cfg, skip_defaults=True) == {"name": "x", "inner": {"lr": 0.5}}
    assert to_dict(from_dict(Outer, {"name": "x"}), skip_defaults=True) == {"name": "x"}


def test_a_field_marked_not_saved_is_left_out_and_not_taken():
    import dataclasses

    from medtransfer.config import NOT_SAVED

    @dataclasses.dataclass
    class Record:
        value: int
        where: Path = dataclasses.field(default=Path(), metadata=NOT_SAVED)

    rec = Record(3, Path("/somewhere"))
    assert to_dict(rec) == {"value": 3}
    assert from_dict(Record, {"value": 3}) == Record(3)
    with pytest.raises(ConfigError, match="unknown key 'where'"):
        from_dict(Record, {"value": 3, "where": "/x"})
