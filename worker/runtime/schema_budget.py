"""Token budgets derived from the schema, and the ASCII-bounded schema of the second attempt.

The decoding grammar (worker/runtime/grammar.py) emits compact JSON whose strings never need an
escape, so an output has at most `max_json_chars(schema)` characters. With byte-level tokenizers
every token emits at least one byte, so for output made only of printable ASCII, tokens <=
characters. The retry schema restricts strings to exactly that, which makes
`token_budget(retry_schema())` a budget the output always fits: the second attempt cannot run out
of tokens. (The first attempt allows any Unicode; a character can take several tokens there.)
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from app.contract import JSON_SEPARATORS, generated_json_schema
from worker.runtime.base import GREEDY, RETRY, SamplingParams
from worker.runtime.grammar import ascii_string_pattern

# Stop tokens and a little slack for tokenizers that emit a leading space token.
BUDGET_SLACK_TOKENS = 8

RETRY_STRING_CAPS = {"summary": 200, "key_topics": 40, "entities": 48, "action_items": 100}
RETRY_ARRAY_CAPS = {"key_topics": 4, "entities": 6, "action_items": 2}


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref:
        name = ref.rsplit("/", 1)[-1]
        return root["$defs"][name]
    return node


def max_json_chars(schema: dict[str, Any], node: dict[str, Any] | None = None) -> int:
    """Characters of the longest compact JSON value the schema admits (strings unescaped)."""
    node = _resolve(schema if node is None else node, schema)
    comma, colon = JSON_SEPARATORS
    if "enum" in node:
        return max(len(json.dumps(value)) for value in node["enum"])
    kind = node.get("type")
    if kind == "object":
        properties = node.get("properties", {})
        parts = [len(json.dumps(k)) + len(colon) + max_json_chars(schema, v) for k, v in properties.items()]
        return 2 + sum(parts) + len(comma) * max(0, len(parts) - 1)
    if kind == "array":
        count = node["maxItems"]
        item = max_json_chars(schema, node["items"])
        return 2 + count * item + len(comma) * max(0, count - 1)
    if kind == "string":
        return 2 + node["maxLength"]
    if kind == "integer":
        return max(len(str(node["minimum"])), len(str(node["maximum"])))
    if kind == "boolean":
        return 5
    raise ValueError(f"unbounded schema node: {node}")


def _bound_strings(node: dict[str, Any], cap: int | None) -> None:
    if node.get("type") == "string" and "enum" not in node:
        high = min(node["maxLength"], cap) if cap else node["maxLength"]
        node["maxLength"] = high
        node["pattern"] = ascii_string_pattern(node.get("minLength", 0), high)


@lru_cache
def _retry_schema_json() -> str:
    schema = copy.deepcopy(generated_json_schema())
    for name, prop in schema["properties"].items():
        if prop.get("type") == "array":
            if name in RETRY_ARRAY_CAPS:
                prop["maxItems"] = min(prop["maxItems"], RETRY_ARRAY_CAPS[name])
            _bound_strings(prop["items"], RETRY_STRING_CAPS.get(name))
        else:
            _bound_strings(prop, RETRY_STRING_CAPS.get(name))
    return json.dumps(schema)


def retry_schema() -> dict[str, Any]:
    """A sub-schema of the contract (anything valid here is valid there) with a hard length bound."""
    return json.loads(_retry_schema_json())


def token_budget(schema: dict[str, Any]) -> int:
    return max_json_chars(schema) + BUDGET_SLACK_TOKENS


@dataclass(frozen=True)
class DecodingAttempt:
    schema: dict[str, Any]
    sampling: SamplingParams
    stop_on_repetition: bool

    @property
    def max_new_tokens(self) -> int:
        return token_budget(self.schema)


def decoding_attempts() -> list[DecodingAttempt]:
    """How a row is decoded, in order: greedy on the full contract; then, for the rows it rejected,
    sampled on the bounded retry schema (whose budget always fits, see above)."""
    return [
        DecodingAttempt(generated_json_schema(), GREEDY, stop_on_repetition=True),
        DecodingAttempt(retry_schema(), RETRY, stop_on_repetition=False),
    ]


def decoding_schemas() -> list[dict[str, Any]]:
    """The schemas the pipeline decodes with, in attempt order (compiled once at load time)."""
    return [attempt.schema for attempt in decoding_attempts()]


def batch_token_budget(rows: int) -> int:
    """The most tokens a batch of `rows` can generate over every attempt."""
    return rows * sum(attempt.max_new_tokens for attempt in decoding_attempts())
