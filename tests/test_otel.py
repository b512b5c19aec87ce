"""OpenTelemetry export: real openai SDK calls against the simulator, the OpenTelemetry SDK's
in-memory span exporter and metric reader configured here as a user would."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import llmspend
from llmspend.sim import SimServer

PROMPT = "the secret plan is tangerine"

_EXPORTER = InMemorySpanExporter()
_READER = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})


@pytest.fixture(scope="module")
def otel_sdk() -> tuple[InMemorySpanExporter, InMemoryMetricReader]:
    """The global providers, configured once for this process (OpenTelemetry allows one)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))
    return _EXPORTER, _READER


@pytest.fixture
def exported(
    otel_sdk: tuple[InMemorySpanExporter, InMemoryMetricReader],
    installed: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Any, InMemorySpanExporter, InMemoryMetricReader]]:
    """llmspend installed with ``otel=True``; the export choice is forgotten afterwards."""
    monkeypatch.setattr("llmspend.otel._wanted", None)
    exporter, reader = otel_sdk
    tracker = llmspend.install(otel=True)
    assert tracker is installed
    exporter.clear()
    reader.get_metrics_data()  # drain what earlier tests recorded
    yield tracker, exporter, reader
    llmspend.install(otel=False)


def ours(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.instrumentation_scope is not None and s.instrumentation_scope.name == "llmspend"
    ]


def client(sim: SimServer) -> openai.OpenAI:
    return openai.OpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0)


def chat(sim: SimServer, text: str = PROMPT) -> Any:
    return client(sim).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}], max_tokens=50
    )


def test_one_span_per_call_with_the_rows_tokens_and_cost(
    exported: Any, fresh_sim: SimServer
) -> None:
    tracker, exporter, _ = exported
    chat(fresh_sim, PROMPT + " #sim:cached=4")
    (span,) = ours(exporter)
    (row,) = list(tracker.recent)
    a = dict(span.attributes or {})
    assert span.name == "chat gpt-4o-mini"
    assert span.kind is SpanKind.CLIENT
    assert span.parent is None
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai-compatible"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.response.model"] == row["model"]
    assert a["gen_ai.usage.input_tokens"] == row["input_tokens"] > 0
    assert a["gen_ai.usage.output_tokens"] == row["output_tokens"] > 0
    assert a["gen_ai.usage.cache_read.input_tokens"] == row["cached_input_tokens"] == 4
    assert a["gen_ai.usage.cache_creation.input_tokens"] == row["cache_write_tokens"]
    assert a["gen_ai.usage.reasoning.output_tokens"] == row["reasoning_tokens"]
    assert row["cost_nanos"] > 0
    assert a["llmspend.cost_nanos"] == row["cost_nanos"]
    assert Decimal(str(a["gen_ai.usage.cost.amount"])) == Decimal(row["cost_nanos"]) / 10**9
    assert a["gen_ai.usage.cost.currency"] == "USD"
    assert a["gen_ai.usage.cost.source"] == "local"
    assert (a["llmspend.org"], a["llmspend.project"], a["llmspend.user"]) == (
        "acme",
        "churn",
        "ana",
    )
    assert span.status.status_code is StatusCode.UNSET
    # the call's own times
    assert span.start_time is not None and span.end_time is not None
    start = int(row["ts"].replace(tzinfo=dt.UTC).timestamp() * 1e9)
    assert abs(span.start_time - start) < 1000
    assert span.end_time - span.start_time == int(row["latency_ms"] * 1e6)


def test_token_usage_metric(exported: Any, fresh_sim: SimServer) -> None:
    tracker, _, reader = exported
    chat(fresh_sim)
    (row,) = list(tracker.recent)
    points: dict[str, Any] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            if sm.scope.name != "llmspend":
                continue
            for m in sm.metrics:
                if m.name == "gen_ai.client.token.usage":
                    assert m.unit == "{token}"
                    for p in m.data.data_points:
                        points[p.attributes["gen_ai.token.type"]] = p
    assert set(points) == {"input", "output"}
    assert points["input"].sum == row["input_tokens"]
    assert points["output"].sum == row["output_tokens"]
    assert points["input"].attributes["gen_ai.provider.name"] == "openai-compatible"
    assert points["input"].attributes["gen_ai.request.model"] == "gpt-4o-mini"


def test_a_call_inside_the_callers_span_is_its_child(exported: Any, fresh_sim: SimServer) -> None:
    _, exporter, _ = exported
    tracer = trace.get_tracer("the-app")
    with tracer.start_as_current_span("handle request") as parent:
        chat(fresh_sim)
    (span,) = ours(exporter)
    assert span.parent is not None
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.context is not None
    assert span.context.trace_id == parent.get_span_context().trace_id


def test_streamed_call_is_one_span(exported: Any, fresh_sim: SimServer) -> None:
    tracker, exporter, _ = exported
    stream = client(fresh_sim).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for _ in stream:
        pass
    (span,) = ours(exporter)
    (row,) = list(tracker.recent)
    assert span.attributes is not None
    assert span.attributes["llmspend.streamed"] is True
    assert span.attributes["gen_ai.usage.output_tokens"] == row["output_tokens"] > 0


def test_a_refused_call_is_an_error_span(exported: Any, fresh_sim: SimServer) -> None:
    tracker, exporter, _ = exported
    llmspend.set_budget("org", "acme", Decimal("0.000001"), "day")
    with pytest.raises(llmspend.BudgetExceeded):
        chat(fresh_sim)
    assert fresh_sim.request_count == 0
    (span,) = ours(exporter)
    (row,) = list(tracker.recent)
    assert row["status"] == "refused"
    a = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert a["llmspend.refused"] is True
    assert a["llmspend.status"] == "refused"
    assert a["error.type"] == "BudgetExceeded"
    assert a["llmspend.budget.scope"] == "org"
    assert a["llmspend.budget.limit"] == pytest.approx(0.000001)
    assert a["gen_ai.usage.input_tokens"] == 0
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert "gen_ai.response.model" not in a  # nothing was sent: no model answered


def test_a_provider_error_is_an_error_span(exported: Any, fresh_sim: SimServer) -> None:
    _, exporter, _ = exported
    with pytest.raises(openai.InternalServerError):
        chat(fresh_sim, "boom #sim:error=500")
    (span,) = ours(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"]


def test_no_prompt_or_completion_in_any_attribute(exported: Any, fresh_sim: SimServer) -> None:
    _, exporter, _ = exported
    resp = chat(fresh_sim)
    answer = resp.choices[0].message.content
    (span,) = ours(exporter)
    text = json.dumps(dict(span.attributes or {}), default=str)
    assert "tangerine" not in text
    assert not answer or answer not in text
    assert not span.events


def test_off_by_default_and_turned_off(exported: Any, fresh_sim: SimServer) -> None:
    tracker, exporter, _ = exported
    llmspend.install(otel=False)
    chat(fresh_sim)
    assert ours(exporter) == []
    llmspend.install()  # None keeps the choice
    chat(fresh_sim)
    assert ours(exporter) == []
    assert len(tracker.recent) == 2


def test_environment_turns_it_on(
    otel_sdk: Any, installed: Any, fresh_sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter, _ = otel_sdk
    monkeypatch.setattr("llmspend.otel._wanted", None)
    monkeypatch.setenv("LLMSPEND_OTEL", "1")
    llmspend.install()
    exporter.clear()
    chat(fresh_sim)
    assert len(ours(exporter)) == 1
    llmspend.install(otel=False)


def test_nothing_configured_nothing_breaks_nothing_exported(
    fresh_sim: SimServer, tmp_path: Any
) -> None:
    """A fresh process with no OpenTelemetry SDK configured: the call is recorded, the
    API's no-op tracer gets the span, and no SDK, exporter or socket is created."""
    script = textwrap.dedent(
        f"""
        import sys, warnings, logging
        warnings.simplefilter("error")
        errors = []
        logging.getLogger("llmspend").addHandler(
            type("H", (logging.Handler,), {{"emit": lambda self, r: errors.append(r)}})()
        )
        import openai, llmspend
        from opentelemetry import trace
        t = llmspend.install("sqlite:///" + {str(tmp_path / "s.sqlite")!r}, otel=True)
        c = openai.OpenAI(api_key="x", base_url={fresh_sim.openai_base_url!r}, max_retries=0)
        c.chat.completions.create(model="gpt-4o-mini",
                                  messages=[{{"role": "user", "content": "hi"}}])
        assert len(t.recent) == 1 and t.recent[0]["status"] == "ok", list(t.recent)
        assert not errors, [r.getMessage() for r in errors]
        assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"
        assert not [m for m in sys.modules if m.startswith("opentelemetry.sdk")]
        assert not [m for m in sys.modules if m.startswith("opentelemetry.exporter")]
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["LLMSPEND_HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.fixture
def otel_api_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """As without the otel extra: export asked for raises MissingExtra; no choice made yet."""
    from llmspend import otel
    from llmspend.errors import MissingExtra

    def missing() -> Any:
        raise MissingExtra("OpenTelemetry export", "otel", ("opentelemetry.trace",))

    monkeypatch.setattr(otel, "_wanted", None)
    monkeypatch.setattr(otel, "_export", None)
    monkeypatch.setattr(otel, "_require_api", missing)
    monkeypatch.delenv("LLMSPEND_OTEL", raising=False)


def test_a_refused_otel_choice_is_not_remembered(
    installed: Any, fresh_sim: SimServer, otel_api_missing: None
) -> None:
    """install(otel=True) without the extra fails with MissingExtra; a plain install()
    after it (the user gave up on export) works and hooks the SDKs."""
    from llmspend import otel
    from llmspend.errors import MissingExtra

    with pytest.raises(MissingExtra):
        llmspend.install(otel=True)
    assert llmspend.install() is installed
    assert not otel.enabled()
    chat(fresh_sim)
    assert len(llmspend.records()) == 1


def test_a_refused_otel_choice_leaves_llmspend_not_installed(
    installed: Any, fresh_sim: SimServer, otel_api_missing: None
) -> None:
    """install(otel=True) refused from an uninstalled state leaves it uninstalled (it left
    the tracker counted as installed with no SDK hooked: calls went unrecorded), and a
    plain install() then records."""
    from llmspend.errors import MissingExtra
    from llmspend.tracker import installed_tracker

    llmspend.uninstall()
    with pytest.raises(MissingExtra):
        llmspend.install(otel=True)
    assert installed_tracker() is None
    llmspend.install()
    chat(fresh_sim)
    assert len(llmspend.records()) == 1
