"""Degenerate-repetition detection on generated token ids (no torch: every backend uses it)."""

from __future__ import annotations

from collections.abc import Callable

# A degenerate loop: the tail is one n-gram (period <= LOOP_MAX_PERIOD) repeated LOOP_REPEATS times.
# "0000000" is a number, not a loop: short periods must repeat over at least LOOP_MIN_SPAN tokens.
# Long units need fewer repeats: SmolLM2 loops on timestamps like "2023-01-22T12:11:10.10, " (30
# tokens, digits are single tokens), and three exact copies of 25+ tokens never occur in real text.
LOOP_MAX_PERIOD, LOOP_REPEATS, LOOP_MIN_SPAN = 64, 6, 16
LOOP_SHORT_PERIOD, LOOP_LONG_REPEATS = 24, 3
LOOP_WINDOW = max(LOOP_SHORT_PERIOD * LOOP_REPEATS, LOOP_MAX_PERIOD * LOOP_LONG_REPEATS, LOOP_MIN_SPAN)


def loop_period(tokens: list[int]) -> int | None:
    """The period of the repetition the tokens end in, if they end in one."""
    for period in range(1, LOOP_MAX_PERIOD + 1):
        repeats = LOOP_REPEATS if period <= LOOP_SHORT_PERIOD else LOOP_LONG_REPEATS
        span = max(period * repeats, LOOP_MIN_SPAN)
        if len(tokens) < span:
            continue  # a longer period can need a shorter span (fewer repeats)
        if tokens[-1] != tokens[-1 - period]:
            continue  # the usual case, decided without copying the tail (this runs every token)
        tail = tokens[-span:]
        unit = tail[-period:]
        if all(tail[i] == unit[i % period] for i in range(span)):
            return period
    return None


class LoopDetector:
    """Decides whether a row's output ends in a loop worth stopping (backend-independent).

    Under the grammar, a unit that contains a quote repeats whole list items ("x", "x", ...): the
    grammar's maxItems ends that soon and de-duplication cleans it up, so stopping (and paying for
    a second attempt) would only lose a usable record. A loop inside one string is stopped: it
    would fill the string to its maxLength with junk. Without a grammar every loop is stopped.
    """

    def __init__(self, decode: Callable[[list[int]], str], *, constrained: bool) -> None:
        self.decode = decode
        self.constrained = constrained

    def __call__(self, tokens: list[int]) -> bool:
        period = loop_period(tokens)
        if period is None:
            return False
        return not self.constrained or '"' not in self.decode(tokens[-period:])
