"""How well e-mails are split into stories, and how fast: the labelled corpus in tests/data/emails/.

    python bench/split_corpus.py [--corpus tests/data/emails] [--json]

Each `<name>.eml` beside a `<name>.expected.json` (its stories: headline, url, section, sponsored;
the rules are in that directory's README) is parsed and split as POST /v1/emails does. A found
story matches an expected one when their headlines are equal after folding case, quotes, dashes
and whitespace (one-to-one, in order of appearance). Printed per family and overall: story
precision and recall, and among matched stories the share whose link, section and sponsored flag
are right; then parse + split throughput (e-mails/s: one process on the corpus and on a 100 KB
TLDR-shaped e-mail, and one process per core on the 100 KB e-mail).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import sys
import time
import unicodedata
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from app.mail import parse_email, split_email  # noqa: E402

_FOLD = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "–": "-", "—": "-", "\u00a0": " "})


def fold(text: str | None) -> str:
    text = unicodedata.normalize("NFKC", (text or "").translate(_FOLD)).casefold()
    return re.sub(r"\s+", " ", text).strip(" .:")


def score_email(path: Path) -> dict:
    expected = json.loads(path.with_suffix(".expected.json").read_text(encoding="utf-8"))
    split = split_email(parse_email(path.read_bytes()))
    found = list(split.stories)
    unmatched = list(found)
    matched = []
    for story in expected["stories"]:
        hit = next((f for f in unmatched if fold(f.headline) == fold(story["headline"])), None)
        if hit is not None:
            unmatched.remove(hit)
            matched.append((story, hit))
    missed = [s["headline"] for s in expected["stories"] if not any(s is m for m, _ in matched)]
    return {
        "name": path.stem,
        "family": expected.get("family", "?"),
        "splitter": split.splitter,
        "expected": len(expected["stories"]),
        "found": len(found),
        "matched": len(matched),
        "url_ok": sum(1 for s, f in matched if (s.get("url") or None) == (f.url or None)),
        "section_ok": sum(1 for s, f in matched if fold(s.get("section")) == fold(f.section)),
        "sponsored_ok": sum(1 for s, f in matched if bool(s.get("sponsored")) == f.sponsored),
        "missed": missed,
        "extra": [f.headline for f in unmatched],
        "wrong_sponsored": [s["headline"] for s, f in matched if bool(s.get("sponsored")) != f.sponsored],
        "wrong_sections": [
            (s["headline"], s.get("section"), f.section)
            for s, f in matched
            if fold(s.get("section")) != fold(f.section)
        ],
        "wrong_urls": [
            (s["headline"], s.get("url"), f.url)
            for s, f in matched
            if (s.get("url") or None) != (f.url or None)
        ],
    }


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 3) if whole else 1.0


def summarize(rows: list[dict]) -> dict:
    total = defaultdict(int)
    for row in rows:
        for key in ("expected", "found", "matched", "url_ok", "section_ok", "sponsored_ok"):
            total[key] += row[key]
    return {
        "emails": len(rows),
        "stories": total["expected"],
        "precision": _ratio(total["matched"], total["found"]),
        "recall": _ratio(total["matched"], total["expected"]),
        "url_correct": _ratio(total["url_ok"], total["matched"]),
        "section_correct": _ratio(total["section_ok"], total["matched"]),
        "sponsored_correct": _ratio(total["sponsored_ok"], total["matched"]),
    }


def _hundred_kb_email() -> bytes:
    from bench.tldr_email import CELL_STYLE, tldr_email

    stories, number = [], 0
    while True:
        number += 1
        stories.append(
            (
                "Headlines & Launches" if number // 8 % 2 == 0 else "Deep Dives & Analysis",
                f"Story number {number} about models",
                f"https://example.com/{number}",
                "A summary sentence of average length for a story, as TLDR writes them. " * 4,
                False,
            )
        )
        raw = tldr_email(stories=stories, cell_style=CELL_STYLE)
        if len(raw) >= 100_000:
            return raw


def throughput(raws: list[bytes], seconds: float = 3.0) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for raw in raws:
            split_email(parse_email(raw))
            done += 1
    return done / (time.perf_counter() - start)


def parallel_throughput(raws: list[bytes], processes: int, seconds: float = 3.0) -> float:
    """E-mails per second with `processes` processes splitting side by side (the API's and the
    ingester's parsing is per e-mail, so it spreads over processes without coordination)."""
    with multiprocessing.Pool(processes) as pool:
        rates = pool.starmap(throughput, [(raws, seconds)] * processes)
    return sum(rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus", type=Path, default=REPO_ROOT / "tests" / "data" / "emails")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    parser.add_argument("--details", action="store_true", help="list missed and extra stories per e-mail")
    args = parser.parse_args(argv)
    paths = sorted(p for p in args.corpus.glob("*.eml") if p.with_suffix(".expected.json").exists())
    if not paths:
        parser.error(f"no labelled e-mails (<name>.eml + <name>.expected.json) in {args.corpus}")
    rows = [score_email(path) for path in paths]
    families: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        families[row["family"]].append(row)
    big = _hundred_kb_email()
    result = {
        "overall": summarize(rows),
        "families": {family: summarize(group) for family, group in sorted(families.items())},
        "emails_per_second_corpus": round(throughput([p.read_bytes() for p in paths]), 1),
        "emails_per_second_100kb": round(throughput([big]), 1),
        "processes": os.cpu_count() or 1,
        "emails_per_second_100kb_all_cores": round(parallel_throughput([big], os.cpu_count() or 1), 1),
        "100kb_email_bytes": len(big),
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(
        f"{'family':<14} {'e-mails':>7} {'stories':>7} {'precision':>9} {'recall':>7} {'url':>6} "
        f"{'section':>7} {'sponsor':>7}"
    )
    for family, summary in [*result["families"].items(), ("ALL", result["overall"])]:
        print(
            f"{family:<14} {summary['emails']:>7} {summary['stories']:>7} {summary['precision']:>9.3f} "
            f"{summary['recall']:>7.3f} {summary['url_correct']:>6.3f} {summary['section_correct']:>7.3f} "
            f"{summary['sponsored_correct']:>7.3f}"
        )
    print(
        f"parse + split: {result['emails_per_second_corpus']} e-mails/s on the corpus, "
        f"{result['emails_per_second_100kb']} e-mails/s on a {len(big)} byte e-mail (one process), "
        f"{result['emails_per_second_100kb_all_cores']} with {result['processes']} processes"
    )
    if args.details:
        for row in rows:
            if any(
                row[key] for key in ("missed", "extra", "wrong_urls", "wrong_sponsored", "wrong_sections")
            ):
                print(f"\n{row['name']} ({row['splitter']}): missed {row['missed']}\n  extra {row['extra']}")
                print(
                    f"  sponsored flag wrong: {row['wrong_sponsored']}; "
                    f"sections wrong: {row['wrong_sections']}"
                )
                for headline, want, got in row["wrong_urls"]:
                    print(f"  url of {headline!r}: expected {want}, got {got}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
