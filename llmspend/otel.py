"""OpenTelemetry export: one GenAI client span per recorded call, and the token metric.

Turned on by ``install(otel=True)`` or ``LLMSPEND_OTEL=1`` (the ``otel`` extra). Spans
and metrics go to OpenTelemetry's *global* tracer and meter providers (``trace.get_tracer``,
``metrics.get_meter``): llmspend never creates a provider or an exporter, so nothing leaves
the process unless the user configured OpenTelemetry to send it; with nothing configured
the API's no-op objects make it nearly free.

Attributes follow the OpenTelemetry GenAI semantic conventions (development status, as
in ``semantic-conventions-genai`` of 2026-12: ``gen_ai.provider.name``, which replaced
``gen_ai.system``), the cost attributes of the open cost proposal
(``semantic-conventions-genai`` PR #443, revision of 2026-08: ``gen_ai.usage.cost.amount``
in USD, ``.currency``, ``.source`` = ``local``), and ``llmspend.*`` for attribution and
refusals. Token counts are the stored row's (input includes cached and cache-write
tokens, output includes reasoning tokens, as the conventions ask). Prompts and
completions are never exported: a span is built from the row, which holds neither.

A span starts and ends at the call's own times, and its parent is the caller's current
context when the call began (read by a before-call hook: one ``contextvars`` read).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from .config import otel_enabled
from .errors import BudgetExceeded
from .extras import OTEL, require_extra

if TYPE_CHECKING:
    from .call import Call
    from .tracker import Tracker

__all__ = ["OtelExport", "configure", "enabled", "operation_name", "provider_name"]

log = logging.getLogger("llmspend")

SCOPE = "llmspend"

# llmspend's provider names → the conventions' well-known ``gen_ai.provider.name`` values
# (others pass through unchanged).
_PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "gcp.gemini",
    "azure": "azure.ai.openai",
    "xai": "x_ai",
}
# llmspend's ``api`` → ``gen_ai.operation.name`` (others pass through unchanged).
_OPERATIONS = {
    "chat.completions": "chat",
    "responses": "chat",
    "messages": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "embed_content": "embeddings",
    "generate_content": "generate_content",
}
_OPENAI_FAMILY = frozenset({"openai", "azure", "openai-compatible", "openrouter", "xai"})


def provider_name(provider: str) -> str:
    """The ``gen_ai.provider.name`` of an llmspend provider name."""
    return _PROVIDERS.get(provider, provider)


def operation_name(api: str) -> str:
    """The ``gen_ai.operation.name`` of an llmspend ``api``."""
    return _OPERATIONS.get(api, api)


def _require_api() -> Any:
    require_extra("OpenTelemetry export", *OTEL)
    import opentelemetry
    import opentelemetry.trace

    return opentelemetry


class OtelExport:
    """The listeners a tracker runs when export is on: :meth:`capture` before a call (the
    caller's context), :meth:`after_record` and :meth:`on_refusal` after its row."""

    def __init__(self) -> None:
        _require_api()
        from opentelemetry import context, metrics, trace

        self._get_context = context.get_current
        self._trace = trace
        self.tracer = trace.get_tracer(SCOPE)
        meter = metrics.get_meter(SCOPE)
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=[
                1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                16777216, 67108864,
            ],
        )  # fmt: skip
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=[
                0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                40.96, 81.92,
            ],
        )  # fmt: skip

    # -- listeners (must not raise: the tracker logs what they do) --------------------------
    def capture(self, call: Call) -> None:
        """Before a call is sent: remember the caller's current context (the span's parent)."""
        call.otel_context = self._get_context()

    def after_record(self, call: Call, row: dict[str, Any]) -> None:
        """A span for a recorded call (a refused one waits for :meth:`on_refusal`)."""
        if row["status"] != "refused":
            self._emit(call, row, None)

    def on_refusal(self, call: Call, exc: Exception) -> None:
        """A span, in error, for a call a budget refused (nothing was sent)."""
        if call.row is not None:
            self._emit(call, call.row, exc)

    # -- the span and the metrics -----------------------------------------------------------
    def _emit(self, call: Call, row: dict[str, Any], refusal: Exception | None) -> None:
        op = operation_name(call.api)
        start = int(call.epoch * 1e9)
        latency = row["latency_ms"] or 0.0
        status = row["status"]
        trace = self._trace
        span = self.tracer.start_span(
            f"{op} {call.model}", context=call.otel_context, kind=trace.SpanKind.CLIENT,
            start_time=start,
        )  # fmt: skip
        if span.is_recording():  # with no SDK configured: a no-op span, nothing to build
            span.set_attributes(span_attributes(call, row))
            if refusal is not None:
                span.set_attributes(refusal_attributes(refusal))
                span.set_status(trace.Status(trace.StatusCode.ERROR, "refused by a budget"))
            elif status == "error":
                span.set_status(trace.Status(trace.StatusCode.ERROR, row["error_type"] or None))
        span.end(end_time=start + int(latency * 1e6))
        if refusal is not None:
            return  # nothing was sent: no operation to measure
        metric = {
            "gen_ai.operation.name": op,
            "gen_ai.provider.name": provider_name(call.provider),
            "gen_ai.request.model": call.model,
            "gen_ai.response.model": row["model"],
        }
        if status == "error":
            metric["error.type"] = row["error_type"] or "_OTHER"
        self.duration.record(latency / 1000, metric)
        if status != "error" or row["input_tokens"] or row["output_tokens"]:
            self.token_usage.record(row["input_tokens"], {**metric, "gen_ai.token.type": "input"})
            self.token_usage.record(row["output_tokens"], {**metric, "gen_ai.token.type": "output"})


def span_attributes(call: Call, row: dict[str, Any]) -> dict[str, Any]:
    """The attributes of a call's span, from its row (never its prompt or completion)."""
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": operation_name(call.api),
        "gen_ai.provider.name": provider_name(call.provider),
        "gen_ai.request.model": call.model,
        "gen_ai.usage.input_tokens": row["input_tokens"],
        "gen_ai.usage.output_tokens": row["output_tokens"],
        "gen_ai.usage.cache_read.input_tokens": row["cached_input_tokens"],
        "gen_ai.usage.cache_creation.input_tokens": row["cache_write_tokens"],
        "gen_ai.usage.reasoning.output_tokens": row["reasoning_tokens"],
        "llmspend.provider": call.provider,
        "llmspend.api": call.api,
        "llmspend.org": row["org_name"],
        "llmspend.project": row["project_name"],
        "llmspend.user": row["user_name"],
        "llmspend.status": row["status"],
        "llmspend.price_status": row["price_status"],
        "llmspend.streamed": bool(row["streamed"]),
        "llmspend.usage_estimated": bool(row["usage_estimated"]),
    }
    if row["status"] != "refused":  # a refused call was never sent: no model answered
        attrs["gen_ai.response.model"] = row["model"]
    if row["cost_nanos"] is not None:
        attrs["gen_ai.usage.cost.amount"] = row["cost_nanos"] / 1e9
        attrs["gen_ai.usage.cost.currency"] = "USD"
        attrs["gen_ai.usage.cost.source"] = "local"
        attrs["llmspend.cost_nanos"] = row["cost_nanos"]  # exact
    tier = call.service_tier
    if tier:
        attrs["llmspend.service_tier"] = tier
        if call.provider in _OPENAI_FAMILY:
            attrs["openai.response.service_tier"] = tier
    if row["request_id"]:
        attrs["gen_ai.response.id"] = row["request_id"]
    if row["error_type"]:
        attrs["error.type"] = row["error_type"]
    return attrs


def refusal_attributes(exc: Exception) -> dict[str, Any]:
    """``llmspend.refused`` and, for a budget's refusal, which budget and its numbers."""
    attrs: dict[str, Any] = {"llmspend.refused": True, "error.type": type(exc).__name__}
    if isinstance(exc, BudgetExceeded):
        for key in ("budget", "scope", "period"):
            value = getattr(exc, key, None)
            if value is not None:
                attrs[f"llmspend.budget.{key}"] = str(value)
        for key in ("limit", "spent", "estimate"):
            value = getattr(exc, key, None)
            if value is not None:
                attrs[f"llmspend.budget.{key}"] = float(value)
    return attrs


_lock = threading.Lock()
_wanted: bool | None = None  # the last explicit choice; None: the environment decides
_export: OtelExport | None = None


def enabled() -> bool:
    """Whether calls are exported now."""
    return _export is not None and _wanted is not False


def configure(tracker: Tracker, otel: bool | None) -> None:
    """Attach export to ``tracker`` (``otel=True``), detach it (``False``), or keep the
    last choice (``None``: on when ``LLMSPEND_OTEL`` says so, until told otherwise).
    Raises :class:`~llmspend.errors.ConfigError` when on without opentelemetry-api, and
    then changes nothing (the choice refused is not remembered)."""
    global _wanted, _export
    with _lock:
        wanted = _wanted if otel is None else otel
        on = wanted if wanted is not None else otel_enabled()
        if on and _export is None:
            _export = OtelExport()
        _wanted = wanted
        if _export is not None:
            _detach(tracker, _export)
            if on:
                tracker.before_call_hooks.insert(0, _export.capture)  # before any refusal
                tracker.after_record_hooks.append(_export.after_record)
                tracker.refusal_hooks.append(_export.on_refusal)


def _detach(tracker: Tracker, export: OtelExport) -> None:
    for hooks, hook in (
        (tracker.before_call_hooks, export.capture),
        (tracker.after_record_hooks, export.after_record),
        (tracker.refusal_hooks, export.on_refusal),
    ):
        while hook in hooks:
            hooks.remove(hook)  # type: ignore[arg-type]
