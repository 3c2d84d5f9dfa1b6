"""Loading a data file: each line is detected as a seed row or a record row and becomes a labelled
example; a later line of the same story supersedes an earlier one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.data.examples import LabeledExample, item_key, prompt_item
from training.data.record_rows import normalize_item, validate_metadata
from training.data.seed_rows import _seed_item, _seed_labels
from training.errors import DataError, TrainingError


@dataclass
class LoadedData:
    examples: list[LabeledExample]
    lines: int
    duplicates_removed: int
    formats: dict[str, int]
    notes: list[str] = field(default_factory=list)
    # Examples a later line of the same story replaced, in file order (label agreement reads them).
    superseded: list[LabeledExample] = field(default_factory=list)


def _parse_line(row: Any, line: int, notes: list[str]) -> tuple[str, LabeledExample | None, list[str]]:
    """(format, example, problems) for one parsed JSON line."""
    if not isinstance(row, dict):
        return "?", None, ["expected a JSON object"]
    problems: list[str] = []
    if "item" in row:
        kind = "record"
        unknown = set(row) - {"item", "metadata"}
        if unknown:
            problems.append(f"unknown key(s) {', '.join(sorted(unknown))} (expected item, metadata)")
        if not isinstance(row.get("item"), dict):
            return kind, None, [*problems, "`item` must be an object"]
        if not isinstance(row.get("metadata"), dict):
            return kind, None, [*problems, "`metadata` must be an object"]
        try:
            item = normalize_item(row["item"])
        except ValueError as error:
            problems.append(str(error))
            item = None
        labels, label_problems = validate_metadata(row["metadata"])
        problems += label_problems
    elif "messages" in row:
        kind = "seed"
        try:
            item = _seed_item(row)
        except ValueError as error:
            problems.append(str(error))
            item = None
        labels, label_problems = _seed_labels(row.get("annotation"), notes, line)
        problems += label_problems
    else:
        return (
            "?",
            None,
            ["neither a seed row (`messages` + `annotation`) nor a record row (`item` + `metadata`)"],
        )
    if not problems and not labels:
        problems.append("no labelled field: nothing to learn from this line")
    if problems or item is None:
        return kind, None, problems
    prompt = prompt_item(item)
    return kind, LabeledExample(item=prompt, labels=labels, line=line, key=item_key(prompt)), []


def parse_lines(lines: Iterable[str], *, source: object = "data") -> LoadedData:
    """All examples, or DataError listing every problem as 'line N: problem' (1-based lines)."""
    problems: list[str] = []
    notes: list[str] = []
    formats: dict[str, int] = {}
    by_key: dict[str, LabeledExample] = {}
    superseded: list[LabeledExample] = []
    count = duplicates = 0
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        count += 1
        try:
            row = json.loads(text)
        except json.JSONDecodeError as error:
            problems.append(f"line {number}: not valid JSON ({error.msg} at column {error.colno})")
            continue
        kind, example, line_problems = _parse_line(row, number, notes)
        problems += [f"line {number}: {problem}" for problem in line_problems]
        if example is None:
            continue
        formats[kind] = formats.get(kind, 0) + 1
        if example.key in by_key:
            # A later line for the same story supersedes the earlier one (a later correction wins).
            duplicates += 1
            notes.append(
                f"line {number}: same story as line {by_key[example.key].line}; the later line is used"
            )
            superseded.append(by_key[example.key])
        by_key[example.key] = example
    if not count:
        problems.append("line 1: the file has no examples")
    if problems:
        raise DataError(source, problems)
    return LoadedData(
        list(by_key.values()),
        lines=count,
        duplicates_removed=duplicates,
        formats=formats,
        notes=notes,
        superseded=superseded,
    )


def load_examples(path: Path) -> LoadedData:
    if not path.is_file():
        raise TrainingError(f"{path}: no such data file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(path, [f"line {text_line(path, error.start)}: not UTF-8 text"]) from error
    return parse_lines(text.splitlines(), source=path)


def text_line(path: Path, byte_offset: int) -> int:
    return path.read_bytes()[:byte_offset].count(b"\n") + 1
