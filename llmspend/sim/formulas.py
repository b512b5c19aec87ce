"""The simulator's formulas: prompt tokens, the usage plan, filler text, vectors, schemas.

Documented in :mod:`llmspend.sim`; standard library only.
"""

from __future__ import annotations

import dataclasses
import math
import re
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from ..dialects import tokens_from_bytes
from .exchange import Directives

__all__ = [
    "Plan",
    "fill_schema",
    "make_plan",
    "prompt_tokens",
    "sim_text",
    "text_chunks",
    "tokens_of",
    "vector",
]

_LOREM = """lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor
incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis nostrud"""
_WORDS = re.findall(r"[a-z]+", _LOREM)


def tokens_of(text: str) -> int:
    """``ceil(utf8_bytes / 4)``: the token count of one piece of text (llmspend's one
    bytes→tokens estimate)."""
    return tokens_from_bytes(len(text.encode("utf-8")))


def prompt_tokens(messages: Iterable[str], extra: int = 0) -> int:
    """``3 + sum(4 + tokens_of(m)) + extra`` over the messages' texts."""
    return 3 + sum(4 + tokens_of(m) for m in messages) + extra


@dataclasses.dataclass(frozen=True)
class Plan:
    """The usage of one simulated generation."""

    prompt: int
    cached: int
    text: int
    reasoning: int
    truncated: bool

    @property
    def output(self) -> int:
        """Visible plus reasoning tokens."""
        return self.text + self.reasoning


def make_plan(
    prompt: int,
    d: Directives,
    *,
    limit: int | None = None,
    reasoning: bool = False,
    reasoning_cap: int | None = None,
    cached: int = 0,
) -> Plan:
    """Apply the documented formulas (see :mod:`llmspend.sim`)."""
    p = d.tokens if d.tokens is not None else prompt
    text = d.completion if d.completion is not None else 20 + p % 40
    r = d.reasoning if d.reasoning is not None else (32 + p % 32 if reasoning else 0)
    if reasoning_cap is not None and d.reasoning is None:
        r = min(r, reasoning_cap)
    c = min(p, d.cached if d.cached is not None else cached)
    truncated = False
    if limit is not None and text + r > limit:
        truncated = True
        r = min(r, limit)
        text = limit - r
    return Plan(
        prompt=p, cached=max(c, 0), text=max(text, 0), reasoning=max(r, 0), truncated=truncated
    )


def sim_text(n_tokens: int, seed: int = 0) -> str:
    """Deterministic filler text of exactly ``4 * n_tokens`` ASCII characters."""
    size = 4 * max(n_tokens, 0)
    words: list[str] = []
    total, i = 0, seed % len(_WORDS)
    while total < size + 1:
        words.append(_WORDS[i % len(_WORDS)])
        total += len(words[-1]) + 1
        i += 1
    text = " ".join(words)[:size]
    if text.endswith(" "):
        text = text[:-1] + "."
    return text[:1].upper() + text[1:]


def vector(seed_text: str, dims: int) -> list[float]:
    """A deterministic unit vector derived from ``seed_text``."""
    state = zlib.crc32(seed_text.encode("utf-8")) or 1
    values = []
    for _ in range(dims):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        values.append(state / 0x3FFFFFFF - 1.0)
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def text_chunks(text: str, size: int = 16) -> list[str]:
    """Stream deltas: pieces of ``size`` characters (4 tokens each)."""
    return [text[i : i + size] for i in range(0, len(text), size)]


_TYPE_INTS = {1: "string", 2: "number", 3: "integer", 4: "boolean", 5: "array", 6: "object"}


def fill_schema(
    schema: Any, root: Any = None, *, required_only: bool = False, depth: int = 0
) -> Any:
    """A value matching a (JSON or Gemini) schema, with type-appropriate dummy values."""
    root = schema if root is None else root
    if not isinstance(schema, Mapping) or depth > 12:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return fill_schema(target, root, required_only=required_only, depth=depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf", "any_of"):
        options = [o for o in schema.get(key) or [] if isinstance(o, Mapping)]
        options = [o for o in options if str(o.get("type", "")).lower() != "null"] or options
        if options:
            return fill_schema(options[0], root, required_only=required_only, depth=depth + 1)
    kind: Any = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    kind = _TYPE_INTS.get(kind, kind) if isinstance(kind, int) else str(kind or "").lower()
    if kind == "object" or (not kind and "properties" in schema):
        props = schema.get("properties") or {}
        names = list(schema.get("required") or []) if required_only else list(props)
        names += [n for n in schema.get("required") or [] if n not in names]
        return {
            n: fill_schema(props.get(n, {"type": "string"}), root, depth=depth + 1) for n in names
        }
    if kind == "array":
        count = max(1, int(schema.get("minItems") or schema.get("min_items") or 1))
        item = fill_schema(schema.get("items") or {"type": "string"}, root, depth=depth + 1)
        return [item] * count
    if kind in ("integer", "number"):
        low = schema.get("minimum")
        value = max(1, math.ceil(float(low))) if low is not None else 1
        return value if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    fmt = schema.get("format")
    return {"date-time": "2024-01-01T00:00:00Z", "date": "2024-01-01"}.get(fmt or "", "sim")
