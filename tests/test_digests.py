"""Digests (GET /v1/digests, `enhancer digest`) and the NotebookLM export planned by digest."""

from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.core.config import Settings
from app.core.db import read_session_scope, reset_caches
from app.export import ExportTooLarge, NotebookLimits, open_export
from app.export.markdown import count_words
from app.knowledge.digests import OTHER, Digest, build_digest, render, split_digest
from app.knowledge.story_query import StoryFilter
from app.record_query import RecordFilter
from tests.conftest import API_HEADERS
from tests.digest_helpers import GPT5_ARTICLE, GPT5_URL, WEEK, News, add_records, day, knowledge_env

__all__ = ["knowledge_env"]  # the fixture, used by name

WEDNESDAY = date(2025, 1, 8)


@pytest.fixture
def week(knowledge_env: Path) -> Path:
    add_records(WEEK)
    return knowledge_env


def _digest(period: str, when: date, **filters: object) -> Digest:
    with read_session_scope() as session:
        return build_digest(session, period=period, date=when, filters=StoryFilter(**filters))  # type: ignore[arg-type]


def _client() -> TestClient:
    from app.main import create_app

    return TestClient(create_app(), headers=API_HEADERS, raise_server_exceptions=False)


def test_week_digest_groups_by_topic_and_merges_newsletters(week: Path) -> None:
    digest = _digest("week", WEDNESDAY)
    assert (digest.period.start, digest.period.end) == (date(2025, 1, 6), date(2025, 1, 13))
    # Groups: best story's relevance, then size; the stories without a topic last, whatever their
    # relevance. "Model releases" is one canonical topic with "model release".
    assert [(g.topic, [s.title.split()[0] for s in g.stories]) for g in digest.groups] == [
        ("model release", ["OpenAI", "Mistral"]),  # best 9, two stories
        ("AI safety", ["Anthropic"]),  # best 9, one story
        ("GPU supply", ["NVIDIA"]),
        (OTHER, ["A"]),  # relevance 10, no topic
    ]
    # The stories of the Sunday before and the Monday after are in their own weeks.
    assert all("week's story" not in s.title for s in digest.stories)
    gpt5 = digest.groups[0].stories[0]
    assert gpt5.sources == ["The Batch", "Import AI", "TLDR AI"]  # three newsletters, one story
    assert gpt5.links == [GPT5_URL, GPT5_ARTICLE]  # the tracking-parameter copy is the same link
    assert gpt5.max_relevance == 9 and len(gpt5.records) == 3
    assert digest.story_count == 5 and digest.record_count == 7

    markdown = render(digest, "markdown")
    assert markdown.startswith("# Newsletter digest: week 2025-W02 (2025-01-06 to 2025-01-12)\n")
    assert markdown.count("### OpenAI releases GPT-5") == 1  # once, not once per newsletter
    assert f"- <{GPT5_URL}> (The Batch, TLDR AI)" in markdown
    assert f"- <{GPT5_ARTICLE}> (Import AI)" in markdown
    headings = re.findall(r"^## (.+)$", markdown, flags=re.M)
    assert headings == ["model release", "AI safety", "GPU supply", OTHER]
    for story in digest.stories:  # every story with its summary, its sources and every link
        assert story.summary in markdown.replace("\\", "")
        assert all(f"<{url}>" in markdown for url in story.links)


def test_day_digest_holds_the_stories_that_broke_that_day(week: Path) -> None:
    monday = _digest("day", date(2025, 1, 6))
    assert [s.title for s in monday.stories] == ["OpenAI releases GPT-5 with a new reasoning mode"]
    # The story broke on Monday: Tuesday's coverage is in it, and Tuesday's digest does not repeat it.
    assert monday.stories[0].links == [GPT5_URL, GPT5_ARTICLE]
    assert _digest("day", date(2025, 1, 7)).story_count == 0
    assert _digest("day", date(2025, 1, 12)).groups[0].topic == OTHER
    assert "No stories in this period." in render(_digest("day", date(2025, 2, 1)), "markdown")
    # Filters narrow it: topic (any alias of the canonical one), entity, relevance.
    assert [s.title.split()[0] for s in _digest("week", WEDNESDAY, topic="Model Releases").stories] == [
        "OpenAI",
        "Mistral",
    ]
    assert [s.title.split()[0] for s in _digest("week", WEDNESDAY, entity="nvidia").stories] == ["NVIDIA"]
    assert {s.max_relevance for s in _digest("week", WEDNESDAY, min_relevance=9).stories} == {9, 10}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


HOSTILE = News(
    "Evil <b>Weekly</b>",
    '<script>alert("headline")</script><img src=x onerror=alert(1)> "quoted" & more',
    "</p><script>alert('summary')</script><a href='javascript:alert(2)'>click</a>",
    "javascript:alert(3)",
    day(10),
    ["<i>topic</i>"],
    ["<svg onload=alert(4)>"],
    8,
)


def test_api_renders_markdown_html_and_json(week: Path) -> None:
    quoted = News("Safe", "A link with quotes", "Its URL has a quote in it.",
                  'https://example.com/a"onmouseover="alert(5)', day(10, 11), ["RAG"])  # fmt: skip
    add_records([HOSTILE, quoted])
    with _client() as client:
        params = {"period": "week", "date": "2025-01-08"}
        markdown = client.get("/v1/digests", params={**params, "format": "markdown"})
        assert markdown.status_code == 200, markdown.text
        assert markdown.headers["content-type"] == "text/markdown; charset=utf-8"
        assert markdown.text.startswith("# Newsletter digest: week 2025-W02")
        assert "<script>" not in markdown.text  # Markdown escapes < and > too
        assert "](javascript" not in markdown.text and "<javascript" not in markdown.text

        page = client.get("/v1/digests", params={**params, "format": "html"})
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in page.headers["content-security-policy"]
        body = page.text
        parser = _Tags()
        parser.feed(body)
        tags = {tag for tag, _ in parser.tags}
        assert tags <= {"html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3", "p",
                        "nav", "ul", "li", "a", "section", "article", "span", "code"}  # fmt: skip
        assert "script" not in tags and "img" not in tags and "svg" not in tags and "b" not in tags
        hrefs = [attrs["href"] for tag, attrs in parser.tags if tag == "a"]
        external = [h for h in hrefs if h and not h.startswith("#")]
        assert external and all(h.startswith("https://") for h in external)  # no javascript: link
        assert not any(name.startswith("on") for _, attrs in parser.tags for name in attrs)
        assert "&lt;script&gt;alert(&quot;headline&quot;)&lt;/script&gt;" in body
        assert "javascript:alert(3)" in "".join(parser.text)  # shown as text, not linked
        assert "<link" not in body and "src=" not in body.replace("&lt;img src=x", "")

        answer = client.get("/v1/digests", params={**params, "format": "json"})
        assert answer.headers["content-type"] == "application/json"
        data = answer.json()
        assert data["period"] == {
            "kind": "week",
            "label": "2025-W02",
            "start": "2025-01-06",
            "end": "2025-01-12",
        }
        assert data["story_count"] == 7 and data["truncated"] is False
        assert [g["topic"] for g in data["groups"]][-1] == OTHER
        gpt5 = data["groups"][0]["stories"][0]
        assert gpt5["sources"] == ["The Batch", "Import AI", "TLDR AI"] and len(gpt5["records"]) == 3

        # Defaults: today's (UTC) day digest as Markdown.
        today = client.get("/v1/digests")
        assert today.status_code == 200 and today.text.startswith("# Newsletter digest: ")
        assert (
            client.get(
                "/v1/digests", params={"period": "day", "date": "2025-01-06", "format": "json"}
            ).json()["story_count"]
            == 1
        )
        assert client.get("/v1/digests", headers={"X-API-Key": ""}).status_code == 401


def test_bad_digest_requests_are_422_with_a_message(knowledge_env: Path) -> None:
    cases = [
        ({"period": "month"}, "period"),
        ({"format": "pdf"}, "format"),
        ({"date": "2025-13-01"}, "date"),
        ({"date": "yesterday"}, "date"),
        ({"min_relevance": "11"}, "min_relevance"),
        ({"period": "week", "date": "9999-12-31"}, "9999"),
    ]
    with _client() as client:
        for params, wanted in cases:
            response = client.get("/v1/digests", params=params)
            assert response.status_code == 422, (params, response.text)
            assert wanted in response.json()["message"], (params, response.json())


def test_enhancer_digest_writes_a_file(
    week: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    target = tmp_path / "out" / "digest.html"
    code = main(
        ["digest", "--period", "week", "--date", "2025-01-08", "--format", "html", "--output", str(target)]
    )
    assert code == 0
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert "OpenAI releases GPT-5" in target.read_text(encoding="utf-8")
    assert not target.with_name("digest.html.partial").exists()
    assert "wrote" in capsys.readouterr().err
    assert main(["digest", "--period", "day", "--date", "2025-01-06", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["story_count"] == 1
    with pytest.raises(SystemExit):
        main(["digest", "--date", "2025-02-30"])


# NotebookLM, planned by digest ------------------------------------------------------------


SUBJECTS = [
    "a protein folding model that speeds up drug discovery in biology labs",
    "new export rules for data centre chips shipped to other countries",
    "a court ruling on copyright for books used to train language models",
    "a humanoid robot that folds laundry and loads dishwashers at home",
    "a weather forecasting system that predicts hurricanes days earlier",
    "a music generator sued by record labels over copied songs",
    "a self-driving taxi service expanding to three more cities",
    "a chess engine that explains its moves in plain language",
    "an open dataset of medical scans released for cancer research",
    "a coding assistant that fixes security bugs in open-source projects",
    "a translation app for sign language running on a phone",
    "a battery startup using machine learning to find new materials",
    "a school district banning chatbots from homework",
    "a satellite imaging model that maps deforestation every week",
]


def _long_week(week_number: int, stories: int) -> list[News]:
    """Distinct stories (each its own subject) of about 150 words each, in a week of January 2025."""
    topics = ["agents", "chips", "policy", "research"]
    news = []
    for n in range(stories):
        subject = SUBJECTS[(week_number * 5 + n) % len(SUBJECTS)]
        news.append(
            News(
                f"Letter {n % 3}",
                f"Company {week_number}-{n} announces {subject}",
                " ".join([f"Company {week_number}-{n} announced {subject}."] * 12),
                f"https://example.com/w{week_number}/story-{n}",
                day(6 + 7 * week_number + n % 5),
                [topics[n % 4]],
                [f"Company {week_number}-{n}"],
                1 + n % 10,
            )
        )
    return news


def _zip_files(data: bytes) -> dict[str, str]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name).decode("utf-8") for name in archive.namelist()}


def test_split_digest_keeps_each_part_within_the_budget(knowledge_env: Path) -> None:
    add_records(_long_week(0, 9))
    digest = _digest("week", WEDNESDAY)
    assert digest.story_count == 9
    parts = split_digest(digest, 700)
    assert len(parts) >= 2 and [p.part for p in parts] == list(range(1, len(parts) + 1))
    assert [s.id for p in parts for s in p.stories] == [s.id for s in digest.stories]  # order kept
    assert all(count_words(render(p, "markdown")) <= 700 for p in parts)
    assert split_digest(digest, 100_000) == [digest]
    with pytest.raises(ValueError, match="does not fit"):
        split_digest(digest, 100)


def test_notebooklm_digest_plan_respects_the_source_and_word_limits(
    knowledge_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_records(_long_week(0, 9) + _long_week(1, 3) + _long_week(3, 2))  # weeks 2, 3 and 5 of 2025
    monkeypatch.setenv("ENHANCER_NOTEBOOKLM_MAX_WORDS", "1200")
    reset_caches()
    with _client() as client:
        response = client.get(
            "/v1/export", params={"format": "notebooklm", "plan": "digest", "period": "week"}
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/zip"
        files = _zip_files(response.content)
        # An unknown plan, a digest plan for another format, filters stories do not have: 422.
        for params in (
            {"format": "notebooklm", "plan": "weekly"},
            {"format": "markdown", "plan": "digest"},
            {"format": "notebooklm", "plan": "digest", "source": "Letter 1"},
            {"format": "notebooklm", "plan": "digest", "period": "month"},
        ):
            bad = client.get("/v1/export", params=params)
            assert bad.status_code == 422, (params, bad.text)
    names = sorted(files)
    # The week of nine long stories is over 1,200 words: it is cut into parts; the empty week 4 has no file.
    assert names[0] == "00-index.md"
    sources = names[1:]
    assert all(re.fullmatch(r"\d\d-digest-2025-W0[235](-part\d)?\.md", n) for n in sources), sources
    assert any("2025-W02-part2" in n for n in sources) and not any("W04" in n for n in sources)
    assert sum("W03" in n for n in sources) == 1 and sum("W05" in n for n in sources) == 1
    for name in sources:
        assert count_words(files[name]) < 1200, name
    # Every story exactly once, with its link; the index counts them.
    everything = "".join(files[n] for n in sources)
    stories = re.findall(r"^### (.+)$", everything, flags=re.M)
    assert len(stories) == len(set(stories)) == 14
    for w, n in [(0, i) for i in range(9)] + [(1, i) for i in range(3)] + [(3, i) for i in range(2)]:
        assert f"<https://example.com/w{w}/story-{n}>" in everything
    assert "14 stories from 14 newsletter items" in files["00-index.md"]
    assert "up to 50 sources per notebook and up to 1,200 words per source" in files["00-index.md"]

    # The source limit, the index included: three weeks in three sources fit 4, not 3; a source per
    # day (ten days with stories) does not fit 4.
    def export(period: str, max_files: int) -> dict[str, str]:
        limits = NotebookLimits(max_files=max_files, max_words=100_000)
        stream = open_export("notebooklm", RecordFilter(), plan="digest", period=period, limits=limits)
        return _zip_files(b"".join(stream.chunks))

    assert sorted(export("week", 4)) == [
        "00-index.md", "01-digest-2025-W02.md", "02-digest-2025-W03.md", "03-digest-2025-W05.md",
    ]  # fmt: skip
    with pytest.raises(ExportTooLarge, match="ENHANCER_NOTEBOOKLM_MAX_SOURCES"):
        export("week", 3)
    with pytest.raises(ExportTooLarge, match="use period=week"):
        export("day", 4)
    days = export("day", 11)
    assert len(days) == 11 and "01-digest-2025-01-06.md" in days
    # since/until pick whole periods: from the Wednesday of week 3 on, weeks 3 and 5.
    stream = open_export("notebooklm", RecordFilter(since=day(15)), plan="digest")
    assert sorted(_zip_files(b"".join(stream.chunks)))[1:] == [
        "01-digest-2025-W03.md",
        "02-digest-2025-W05.md",
    ]


def test_notebooklm_limits_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ENHANCER_NOTEBOOKLM_MAX_SOURCES", "ENHANCER_NOTEBOOKLM_MAX_WORDS"):
        monkeypatch.delenv(name, raising=False)
    defaults = Settings()
    assert (defaults.notebooklm_max_sources, defaults.notebooklm_max_words) == (50, 500_000)
    for allowed in ("50", "100", "300", "600"):
        monkeypatch.setenv("ENHANCER_NOTEBOOKLM_MAX_SOURCES", allowed)
        assert Settings().notebooklm_max_sources == int(allowed)
    for wrong in ("0", "51", "1000", "many"):
        monkeypatch.setenv("ENHANCER_NOTEBOOKLM_MAX_SOURCES", wrong)
        with pytest.raises(ValidationError, match=r"50, 100, 300, 600|valid integer"):
            Settings()
    monkeypatch.setenv("ENHANCER_NOTEBOOKLM_MAX_SOURCES", "300")
    monkeypatch.setenv("ENHANCER_NOTEBOOKLM_MAX_WORDS", "200000")
    reset_caches()
    try:
        assert NotebookLimits.from_settings() == NotebookLimits(max_files=300, max_words=200_000)
    finally:
        monkeypatch.delenv("ENHANCER_NOTEBOOKLM_MAX_SOURCES")
        monkeypatch.delenv("ENHANCER_NOTEBOOKLM_MAX_WORDS")
        reset_caches()
