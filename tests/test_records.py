"""Records that vouch for themselves (a digest of their own content) and the one check of a
recorded file (size and SHA-256): ``medtransfer.integrity`` (issue 26)."""

from __future__ import annotations

import json
import logging
import math

import pytest

from medtransfer.errors import IntegrityError
from medtransfer.fileio import file_record
from medtransfer.integrity import DIGEST, check_file, check_files, content_digest, read_record, write_record


def test_a_record_reads_back_as_written_and_names_an_edit(tmp_path):
    path = tmp_path / "result.json"
    data = {"tests": {"test_1": {"accuracy": 0.5, "loss": math.nan}}, "classes": ["a", "=b"],
            "input_norm": ((0.5,), (0.25,)), "n": 3}
    write_record(path, data)
    on_disk = json.loads(path.read_text())
    assert on_disk[DIGEST] == content_digest(on_disk) and on_disk[DIGEST].startswith("sha256:")
    back = read_record(path)
    assert DIGEST not in back and back["tests"]["test_1"]["accuracy"] == 0.5
    assert back["input_norm"] == [[0.5], [0.25]] and math.isnan(back["tests"]["test_1"]["loss"])
    # The canonical form ignores key order and spacing: rewriting the file alike changes nothing.
    path.write_text(json.dumps(dict(reversed(list(on_disk.items())))))
    assert read_record(path) == back

    # tests.accuracy 0.5 -> 0.7 by hand, the digest left as it was
    path.write_text(path.read_text().replace("0.5,", "0.7,", 1))
    with pytest.raises(IntegrityError, match=r"result\.json was changed after it was written .*own "
                                             r"digest.*edited by hand") as info:
        read_record(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text, why", [('{"val": 0.', "is unreadable"), ("[1, 2]", "does not hold a mapping"),
                                       (b"\xff\xfe", "is unreadable")])
def test_an_unreadable_record_is_named(tmp_path, text, why):
    path = tmp_path / "manifest.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(IntegrityError, match=rf"manifest\.json {why}"):
        read_record(path)


def test_a_record_of_an_earlier_version_is_used_with_one_warning_per_group(tmp_path, caplog):
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(json.dumps({"checkpoint": "best.pt"}))
    with caplog.at_level(logging.WARNING, logger="medtransfer"):
        assert read_record(tmp_path / "a.json", tmp_path) == {"checkpoint": "best.pt"}
        assert read_record(tmp_path / "b.json", tmp_path) == {"checkpoint": "best.pt"}
    warned = [r.getMessage() for r in caplog.records if "no digest of its own" in r.getMessage()]
    assert len(warned) == 1 and "a.json" in warned[0] and "earlier medtransfer" in warned[0]


def test_check_file_names_what_differs(tmp_path):
    file = tmp_path / "best.pt"
    file.write_bytes(b"weights" * 100)
    record = tmp_path / "result.json"
    files = {"best.pt": file_record(file)}
    assert check_file(file, files, record) == file
    check_files(tmp_path, files, record)

    raw = bytearray(file.read_bytes())
    raw[10] ^= 0x01  # the same size, another SHA-256
    file.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match=r"best\.pt differs from the file its unit's .*result\.json "
                                             r"recorded \(SHA-256 mismatch\)"):
        check_file(file, files, record)
    file.write_bytes(b"short")
    with pytest.raises(IntegrityError, match=r"best\.pt has 5 bytes, but its unit's .*json recorded 700"):
        check_files(tmp_path, files, record)
    file.unlink()
    with pytest.raises(IntegrityError, match=r"best\.pt is missing"):
        check_file(file, files, record)
    with pytest.raises(IntegrityError, match=r"records no size and SHA-256 of last\.pt"):
        check_file(tmp_path / "last.pt", files, record)
    with pytest.raises(IntegrityError, match=r"'files' is not a mapping"):
        check_files(tmp_path, ["best.pt"], record)
