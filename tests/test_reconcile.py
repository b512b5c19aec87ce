"""Reconciliation: providers' own cost exports against the store, per day × model."""

from __future__ import annotations

import csv
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pandas as pd
import pytest

import llmspend
from llmspend.cli import main
from llmspend.errors import ValidationError
from llmspend.reconciliation import model_key, read_export
from llmspend.sim import SimServer
from llmspend.sim.costs_api import clear_costs, set_costs

TODAY = dt.datetime.now(dt.UTC).date()
DAYS = [TODAY - dt.timedelta(days=d) for d in range(6, 1, -1)]  # five whole past days
MODELS = {
    "openai": ["gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06"],
    "anthropic": ["claude-sonnet-4-20250514"],
    "google": ["gemini-2.5-flash"],
}


def cost(day_index: int, model_index: int) -> Decimal:
    return Decimal("0.1") * (day_index + 1) + Decimal("0.013") * (model_index + 1)


def seed(provider: str) -> dict[tuple[dt.date, str], Decimal]:
    """Two calls per day and model (a known cost each); returns the recorded totals."""
    rows, totals = [], {}
    for d, day in enumerate(DAYS):
        for m, model in enumerate(MODELS[provider]):
            for hour in (3, 21):
                rows.append(
                    {
                        "ts": dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC),
                        "provider": provider,
                        "model": model,
                        "org": "acme",
                        "project": "churn",
                        "user": "ana",
                        "input_tokens": 1000,
                        "output_tokens": 100,
                        "status": "ok",
                        "cost_usd": cost(d, m),
                    }
                )
            totals[(day, model)] = 2 * cost(d, m)
    llmspend.ingest(rows)
    return totals


# The export is built from what was recorded, then two days of one model and a model the
# store never saw are changed: exactly those lines must differ.
CHANGED = {1: Decimal("0.50"), 3: Decimal("-0.30")}  # day index → billed minus recorded


def billed(totals: dict[tuple[dt.date, str], Decimal], model: str) -> dict[Any, Decimal]:
    out = dict(totals)
    for d, delta in CHANGED.items():
        out[(DAYS[d], model)] += delta
    out[(DAYS[2], "o3-2025-04-16")] = Decimal("1.25")  # never recorded
    return out


def epoch(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def openai_costs_json(amounts: dict[Any, Decimal]) -> dict[str, Any]:
    """A Costs API page grouped by line_item: each amount split into input and output."""
    data = []
    for day in sorted({k[0] for k in amounts}):
        results = []
        for (d, model), usd in amounts.items():
            if d != day:
                continue
            part = (usd * Decimal("0.75")).quantize(Decimal("0.000001"))
            for item, value in ((f"{model}, input", part), (f"{model}, output", usd - part)):
                results.append(
                    {
                        "object": "organization.costs.result",
                        "amount": {"value": float(value), "currency": "usd"},
                        "line_item": item,
                        "project_id": "proj_1",
                    }
                )
        data.append(
            {
                "object": "bucket",
                "start_time": epoch(day),
                "end_time": epoch(day) + 86400,
                "results": results,
            }
        )
    return {"object": "page", "data": data, "has_more": False, "next_page": None}


def assert_exactly_the_changed_lines(result: Any, model: str, provider: str) -> None:
    diff = result.differences
    got = {(r.day, r.model): (r.state, r.diff_usd) for r in diff.itertuples()}
    want = {(DAYS[d], model_key(model)): ("differs", delta) for d, delta in CHANGED.items()}
    want[(DAYS[2], "o3")] = ("not recorded", Decimal("1.25"))
    assert set(got) == set(want), got
    for key, (state, delta) in want.items():
        assert got[key][0] == state
        assert abs(got[key][1] - delta) < Decimal("0.000005"), (key, got[key])
    assert set(result.frame["provider"]) == {provider}
    assert (result.frame["state"] == "match").sum() == len(result.frame) - 3
    line = result.frame[
        (result.frame["day"] == DAYS[1]) & (result.frame["model"] == model_key(model))
    ]
    (pct,) = line["diff_pct"]
    (recorded,) = line["recorded_usd"]
    assert pct == pytest.approx(float(Decimal("0.50") / recorded * 100), rel=1e-3)
    (calls,) = line["calls"]
    assert calls == 2


def test_openai_costs_json(installed: Any, tmp_path: Path) -> None:
    totals = seed("openai")
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(openai_costs_json(billed(totals, MODELS["openai"][0]))))
    result = llmspend.reconcile(path)
    assert result.source == "openai-costs"
    assert_exactly_the_changed_lines(result, MODELS["openai"][0], "openai")
    assert (result.first_day, result.last_day) == (DAYS[0], DAYS[-1])
    t = result.totals
    assert t["diff_usd"] == pytest.approx(Decimal("0.50") - Decimal("0.30") + Decimal("1.25"))
    assert "3 of" in repr(result)


def test_openai_cost_csv(installed: Any, tmp_path: Path) -> None:
    totals = seed("openai")
    page = openai_costs_json(billed(totals, MODELS["openai"][1]))
    path = tmp_path / "costs.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "start_time",
                "end_time",
                "start_time_iso",
                "line_item",
                "amount_value",
                "amount_currency",
                "project_id",
            ]
        )
        for b in page["data"]:
            iso = dt.datetime.fromtimestamp(b["start_time"], dt.UTC).isoformat()
            for r in b["results"]:
                w.writerow(
                    [
                        b["start_time"],
                        b["end_time"],
                        iso,
                        r["line_item"],
                        repr(r["amount"]["value"]),
                        "usd",
                        r["project_id"],
                    ]
                )
    result = llmspend.reconcile(str(path))
    assert result.source == "openai-cost-csv"
    assert_exactly_the_changed_lines(result, MODELS["openai"][1], "openai")


def test_anthropic_cost_report(installed: Any) -> None:
    totals = seed("anthropic")
    amounts = billed(totals, MODELS["anthropic"][0])
    data = []
    for day in sorted({k[0] for k in amounts}):
        results = [
            {
                "currency": "USD",
                "amount": str(usd * 100),
                "workspace_id": None,
                "description": f"{model} usage",
                "cost_type": "tokens",
                "model": model,
                "token_type": "output_tokens",
                "service_tier": "standard",
            }
            for (d, model), usd in amounts.items()
            if d == day
        ]
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        data.append(
            {
                "starting_at": start.isoformat().replace("+00:00", "Z"),
                "ending_at": (start + dt.timedelta(days=1)).isoformat(),
                "results": results,
            }
        )
    result = llmspend.reconcile({"data": data, "has_more": False, "next_page": None})
    assert result.source == "anthropic-cost-report"
    assert_exactly_the_changed_lines(result, MODELS["anthropic"][0], "anthropic")


def test_google_cloud_billing_export(installed: Any, tmp_path: Path) -> None:
    totals = seed("google")
    amounts = billed(totals, "gemini-2.5-flash")
    path = tmp_path / "billing.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "billing_account_id",
                "service.description",
                "sku.description",
                "usage_start_time",
                "usage_end_time",
                "project.id",
                "cost",
                "currency",
            ]
        )
        w.writerow(
            ["X", "Compute Engine", "N1 core", f"{DAYS[0]} 00:00:00 UTC", "", "p", "9", "USD"]
        )
        for (day, model), usd in amounts.items():
            name = "Gemini 2.5 Flash" if model == "gemini-2.5-flash" else "o3"
            half = usd / 2
            for kind, value in (("Input Text Tokens", half), ("Output Text Tokens", usd - half)):
                w.writerow(
                    [
                        "X",
                        "Gemini API",
                        f"{name} {kind}",
                        f"{day} 05:00:00 UTC",
                        "",
                        "my-proj",
                        str(value),
                        "USD",
                    ]
                )
    result = llmspend.reconcile(path)
    assert result.source == "gcp-billing"
    diff = result.differences
    got = {(r.day, r.model): r.diff_usd for r in diff.itertuples()}
    assert got == {(DAYS[d], "gemini-2.5-flash"): delta for d, delta in CHANGED.items()} | {
        (DAYS[2], "(other)"): Decimal("1.25")
    }


def test_usage_csv_is_priced_by_the_price_book(installed: Any, tmp_path: Path) -> None:
    day = DAYS[0]
    price = llmspend.price(
        "gpt-4o-mini",
        provider="openai",
        input_tokens=10_000,
        output_tokens=2_000,
        at=day.isoformat(),
    )
    llmspend.ingest(
        [
            {
                "ts": dt.datetime(day.year, day.month, day.day, 12, tzinfo=dt.UTC),
                "provider": "openai",
                "model": "gpt-4o-mini",
                "input_tokens": 10_000,
                "output_tokens": 2_000,
                "status": "ok",
            }
        ]
    )
    path = tmp_path / "usage.csv"
    path.write_text(
        "start_time_iso,model,input_tokens,input_cached_tokens,output_tokens,num_model_requests\n"
        f"{day}T00:00:00+00:00,gpt-4o-mini-2024-07-18,10000,0,2000,1\n"
    )
    result = llmspend.reconcile(path)
    assert result.source == "openai-usage"
    (row,) = result.frame.itertuples()
    assert row.billed_usd == price.total_usd == row.recorded_usd and row.state == "match"


def test_cli_prints_the_differences_and_writes_csv_and_parquet(
    installed: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    totals = seed("openai")
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(openai_costs_json(billed(totals, MODELS["openai"][0]))))
    url = str(installed.settings.database_url)
    out = tmp_path / "lines.csv"
    assert main(["reconcile", str(path), "--database-url", url, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 of 11 lines differ" in printed
    assert "not recorded" in printed and "differs" in printed and "+" in printed
    frame = pd.read_csv(out, dtype=str)
    assert len(frame) == 11 and set(frame["state"]) == {"match", "differs", "not recorded"}
    o3 = frame[frame["model"] == "o3"].iloc[0]
    assert Decimal(o3["billed_usd"]) == Decimal("1.25") and Decimal(o3["recorded_usd"]) == 0
    pq = tmp_path / "lines.parquet"
    assert main(["reconcile", str(path), "--database-url", url, "--out", str(pq), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["lines"]) == 3 and doc["source"] == "openai-costs"
    table = pd.read_parquet(pq)
    assert sum(table["billed_usd"], Decimal(0)) == sum(frame["billed_usd"].map(Decimal))


def test_unreadable_exports_say_so(tmp_path: Path) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValidationError, match="not a cost export"):
        read_export(bad)
    with pytest.raises(ValidationError, match="no such file"):
        read_export(tmp_path / "missing.json")
    assert main(["reconcile", str(bad)]) == 1


def test_sim_costs_api_through_the_openai_admin_client(
    installed: Any, fresh_sim: SimServer
) -> None:
    client = openai.OpenAI(
        api_key="x", admin_api_key="admin", base_url=fresh_sim.openai_base_url, max_retries=0
    )
    for _ in range(2):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    rows = llmspend.records()
    recorded = sum(rows["cost_usd"], Decimal(0))
    yesterday = TODAY - dt.timedelta(days=1)
    set_costs(
        fresh_sim,
        [
            {"day": TODAY, "line_item": "gpt-4o-mini-2024-07-18, input", "amount": recorded},
            {"day": yesterday, "line_item": "gpt-4o-2024-08-06, output", "amount": "0.75"},
        ],
    )
    try:
        page = client.admin.organization.usage.costs(
            start_time=epoch(yesterday), group_by=["line_item"], limit=7
        )
        assert [len(b.results) for b in page.data] == [1, 1]
        result = llmspend.reconcile(page, providers="openai-compatible")
        got = {(r.day, r.model): r.state for r in result.frame.itertuples()}
        assert got == {(TODAY, "gpt-4o-mini"): "match", (yesterday, "gpt-4o"): "not recorded"}
        # plain HTTP, a page at a time; and the admin key is asked for
        url = fresh_sim.openai_base_url + "/organization/costs"
        first = httpx.get(
            url,
            params={"start_time": epoch(yesterday), "limit": 1},
            headers={"Authorization": "Bearer admin"},
        ).json()
        assert first["has_more"] is True and len(first["data"]) == 1
        second = httpx.get(
            url,
            params={"start_time": epoch(yesterday), "limit": 1, "page": first["next_page"]},
            headers={"Authorization": "Bearer admin"},
        ).json()
        both = llmspend.reconcile([first, second], providers=["openai-compatible"])
        assert both.frame.equals(result.frame)
        assert httpx.get(url, params={"start_time": 0}).status_code == 401
    finally:
        clear_costs(fresh_sim)


def test_chart_of_the_differences(installed: Any) -> None:
    from llmspend.notebook import charts

    totals = seed("openai")
    result = llmspend.reconcile(openai_costs_json(billed(totals, MODELS["openai"][0])))
    svg = charts.to_svg(charts.reconciliation(result.frame))
    assert svg.startswith("<svg") and "gpt-4o-mini" in svg and "o3" in svg
    assert "<svg" in charts.to_svg(charts.reconciliation(result.frame.iloc[:0]))


def test_the_spend_report_shows_the_lines_that_differ(installed: Any, tmp_path: Path) -> None:
    totals = seed("openai")
    model = MODELS["openai"][0]
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(openai_costs_json(billed(totals, model))))
    url = str(installed.settings.database_url)
    html = tmp_path / "report.html"
    window = ["--since", DAYS[0].isoformat(), "--until", TODAY.isoformat()]
    args = ["report", *window, "--database-url", url, "--no-progress", "--output", str(html)]
    assert main([*args, "--reconcile", str(path)]) == 0
    page = html.read_text(encoding="utf-8")
    section = page[page.index("Against the provider") :]
    assert "3 of 11 day × model lines differ" in section
    for d in CHANGED:
        assert DAYS[d].isoformat() in section
    assert "not recorded" in section and ">o3<" in section
    assert DAYS[0].isoformat() not in section.split("<table", 1)[1]  # a matching day: not listed
    assert "<svg" in section
    # without an export the report has no such section; an unreadable one fails up front
    plain = tmp_path / "plain.html"
    assert main([*args[:-1], str(plain)]) == 0
    assert "Against the provider" not in plain.read_text(encoding="utf-8")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    never = tmp_path / "never.html"
    assert main([*args[:-1], str(never), "--reconcile", str(bad)]) == 1
    assert not never.exists()


def test_days_the_costs_api_billed_nothing_are_compared(
    installed: Any, fresh_sim: SimServer
) -> None:
    """The Costs API answers a bucket for every day asked, an empty one for a day billed
    nothing: calls recorded on such a day are "not billed", also when every day is empty
    (the export covers its buckets' days, not only the days it has lines for)."""
    days = [TODAY - dt.timedelta(days=d) for d in (3, 2, 1)]
    llmspend.ingest(
        [
            {"ts": dt.datetime(d.year, d.month, d.day, 12, tzinfo=dt.UTC), "provider": "openai",
             "model": "gpt-4o-mini", "org": "acme", "project": "churn", "user": "ana",
             "input_tokens": 10, "output_tokens": 10, "status": "ok",
             "cost_usd": Decimal("0.50")}
            for d in days
        ]
    )  # fmt: skip
    client = openai.OpenAI(
        api_key="x", admin_api_key="admin", base_url=fresh_sim.openai_base_url, max_retries=0
    )
    window = {"start_time": epoch(days[0]), "end_time": epoch(TODAY), "group_by": ["line_item"]}
    set_costs(fresh_sim, [{"day": days[1], "line_item": "gpt-4o-mini, input", "amount": "0.5"}])
    try:
        page = client.admin.organization.usage.costs(**window)  # type: ignore[arg-type]
        assert [len(b.results) for b in page.data] == [0, 1, 0]
        result = llmspend.reconcile(page)
        got = {r.day: (r.state, r.diff_usd) for r in result.frame.itertuples()}
        assert got == {
            days[0]: ("not billed", Decimal("-0.5")),
            days[1]: ("match", Decimal("0")),
            days[2]: ("not billed", Decimal("-0.5")),
        }
        assert (result.first_day, result.last_day) == (days[0], days[2])
        set_costs(fresh_sim, [])
        empty = llmspend.reconcile(client.admin.organization.usage.costs(**window))  # type: ignore[arg-type]
        assert list(empty.frame["state"]) == ["not billed"] * 3
        assert empty.totals["diff_usd"] == Decimal("-1.5")
    finally:
        clear_costs(fresh_sim)


def test_an_export_missing_its_later_pages_is_said(installed: Any) -> None:
    page = openai_costs_json({(DAYS[0], "gpt-4o-mini"): Decimal("1")})
    with pytest.warns(llmspend.LLMSpendWarning, match="has_more"):
        llmspend.reconcile(dict(page, has_more=True, next_page="x"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"data": "x"}', "list of buckets"),
        ('{"data": [{"start_time": 1796256000, "results": ["x"]}]}', "list of objects"),
        ('{"data": [{"start_time": 1796256000, "results": [{"amount": 5, "line_item": "a"}]}]}',
         "amount"),
        ('{"data": [{"start_time": 1796256000, "results": [{"amount": {"value": 1}}]}]}',
         "group_by=line_item"),
        (b"\xff\xfe\x00 not text", "not UTF-8"),
    ],
)  # fmt: skip
def test_malformed_exports_fail_in_one_line(
    installed: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: Any, message: str
) -> None:
    path = tmp_path / "costs.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ValidationError, match=message):
        llmspend.reconcile(path)
    url = str(installed.settings.database_url)
    assert main(["reconcile", str(path), "--database-url", url]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_tolerance_is_checked_and_out_takes_a_format(
    installed: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "costs.json"
    path.write_text(json.dumps({"object": "page", "data": [], "has_more": False}))
    for bad in ("abc", "-1", "nan", "inf"):
        with pytest.raises(ValidationError, match="tolerance"):
            llmspend.reconcile(path, tolerance_usd=bad)
    url = str(installed.settings.database_url)
    assert main(["reconcile", str(path), "--database-url", url, "--tolerance", "abc"]) == 1
    assert "tolerance" in capsys.readouterr().err
    out = tmp_path / "lines.txt"
    args = ["reconcile", str(path), "--database-url", url, "--out", str(out), "--format", "csv"]
    assert main(args) == 0
    assert "no days" in capsys.readouterr().out
    assert out.read_text().startswith("day,provider,model")


def test_cli_json_is_strict_json(
    installed: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A line nothing was recorded for has ``diff_pct`` inf in the frame: ``--json`` (for
    scripts) says null, not ``Infinity``, which JSON parsers reject."""
    totals = seed("openai")
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(openai_costs_json(billed(totals, MODELS["openai"][0]))))
    url = str(installed.settings.database_url)
    assert main(["reconcile", str(path), "--database-url", url, "--json", "--all"]) == 0

    def reject(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    doc = json.loads(capsys.readouterr().out, parse_constant=reject)
    o3 = next(line for line in doc["lines"] if line["model"] == "o3")
    assert o3["state"] == "not recorded" and o3["diff_pct"] is None
    assert any(isinstance(line["diff_pct"], float) for line in doc["lines"])


def test_refused_calls_are_not_compared(installed: Any, fresh_sim: SimServer) -> None:
    """A call a budget refused never reached the provider: it is not one of the day's
    recorded calls (a billed model with only refused calls is "not recorded")."""
    client = openai.OpenAI(api_key="x", base_url=fresh_sim.openai_base_url, max_retries=0)
    llmspend.set_budget("project", "acme/churn", "0.0000001", mode="hard")
    with pytest.raises(llmspend.BudgetExceeded):
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=500
        )
    assert list(llmspend.records()["status"]) == ["refused"]
    page = openai_costs_json({(TODAY, "gpt-4o-2024-08-06"): Decimal("0.40")})
    result = llmspend.reconcile(page, providers="openai-compatible")
    ((state, calls, recorded),) = result.frame[["state", "calls", "recorded_usd"]].itertuples(
        index=False
    )
    assert (state, calls, recorded) == ("not recorded", 0, 0)


def test_google_billing_credits_as_a_number_or_a_json_list(tmp_path: Path) -> None:
    """Credits are applied whether the CSV holds their sum or BigQuery's JSON list."""
    path = tmp_path / "billing.csv"
    listed = json.dumps([{"name": "Free tier", "amount": -0.25, "type": "FREE_TIER"},
                         {"name": "Promo", "amount": -0.05}])  # fmt: skip
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["service.description", "sku.description", "usage_start_time", "cost",
                    "credits", "currency"])  # fmt: skip
        w.writerow(["Gemini API", "Gemini 2.5 Flash Input Text Tokens",
                    f"{DAYS[0]} 05:00:00 UTC", "1.00", listed, "USD"])  # fmt: skip
        w.writerow(["Gemini API", "Gemini 2.5 Flash Output Text Tokens",
                    f"{DAYS[0]} 06:00:00 UTC", "2.00", "-0.5", "USD"])  # fmt: skip
    export = read_export(path)
    assert [line.usd for line in export.lines] == [Decimal("0.70"), Decimal("1.50")]
    path.write_text(path.read_text().replace("-0.5", "[not json"))
    with pytest.raises(ValidationError, match="credits"):
        read_export(path)
