"""Index the image files of a class-per-folder tree or a CSV (path,label[,group]): labels, stable
ids and patient groups, in a natural, reproducible order, without decoding anything."""

from __future__ import annotations

import csv
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from medtransfer.config import closest
from medtransfer.data.config import compile_group_pattern
from medtransfer.data.entries import DataRoot, require_regular
from medtransfer.data.images import IMAGE_EXTENSIONS
from medtransfer.errors import DataError

if TYPE_CHECKING:
    from medtransfer.data.config import DataConfig

_EXTS = ", ".join(sorted(IMAGE_EXTENSIONS))
# An item to decode: (label, absolute path, id).
Item = tuple[int, Path, str]


def pattern_groups(pattern: str, keys: list[str], ids: list[str], where: str) -> list[str]:
    """Group id per image: the first capture group of ``pattern`` in its key, else the match."""
    regex = compile_group_pattern(pattern)
    groups: list[str] = []
    failed: list[str] = []
    for key, image_id in zip(keys, ids, strict=True):
        match = regex.search(key)
        value = None if match is None else match.group(1) if regex.groups else match.group(0)
        if not value:
            failed.append(image_id)
        groups.append(value or "")
    if failed:
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        raise DataError(
            f"{where}: data.group_pattern {pattern!r} finds no group id in file "
            f"{', '.join(repr(f) for f in failed[:3])}{more}; every image needs one. The pattern is "
            "searched in the path inside the class folder (folder sources) or the CSV path value"
        )
    return groups



def index_folder(cfg: DataConfig) -> tuple[list[Item], list[str]]:
    root = cfg.path
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; a 'folder' source is <path>/<class>/<images>")
    present = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if cfg.classes is not None:
        _check_classes_present(cfg.classes, present, f"class folders of {root}")
    classes = list(cfg.classes) if cfg.classes is not None else present
    if not classes:
        loose = [p.name for p in root.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS]
        extra = f"; found {len(loose)} image files directly in it" if loose else ""
        raise DataError(
            f"found no class subfolders in {root}{extra}; expected one subfolder per class, "
            f"e.g. {root / 'normal' / 'img001.png'}"
        )
    check_two_classes(classes, str(root))
    data_root = DataRoot(root, cfg.follow_symlinks)
    items: list[Item] = []
    for label, name in enumerate(classes):
        data_root.check_inside(root / name, "class folder")
        images, others = _scan_class(root / name, data_root)
        if not images:
            seen = f"; it holds {len(others)} other files, e.g. '{others[0]}'" if others else ""
            raise DataError(
                f"class folder '{name}' ({root / name}) is empty: no images with the allowed "
                f"extensions ({_EXTS}) were found{seen}"
            )
        items.extend((label, root / name / rel, f"{name}/{rel}") for rel in images)
    return items, classes



def _scan_class(folder: Path, data_root: DataRoot) -> tuple[list[str], list[str]]:
    """Sorted image paths below ``folder`` (relative, posix), and the names of other files.
    Linked subfolders and images must stay inside ``data_root`` (unless it follows links), images
    must be regular files (a broken link is left to the decoder, like an unreadable file); a
    folder reached twice (a link loop, a link to a folder of the tree) is scanned once, under its
    real path when it has one inside ``folder``."""
    images: list[str] = []
    others: list[str] = []
    seen = {_folder_id(folder)}
    stack: list[tuple[Path, str]] = [(folder, "")]
    links: list[tuple[Path, str]] = []  # linked folders wait until every real one was seen
    while stack or links:
        if not stack:
            linked, rel_link = links.pop(0)
            if _folder_id(linked) not in seen:
                seen.add(_folder_id(linked))
                stack.append((linked, rel_link))
            continue
        current, rel_dir = stack.pop()
        with os.scandir(current) as listing:
            entries = sorted(listing, key=lambda e: e.name, reverse=True)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = f"{rel_dir}{entry.name}"
            path = Path(entry.path)
            if entry.is_dir():
                if entry.is_symlink():
                    data_root.check_inside(path, "subfolder")
                    links.append((path, f"{rel}/"))
                elif _folder_id(path) not in seen:
                    seen.add(_folder_id(path))
                    stack.append((path, f"{rel}/"))
            elif Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
                problem = data_root.problem(path) if entry.is_symlink() or not entry.is_file() else None
                if problem is not None and not problem.startswith(("missing", "unreadable")):
                    raise DataError(f"image {path} is {problem}; data entries must be regular files "
                                    f"inside the data root {data_root.root}")
                images.append(rel)
            else:
                others.append(rel)
    return sorted(images), sorted(others)


def _folder_id(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)



def index_csv(cfg: DataConfig) -> tuple[list[Item], list[str], list[str] | None, list[str] | None]:
    """Items, classes, group ids (``group_column``) and fixed parts (``split_column``: train,
    val or test per row) of a CSV source."""
    csv_path = cfg.path
    base = csv_path.parent
    require_regular(csv_path, "csv file")  # a FIFO would block, /dev/zero never end
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            wanted = [cfg.path_column, cfg.label_column]
            wanted += [cfg.group_column] if cfg.group_column else []
            wanted += [cfg.split_column] if cfg.split_column else []
            missing = [c for c in wanted if c not in header]
            if missing:
                raise DataError(
                    f"{csv_path}: missing column(s) {', '.join(repr(c) for c in missing)}; "
                    f"columns found: {', '.join(repr(c) for c in header) or 'none'}. "
                    "Set data.path_column / data.label_column / data.group_column to match."
                )
            rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read CSV {csv_path}: {exc}") from exc
    if not rows:
        raise DataError(f"{csv_path} has a header but no rows")
    records: list[tuple[int, str, str, str]] = []
    parts: list[str] = []
    for line, row in rows:
        values = []
        for column in wanted:
            value = (row.get(column) or "").strip()
            if not value:
                raise DataError(f"{csv_path}: line {line}: empty value in column '{column}'")
            values.append(value)
        if cfg.split_column:
            part = values.pop().lower()
            if part not in ("train", "val", "test"):
                raise DataError(f"{csv_path}: line {line}: column '{cfg.split_column}' is {part!r}; "
                                "allowed: train, val, test")
            parts.append(part)
        records.append((line, values[0], values[1], values[2] if len(values) > 2 else ""))
    found = sorted({r[2] for r in records}, key=_natural_key)
    if cfg.classes is not None:
        allowed = set(cfg.classes)
        for line, _, label, _ in records:
            if label not in allowed:
                hint = _suggest(label, cfg.classes)
                extra = f"; did you mean '{hint}'?" if hint else ""
                raise DataError(
                    f"{csv_path}: line {line}: label {label!r} is not one of data.classes "
                    f"({', '.join(cfg.classes)}){extra}"
                )
    classes = list(cfg.classes) if cfg.classes is not None else found
    check_two_classes(classes, str(csv_path))
    empty = [c for c in classes if c not in found]
    if empty:
        raise DataError(f"{csv_path}: no rows for class(es) {', '.join(map(repr, empty))}")
    index = {name: i for i, name in enumerate(classes)}
    data_root = DataRoot(base, cfg.follow_symlinks)
    items: list[Item] = []
    absent: list[str] = []
    refused: list[str] = []
    for line, rel, label, _ in records:
        full = Path(rel) if Path(rel).is_absolute() else base / rel
        problem = data_root.problem(full)
        if problem is not None:
            (absent if problem.startswith("missing") else refused).append(f"line {line}: {full} is {problem}")
        items.append((index[label], full, _rel_id(full, base)))
    for bad, what in ((refused, "files that may not be read"), (absent, "missing files")):
        if bad:
            more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
            raise DataError(
                f"{csv_path}: {len(bad)} row(s) point at {what}: {'; '.join(bad[:5])}{more}. "
                f"Relative paths are resolved against {base}, the data root; entries must be "
                "regular files inside it"
            )
    ids = [item[2] for item in items]
    if len(set(ids)) != len(ids):
        warnings.warn(
            f"{csv_path}: {len(ids) - len(set(ids))} rows repeat an earlier path; duplicates "
            "can land in both training and test parts",
            stacklevel=4,
        )
    groups = [r[3] for r in records] if cfg.group_column else None
    return items, classes, groups, parts if cfg.split_column else None



def _check_classes_present(wanted: Sequence[str], present: Sequence[str], where: str) -> None:
    missing = [c for c in wanted if c not in present]
    if not missing:
        return
    hints = [f"'{m}' → did you mean '{h}'?" for m in missing if (h := _suggest(m, present))]
    raise DataError(
        f"data.classes lists {', '.join(map(repr, missing))}, not found among the {where}; "
        f"present: {', '.join(map(repr, present)) or 'none'}"
        + (f". {' '.join(hints)}" if hints else "")
    )



def _suggest(name: str, choices: Sequence[str]) -> str | None:
    """Closest choice, matching case-insensitively first ('covid' → 'COVID')."""
    same = [c for c in choices if c.lower() == name.lower()]
    return same[0] if same else closest(name, choices)



def check_two_classes(classes: Sequence[str], where: str) -> None:
    if len(classes) < 2:
        raise DataError(
            f"found only class '{classes[0]}' in {where}; a classifier needs at least 2"
        )



def missing_path_message(path: Path) -> str:
    msg = f"data path {path} does not exist"
    parent = path.parent
    if parent.is_dir():
        hint = _suggest(path.name, [p.name for p in parent.iterdir()])
        if hint:
            msg += f"; did you mean {parent / hint}?"
    return msg



def _rel_id(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()



def _natural_key(text: str) -> list[int | str]:
    """Sort "2" before "10" when labels are numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]
