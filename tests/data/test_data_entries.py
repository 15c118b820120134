"""Data entries are regular files inside the data root (issue 26): links leading out of it (a class
folder, an image, a CSV path) are refused unless ``data.follow_symlinks: true``; devices, FIFOs and
sockets are refused even then. Cases that could hang (``/dev/zero``, a FIFO) are in
``tests/faults/test_inputs.py``, run in a subprocess with a timeout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medtransfer.audit import AuditConfig
from medtransfer.audit.inspect import inspect_source
from medtransfer.config import from_dict
from medtransfer.data import DataConfig, PreprocessConfig, list_files, load_dataset
from medtransfer.errors import DataError, ImageDecodeError

PRE = PreprocessConfig(size=8)


def _png(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)
    return path


def _tree(root: Path) -> Path:
    for name, value in (("neg", 40), ("pos", 200)):
        for i in range(3):
            _png(root / name / f"{name}{i}.png", value + i)
    return root


def test_follow_symlinks_is_a_data_key_defaulting_to_false():
    assert DataConfig(path=Path("x")).follow_symlinks is False
    assert from_dict(DataConfig, {"path": "x", "follow_symlinks": True}).follow_symlinks is True


def test_link_to_etc_passwd_is_refused_naming_it_and_how_to_allow_it(tmp_path):
    root = _tree(tmp_path / "data")
    (root / "neg" / "passwd.png").symlink_to("/etc/passwd")
    for read in (lambda cfg: load_dataset(cfg, PRE), list_files,
                 lambda cfg: inspect_source(cfg, AuditConfig())):
        with pytest.raises(DataError, match=r"passwd\.png is outside the data root .*data.*"
                           r"leads to /etc/passwd.*data\.follow_symlinks: true"):
            read(DataConfig(path=root))
    # allowed, it is read as an image, and is no image: the decoder says so
    with pytest.raises(ImageDecodeError, match=r"passwd\.png"):
        load_dataset(DataConfig(path=root, follow_symlinks=True), PRE)


def test_linked_class_folder_outside_the_root_is_refused_unless_links_are_followed(tmp_path):
    root = _tree(tmp_path / "data")
    _png(tmp_path / "elsewhere" / "x.png", 99)
    (root / "other").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(DataError, match=r"class folder .*other is a link leading outside the data "
                       r"root .*elsewhere.*data\.follow_symlinks: true"):
        list_files(DataConfig(path=root))
    # data.classes leaving the linked folder out: nothing outside is read
    assert len(list_files(DataConfig(path=root, classes=["neg", "pos"])).paths) == 6
    index = list_files(DataConfig(path=root, follow_symlinks=True))
    assert index.classes == ("neg", "other", "pos") and "other/x.png" in index.ids


def test_links_inside_the_root_are_allowed_and_a_link_loop_ends(tmp_path):
    root = _tree(tmp_path / "data")
    (root / "pos" / "again.png").symlink_to(root / "pos" / "pos0.png")
    (root / "neg" / "more").symlink_to(root / "pos", target_is_directory=True)
    (root / "neg" / "loop").symlink_to(root / "neg", target_is_directory=True)
    _png(root / "neg" / "real" / "r.png", 9)
    (root / "neg" / "a_link").symlink_to(root / "neg" / "real", target_is_directory=True)
    (root / "neg" / "broken.png").symlink_to(root / "gone.png")
    index = list_files(DataConfig(path=root))
    assert "pos/again.png" in index.ids and "neg/more/pos1.png" in index.ids
    assert not [i for i in index.ids if "loop/" in i]  # the class folder itself: seen
    assert "neg/real/r.png" in index.ids and not [i for i in index.ids if "a_link" in i]
    assert "neg/broken.png" in index.ids  # left to the decoder, which names it (on_error: skip skips it)
    with pytest.raises(ImageDecodeError, match=r"broken\.png: it is missing \(a broken link\?\)"):
        load_dataset(DataConfig(path=root), PRE)
    (root / "neg" / "broken.png").unlink()
    assert load_dataset(DataConfig(path=root), PRE).ids == list_files(DataConfig(path=root)).ids


def test_linked_subfolder_or_image_leading_outside_is_refused(tmp_path):
    _png(tmp_path / "outside" / "a.png", 5)
    for make in ("folder", "image"):
        root = _tree(tmp_path / f"data_{make}")
        if make == "folder":
            (root / "pos" / "sub").symlink_to(tmp_path / "outside", target_is_directory=True)
        else:
            (root / "pos" / "a.png").symlink_to(tmp_path / "outside" / "a.png")
        with pytest.raises(DataError, match=r"outside the data root"):
            list_files(DataConfig(path=root))
        assert len(load_dataset(DataConfig(path=root, follow_symlinks=True), PRE)) == 7


def test_csv_paths_leading_outside_its_folder_are_refused_unless_links_are_followed(tmp_path):
    outside = _png(tmp_path / "outside.png", 7)
    root = _tree(tmp_path / "data")
    rows = ["path,label", "neg/neg0.png,neg", "pos/pos0.png,pos", f"{outside},pos", "../outside.png,neg"]
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"2 row\(s\) point at files that may not be read: line 4: "
                       r".*outside\.png is outside the data root.*line 5"):
        list_files(DataConfig(path=root / "index.csv"))
    assert len(load_dataset(DataConfig(path=root / "index.csv", follow_symlinks=True), PRE)) == 4


def test_a_character_device_in_a_csv_is_refused_even_when_links_are_followed(tmp_path):
    root = _tree(tmp_path / "data")
    (root / "index.csv").write_text("path,label\nneg/neg0.png,neg\n/dev/null,pos\n")
    for follow in (False, True):
        with pytest.raises(DataError, match=r"line 3: /dev/null is a character device, not a regular "
                           r"file \(device files, FIFOs and sockets are refused even with"):
            list_files(DataConfig(path=root / "index.csv", follow_symlinks=follow))
