"""The labelled newsletter corpus (tests/data/emails/) through POST /v1/emails: headers decoded,
every expected story found with its headline, link, section and sponsor flag. The precision and
recall per family are printed by `python bench/split_corpus.py`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.mail import parse_email, split_email

CORPUS = Path(__file__).parent / "data" / "emails"
LABELLED = sorted(p for p in CORPUS.glob("*.eml") if p.with_suffix(".expected.json").exists())


@pytest.mark.parametrize("path", LABELLED, ids=[p.stem for p in LABELLED])
def test_each_labelled_email_yields_its_stories(path: Path) -> None:
    expected = json.loads(path.with_suffix(".expected.json").read_text(encoding="utf-8"))
    parsed = parse_email(path.read_bytes())
    assert parsed.message_id == expected["message_id"].strip("<>")
    split = split_email(parsed)
    # A forwarded newsletter is read as itself: its own sender and subject.
    original = expected.get("forwarded") or expected
    assert split.email.subject == " ".join(original["subject"].split())
    assert split.email.sender == original["from"].lower()
    found = [(s.headline, s.url, s.section, s.sponsored) for s in split.stories]
    wanted = [(s["headline"], s["url"], s["section"], s["sponsored"]) for s in expected["stories"]]
    assert found == wanted


def test_the_corpus_covers_every_family_splitter() -> None:
    from app.mail.splitters import FAMILIES

    used = {split_email(parse_email(p.read_bytes())).splitter for p in LABELLED}
    assert {family.name for family in FAMILIES} | {"generic", "whole"} <= used
