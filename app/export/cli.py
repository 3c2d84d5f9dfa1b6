"""`enhancer export`: the API's export formats from the command line, plus `training`;
`enhancer digest`: a day's or a week's stories as Markdown, HTML or JSON.

`--format training` writes reviewed corrections as the training JSONL `enhancer train` reads (one
`training.data.record_rows.training_row` per corrected record). It lives only here: the app itself
never imports the training package.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

from app.record_query import RecordFilter, RecordRow, iter_records

TRAINING_FORMAT = "training"


def _when(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {value!r}") from None


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from app.export import FORMATS

    formats = [*FORMATS, TRAINING_FORMAT]
    command = sub.add_parser(
        "export",
        help="Export records: NotebookLM zip, Markdown, JSONL, CSV, or reviewed corrections for training.",
        description=(
            "Export enhanced records. notebooklm: a zip of Markdown sources within NotebookLM's limits "
            "(ENHANCER_NOTEBOOKLM_MAX_SOURCES sources, default 50; ENHANCER_NOTEBOOKLM_MAX_WORDS words "
            "each, default 500,000), every item by week and newsletter, or with --plan digest one "
            "digest of stories per --period; training: reviewed corrections as training JSONL "
            "for `enhancer train`. Filters select by item date, source, topic and entity."
        ),
    )
    command.set_defaults(handler=cmd_export)
    command.add_argument("--data-dir", help="data directory (default: $ENHANCER_DATA_DIR or ./data)")
    command.add_argument("--format", choices=formats, default="notebooklm")
    command.add_argument(
        "--out",
        help="file to write; '-' for standard output (default: a dated file in the current directory for "
        "notebooklm, standard output otherwise)",
    )
    command.add_argument("--since", type=_when, help="item date from (inclusive), ISO 8601")
    command.add_argument("--until", type=_when, help="item date until (exclusive), ISO 8601")
    command.add_argument("--source", help="only this source (exact name)")
    command.add_argument("--topic", help="only records with this topic (case-insensitive)")
    command.add_argument("--entity", help="only records naming this entity (case-insensitive)")
    reviewed = command.add_mutually_exclusive_group()
    for flag, value in (("--reviewed", True), ("--unreviewed", False)):
        reviewed.add_argument(flag, dest="reviewed", action="store_const", const=value, help=flag[2:])
    command.add_argument(
        "--plan",
        choices=("records", "digest"),
        default="records",
        help="notebooklm layout: every item by week and newsletter (records, default), or one digest "
        "per period, each story once with its newsletters merged and every source link (digest)",
    )
    command.add_argument(
        "--period", choices=("day", "week"), default="week", help="--plan digest: one source per day or week"
    )
    _register_digest(sub)


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _register_digest(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from app.knowledge.digests import DIGEST_FORMATS, PERIODS

    command = sub.add_parser(
        "digest",
        help="A day's or a week's stories grouped by topic, as Markdown, HTML or JSON.",
        description=(
            "The digest of the stories that broke in a UTC day or an ISO week (Monday to Sunday): "
            "grouped by topic, each story with its summary, its newsletters and every source link "
            "(what GET /v1/digests answers)."
        ),
    )
    command.set_defaults(handler=cmd_digest)
    command.add_argument("--data-dir", help="data directory (default: $ENHANCER_DATA_DIR or ./data)")
    command.add_argument("--period", choices=PERIODS, default="day")
    command.add_argument("--date", type=_day, help="a day in the period, YYYY-MM-DD (default: today, UTC)")
    command.add_argument("--format", choices=DIGEST_FORMATS, default="markdown")
    command.add_argument("--output", "-o", help="file to write (default: standard output)")
    command.add_argument("--topic", help="only stories with this canonical topic (or an alias of it)")
    command.add_argument("--entity", help="only stories naming this entity")
    command.add_argument("--min-relevance", type=int, help="only stories rated at least this (1-10)")


@contextmanager
def _output(path: str | None) -> Iterator[IO[bytes]]:
    if path in (None, "-"):
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path).expanduser()  # type: ignore[arg-type]
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with partial.open("wb") as handle:
        yield handle
    partial.replace(target)  # a failed export never leaves a truncated file under the real name


def training_item(row: RecordRow) -> dict[str, Any]:
    """The item as the worker saw it, in the fields `training_row` reads."""
    return {
        "source": row.source,
        "headline": row.data.get("headline") or row.subject,
        "content": row.content,
        "url": row.url,
        "date": row.item_date,
        "has_html": row.has_html,
    }


def iter_training_lines(filters: RecordFilter) -> Iterator[bytes]:
    """One training row per reviewed record with a correction (the correction is the label)."""
    from training.data.record_rows import training_row  # the training package: CLI only, never the app

    for row in iter_records(replace(filters, reviewed=True)):
        if not row.corrected_data:
            continue
        try:
            line = training_row(training_item(row), row.corrected_data)
        except ValueError as error:  # e.g. an item with empty content: report it, keep going
            print(f"warning: record {row.id} left out of the training export: {error}", file=sys.stderr)
            continue
        yield (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")


def cmd_digest(args: argparse.Namespace) -> int:
    from app.core.db import read_session_scope, use_data_dir
    from app.core.migrate import migrate_data_dir
    from app.knowledge.digests import build_digest, render
    from app.knowledge.story_query import StoryFilter

    use_data_dir(getattr(args, "data_dir", None))
    migrate_data_dir()
    try:
        filters = StoryFilter(topic=args.topic, entity=args.entity, min_relevance=args.min_relevance)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with read_session_scope() as session:
        digest = build_digest(
            session, period=args.period, date=args.date or datetime.now(UTC).date(), filters=filters
        )
    data = render(digest, args.format).encode("utf-8")
    with _output(args.output) as handle:
        handle.write(data)
    if args.output not in (None, "-"):
        print(
            f"wrote {args.output} ({len(data):,} bytes, {digest.story_count} stories, {digest.period.label})",
            file=sys.stderr,
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from app.core.db import use_data_dir
    from app.core.migrate import migrate_data_dir
    from app.export import ExportTooLarge, open_export

    use_data_dir(getattr(args, "data_dir", None))
    migrate_data_dir()
    try:
        filters = RecordFilter(
            since=args.since, until=args.until, source=args.source, topic=args.topic, entity=args.entity,
            reviewed=args.reviewed,
        )  # fmt: skip
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = args.out
    if args.format == TRAINING_FORMAT:
        chunks: Iterator[bytes] = iter_training_lines(filters)
        label = "training rows"
    else:
        try:
            stream = open_export(args.format, filters, plan=args.plan, period=args.period)
        except (ExportTooLarge, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        chunks = stream.chunks
        label = stream.filename
        if out is None and args.format == "notebooklm":
            out = stream.filename
    written = 0
    with _output(out) as handle:
        for chunk in chunks:
            handle.write(chunk)
            written += len(chunk)
    if out not in (None, "-"):
        print(f"wrote {out} ({written:,} bytes, {label})", file=sys.stderr)
    return 0
