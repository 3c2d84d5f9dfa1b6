"""How a generated row ends, decided once for every runtime (worker.runtime.base.finish_row)."""

from __future__ import annotations

from types import SimpleNamespace

from worker.runtime.base import eos_token_ids, finish_row

EOS, PAD = {2}, 0


def test_a_row_ends_at_its_first_end_of_sequence_token() -> None:
    assert finish_row([5, 6, 2, 0, 0], EOS, repeated=False, pad_id=PAD) == ([5, 6], "stop")


def test_a_row_without_an_end_ran_out_of_tokens_and_loses_its_padding() -> None:
    assert finish_row([5, 6, 7, 0], EOS, repeated=False, pad_id=PAD) == ([5, 6, 7], "length")


def test_a_row_the_guard_ended_is_a_repetition_even_when_padding_is_the_end_token() -> None:
    assert finish_row([5, 5, 5, 2, 2], EOS, repeated=True) == ([5, 5, 5], "repetition")
    assert finish_row([5, 5, 0, 0], EOS, repeated=True, pad_id=PAD) == ([5, 5], "repetition")


def test_an_engine_that_strips_its_stop_token_still_reports_a_stop() -> None:
    assert finish_row([5, 6], EOS, repeated=False, engine_stopped=True) == ([5, 6], "stop")


def test_end_tokens_come_from_the_tokenizer_and_the_model_config() -> None:
    tokenizer = SimpleNamespace(eos_token_id=2)
    assert eos_token_ids(tokenizer, 7) == [2, 7]
    assert eos_token_ids(tokenizer, [2, 9]) == [2, 9]
    assert eos_token_ids(tokenizer, -1) == [2]  # genai's "unset"
    assert eos_token_ids(SimpleNamespace(eos_token_id=None), None) == []
