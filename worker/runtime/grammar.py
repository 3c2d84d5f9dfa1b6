"""The decoding grammar (EBNF) of a bounded JSON schema: one grammar text for every backend.

We write the EBNF ourselves rather than letting each engine convert the schema, because
- the layout must be the training layout (compact, `JSON_SEPARATORS`, property order) on every
  backend: openvino-genai's JSON-schema mode allows free whitespace (a whitespace loop never ends);
- strings must never need escapes (no quote, backslash or control character), so output length
  in characters is what `max_json_chars` counts, and every string starts with a visible character
  (a whitespace-only topic would normalise to nothing and break `minItems`);
- openvino-genai bundles a different xgrammar than the Python package: plain EBNF (no `{0, -1}`,
  no regex rules) parses in both.
Strings of the retry schema carry `ascii_string_pattern(...)`: printable ASCII only, which makes
tokens <= characters for byte-level tokenizers (see schema_budget).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

# A JSON string character that needs no escape: not '"', not '\', not a control character.
UNICODE_CHAR = r"[^\"\\\x00-\x1f\x7f]"
UNICODE_FIRST_CHAR = r"[^\"\\\x00-\x20\x7f]"
# Printable ASCII without '"' and '\'.
ASCII_CHAR = r"[ !#-\[\]-~]"
ASCII_FIRST_CHAR = r"[!#-\[\]-~]"
# The same classes in regex syntax, for the JSON schema `pattern` of ASCII-only strings.
_ASCII_FIRST_RE = r"[!#-\[\]-~]"
_ASCII_RE = r"[ !#-\[\]-~]"
# Longest single repetition written into the grammar (see `_Builder.repeat`).
MAX_REPEAT = 128


class UnsupportedSchema(ValueError):
    """The schema uses something the bounded-grammar generator does not translate."""


def ascii_string_pattern(min_length: int, max_length: int) -> str:
    """JSON-schema pattern of an ASCII-only string of min..max characters, starting visibly."""
    low, high = max(min_length, 1) - 1, max_length - 1
    return f"^{_ASCII_FIRST_RE}{_ASCII_RE}{{{low},{high}}}$"


def _literal(text: str) -> str:
    """An EBNF string literal matching `text` exactly."""
    return json.dumps(text)


class _Builder:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.rules: dict[str, str] = {}

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if ref:
            return self.schema["$defs"][ref.rsplit("/", 1)[-1]]
        return node

    def rule(self, name: str, body: str) -> str:
        self.rules[name] = body
        return name

    def value(self, node: dict[str, Any], name: str) -> str:
        node = self.resolve(node)
        if "enum" in node:
            alternatives = " | ".join(_literal(json.dumps(v, ensure_ascii=False)) for v in node["enum"])
            return self.rule(name, f"({alternatives})")
        kind = node.get("type")
        if kind == "string":
            return self.string(node, name)
        if kind == "integer":
            return self.integer(node, name)
        if kind == "array":
            return self.array(node, name)
        if kind == "object":
            return self.object(node, name)
        raise UnsupportedSchema(f"cannot bound schema node {node}")

    def string(self, node: dict[str, Any], name: str) -> str:
        low, high = node.get("minLength", 0), node.get("maxLength")
        if high is None:
            raise UnsupportedSchema(f"string without maxLength: {node}")
        first, rest = UNICODE_FIRST_CHAR, UNICODE_CHAR
        if "pattern" in node:
            if node["pattern"] != ascii_string_pattern(low, high):
                raise UnsupportedSchema(f"unsupported pattern {node['pattern']!r}")
            first, rest = ASCII_FIRST_CHAR, ASCII_CHAR
        if high < 1:
            return self.rule(name, r'"\"\""')
        body = f'"\\"" {first} {self.repeat(rest, max(low, 1) - 1, high - 1, f"{name}_chars")} "\\""'
        if low == 0:
            body = f'("\\"\\"" | {body})'
        return self.rule(name, body)

    def repeat(self, element: str, low: int, high: int, name: str) -> str:
        """`element{low,high}`, split unambiguously into repetitions of at most MAX_REPEAT.

        openvino-genai's xgrammar precomputes token masks only for short repetitions; a longer one
        (measured: {9,299}) is matched at run time and costs ~100 ms of CPU per token.
        """
        if high <= MAX_REPEAT:
            return f"{element}{{{low},{high}}}"
        tail = self.repeat(element, max(low - MAX_REPEAT, 1), high - MAX_REPEAT, name + "_")
        longer = f"{element}{{{MAX_REPEAT}}} {tail}"
        if low > MAX_REPEAT:
            return self.rule(name, longer)
        return self.rule(name, f"({element}{{{low},{MAX_REPEAT}}} | {longer})")

    def integer(self, node: dict[str, Any], name: str) -> str:
        low, high = node.get("minimum"), node.get("maximum")
        if low is None or high is None or high - low > 1000:
            raise UnsupportedSchema(f"integer needs a small minimum..maximum range: {node}")
        alternatives = " | ".join(_literal(str(v)) for v in range(high, low - 1, -1))  # longest first
        return self.rule(name, f"({alternatives})")

    def array(self, node: dict[str, Any], name: str) -> str:
        low, high = node.get("minItems", 0), node.get("maxItems")
        if high is None:
            raise UnsupportedSchema(f"array without maxItems: {node}")
        item = self.value(node["items"], f"{name}_item")
        if high == 0:
            return self.rule(name, r'"[]"')
        more = self.rule(f"{name}_more", f'", " {item}')
        body = f'"[" {item} {more}{{{max(low, 1) - 1},{high - 1}}} "]"'
        if low == 0:
            body = f'("[]" | {body})'
        return self.rule(name, body)

    def object(self, node: dict[str, Any], name: str) -> str:
        properties = node.get("properties", {})
        required = set(node.get("required", []))
        if set(properties) != required or node.get("additionalProperties", True) is not False:
            raise UnsupportedSchema("objects must require every property and forbid others")
        parts = []
        for index, (key, value) in enumerate(properties.items()):
            prefix = "{" if index == 0 else ", "
            parts.append(
                f"{_literal(prefix + json.dumps(key) + ': ')} {self.value(value, f'{name}_{index}')}"
            )
        return self.rule(name, " ".join([*parts, '"}"']) if parts else '"{}"')


def grammar_text(schema: dict[str, Any]) -> str:
    """schema_ebnf, built once per schema for every runtime (the pipeline decodes with two)."""
    return _grammar_text_of(json.dumps(schema))  # not sort_keys: property order is generation order


@lru_cache(maxsize=32)
def _grammar_text_of(schema_json: str) -> str:
    return schema_ebnf(json.loads(schema_json))


def schema_ebnf(schema: dict[str, Any]) -> str:
    """EBNF (rule `root`) for compact JSON valid under a bounded, strict schema."""
    builder = _Builder(schema)
    builder.value(schema, "root")
    return "\n".join(f"{name} ::= {body}" for name, body in builder.rules.items())
