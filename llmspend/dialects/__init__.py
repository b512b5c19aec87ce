"""Wire formats: what a provider request costs at worst, and what its response used.

A dialect is pure code over plain data (DESIGN house habit 16): it never imports an SDK,
the store, budgets or SQLAlchemy. The taps (:mod:`llmspend.providers`: SDK hooks and the
HTTP client libraries' transports) only find calls and hand the dialect what they saw;
the simulator (:mod:`llmspend.sim`) routes its requests with the same code. One module
per wire format:

* :mod:`llmspend.dialects.openai` — OpenAI-compatible HTTP (chat, completions, responses,
  embeddings, images, audio), for OpenAI, Azure, xAI, OpenRouter and any compatible host;
* :mod:`llmspend.dialects.gemini` — the Gemini REST API (generateContent,
  streamGenerateContent, embedContent, countTokens);
* :mod:`llmspend.dialects.anthropic` — Anthropic Messages (``/v1/messages``, count_tokens).

Every dialect offers the :class:`Dialect` interface: ``route(Request) -> Route | None``
(``None``: not a call llmspend tracks), ``read(api, body) -> Reading`` for a complete
response body and ``reader(api) -> StreamReader`` for a stream of events.
:mod:`llmspend.dialects.hosts` says which requests go to which dialect (the providers'
hosts and the endpoints users declare), for the transport taps.

The request view, the route and the reading are slotted dataclasses, treated as values
(made once, never changed): on the hot path a frozen dataclass costs a microsecond more to
build, three times over.

Provider objects are read through :func:`field` — the one usage-field reader — which takes
plain dicts (snake_case, or the camelCase of the REST JSON), the SDKs' pydantic models and
proto-plus messages alike, and never raises. :func:`tokens_from_bytes` is the one
bytes→tokens estimate (4 bytes a token, rounded up) used wherever a count must be guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..call import Usage

__all__ = [
    "Dialect",
    "Reading",
    "Request",
    "Route",
    "StreamReader",
    "count",
    "field",
    "text_bytes",
    "tokens_from_bytes",
]

_NOT_A_MODEL = object()
_CAMEL: dict[str, str] = {}


def _camel(snake: str) -> str:
    camel = _CAMEL.get(snake)
    if camel is None:
        head, *rest = snake.split("_")
        camel = _CAMEL[snake] = head + "".join(w.title() for w in rest)
    return camel


def field(obj: Any, name: str) -> Any:
    """``obj[name]`` for a mapping (else its camelCase twin), ``obj.name`` for an object;
    ``None`` when absent. Never raises.

    A pydantic model (the SDKs' types) keeps its fields in ``__dict__`` and the fields a
    provider added beyond them in ``__pydantic_extra__``: read there, a field the provider
    did not send costs no AttributeError raised and caught inside pydantic. Anything else
    (proto-plus messages, SDK properties) is read with ``getattr``.
    """
    if obj is None:
        return None
    if type(obj) is dict:
        value = obj.get(name)
        if value is None and "_" in name:
            return obj.get(_camel(name))
        return value
    values = getattr(obj, "__dict__", None)
    if values is not None and name in values:
        return values[name]
    try:
        extra = getattr(obj, "__pydantic_extra__", _NOT_A_MODEL)
    except Exception:
        extra = _NOT_A_MODEL
    if extra is not _NOT_A_MODEL:
        return extra.get(name) if type(extra) is dict else None
    if isinstance(obj, Mapping):
        try:
            value = obj.get(name)
            return obj.get(_camel(name)) if value is None and "_" in name else value
        except Exception:
            return None
    try:
        return getattr(obj, name, None)
    except Exception:  # an SDK property that refuses (e.g. an incomplete stream)
        return None


def count(value: Any) -> int | None:
    """A token count, or ``None`` when it is not a non-negative integer (bools excluded)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return int(value)
    return None


def text_bytes(text: Any) -> int:
    """UTF-8 length of a string (0 for anything else)."""
    if type(text) is str:
        return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return 0


def tokens_from_bytes(n: int) -> int:
    """The llmspend estimate of tokens for ``n`` bytes of text: ``ceil(n / 4)`` (0 below 0)."""
    return (n + 3) // 4 if n > 0 else 0


@dataclass(slots=True)
class Request:
    """One HTTP request as plain data: ``path`` without the query; ``body`` the JSON object
    (a mapping, or ``None``); ``host`` for provider detection."""

    method: str
    path: str
    body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = None
    host: str = ""
    query: Mapping[str, str] | None = None


@dataclass(slots=True)
class Route:
    """What a request is: a tracked call of ``api`` on ``model`` (``""`` when unnamed).

    ``billed`` is false for free calls (Gemini ``countTokens``). For the worst-case
    estimate: ``input_upper`` (a bound on input tokens) or, when ``None``, ``payload`` to
    count (:func:`llmspend.call.estimate_input_tokens`); ``output_cap`` from the request's
    ``max_tokens`` and the like (``None``: the model's cap).
    """

    provider: str
    api: str
    model: str
    billed: bool = True
    streamed: bool = False
    input_upper: int | None = None
    payload: Any = None
    output_cap: int | None = None


@dataclass(slots=True)
class Reading:
    """What a response said: ``usage`` (``None`` when absent or malformed: estimate),
    the model the provider names, its response id and service tier, the response's
    ``status`` where the format has one, and an ``error`` message when it reports failure."""

    usage: Usage | None
    model: str | None = None
    response_id: str | None = None
    service_tier: str | None = None
    status: str | None = None
    error: str | None = None
    complete: bool = True
    out_bytes: int = 0


class StreamReader(Protocol):
    """Reads a stream's events one at a time; :meth:`result` says what they added up to."""

    def feed(self, event: Any) -> bool:
        """Account for one event; ``True`` when it carried nothing but usage."""
        ...

    def result(self) -> Reading:
        """The reading so far (``complete`` once the final event arrived)."""
        ...


class Dialect(Protocol):
    """The interface of a wire-format module (see the module docstring)."""

    def route(self, request: Request) -> Route | None: ...

    def read(self, api: str, body: Any) -> Reading: ...

    def reader(self, api: str) -> StreamReader: ...
