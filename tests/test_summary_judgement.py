"""The summary rule of `enhancer eval` (training/evaluation/summary_judgement.py): each clause fails
the summaries it is meant to, and real one-sentence summaries pass."""

from __future__ import annotations

import pytest

from training.evaluation.summary_judgement import summary_failure

HEADLINE = "OpenAI and Broadcom to co-develop 10 GW of custom AI chips"
TEXT = (
    "OpenAI will design its own accelerators and Broadcom will build and deploy them in racks "
    "starting late next year, in a deal covering 10 gigawatts of capacity. The U.S. companies "
    "did not disclose financial terms."
)


@pytest.mark.parametrize(
    ("summary", "failure"),
    [
        ("OpenAI and Broadcom will co-develop 10 gigawatts of custom AI accelerators.", None),
        ("Broadcom will build the U.S. racks that OpenAI designs, starting next year!", None),
        ('OpenAI says Broadcom will "deploy the accelerators in racks next year."', None),
        (None, "missing"),
        ("   ", "missing"),
        ("OpenAI and Broadcom will co-develop custom AI accelerators", "no sentence end"),
        (
            "OpenAI designs chips with Broadcom. Broadcom builds the racks next year.",
            "more than one sentence",
        ),
        ("AI Guide.", "2 words"),
        ("OpenAI chips " * 30 + "deal.", "61 words"),
        ("The weather in Paris was mild and sunny on Tuesday afternoon.", "not about the item"),
        ("One factual sentence about OpenAI and Broadcom accelerators here.", "copies the instructions"),
        ("OpenAI and Broadcom to co-develop 10 GW of custom AI chips.", "the headline"),
    ],
)
def test_the_rule_passes_one_real_sentence_about_the_item(summary: str | None, failure: str | None) -> None:
    assert summary_failure(summary, headline=HEADLINE, text=TEXT) == failure
