"""``llmspend report``: the papermill spend report, through the real entry point.

The report runs in a subprocess (``python -m llmspend report``) against a store with
known usage and budgets, on SQLite and PostgreSQL; the numbers in the HTML page are read
back and compared with ``records()`` and ``budget_status()``. Bad parameters fail in one
line before any notebook runs, and write nothing.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
import subprocess
import sys
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

import nbformat
import pytest

import llmspend
from llmspend.errors import ValidationError
from llmspend.money import format_usd
from llmspend.report import Window, filter_names, resolve_window

pytestmark = pytest.mark.timeout(180)


# -- helpers ------------------------------------------------------------------------------------


def run(
    *argv: str, home: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m llmspend report ARGV`` with a clean llmspend environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LLMSPEND_")}
    clean.update(LLMSPEND_HOME=str(home), LLMSPEND_USER="report-tester", **(env or {}))
    cmd = [sys.executable, "-m", "llmspend", "report", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=clean, timeout=150)


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


def tables(page: str) -> dict[str, list[list[str]]]:
    """Every titled table in the page: title → rows of cell texts (header row first)."""
    found: dict[str, list[list[str]]] = {}
    for block in re.findall(r'<div class="llmspend-table[^"]*"[^>]*>(.*?)</table>', page, re.S):
        title = re.match(r'\s*<div style="font-weight:600[^"]*">(.*?)</div>', block, re.S)
        rows = [
            [_text(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", tr, re.S)]
            for tr in re.findall(r"<tr>(.*?)</tr>", block, re.S)
        ]
        if title:
            found[_text(title.group(1))] = rows
    return found


def kpi(page: str, label: str) -> str:
    m = re.search(
        rf"<div class=.llmspend-kpi-label.>{re.escape(label)}</div>"
        r"<div class=.llmspend-kpi-value.>(.*?)</div>",
        page,
    )
    assert m, f"no {label!r} tile"
    return _text(m.group(1))


def column(rows: list[list[str]], key: str, header: str) -> dict[str, str]:
    """``{row[key]: row[header]}`` of a parsed table."""
    head = rows[0]
    k, h = head.index(key), head.index(header)
    return {r[k]: r[h] for r in rows[1:]}


def assert_offline(page: str) -> None:
    assert not re.search(r"<script[^>]+src\s*=", page, re.I), "a script is loaded"
    assert not re.search(r"<link[^>]+href\s*=\s*[\"']?https?:", page, re.I)
    assert "cdnjs" not in page and "unpkg.com" not in page and "require.min.js" not in page


def month_start(now: dt.datetime) -> dt.datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def seed(url: str) -> dict[str, Any]:
    """Known usage this month (and one row last month), three budgets. Returns what the
    store says: this month's records and the budget statuses."""
    from llmspend.tracker import Tracker, set_tracker

    tracker = Tracker(url, org="acme", project="churn", user="ana")
    old = set_tracker(tracker)
    try:
        import llmspend

        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        start = month_start(now)
        people = [("churn", "ana"), ("churn", "bo"), ("pricing", "chen")]
        rows: list[dict[str, Any]] = []
        for i in range(9):
            project, user = people[i % 3]
            rows.append(
                {
                    "ts": start + (now - start) * (i + 0.5) / 10,
                    "provider": "openai",
                    "api": "chat.completions",
                    "model": "gpt-4o-mini",
                    "org": "acme",
                    "project": project,
                    "user": user,
                    "input_tokens": 20_000 + 1_000 * i,
                    "output_tokens": 1_500 + 100 * i,
                    "status": "ok",
                }
            )
        common = {"provider": "openai", "api": "chat.completions", "org": "acme", "status": "ok"}
        rows += [
            {**common, "ts": start + (now - start) / 3, "model": "gpt-4o", "project": "churn",
             "user": "ana", "input_tokens": 900_000, "output_tokens": 90_000,
             "cost_usd": Decimal("1200.25")},
            {**common, "ts": start + (now - start) / 2, "provider": "google",
             "api": "generate_content", "model": "gemini-2.5-flash", "project": "pricing",
             "user": "chen", "input_tokens": 50_000, "output_tokens": 4_000,
             "cost_usd": Decimal("34.10")},
            {**common, "ts": start - dt.timedelta(days=2), "model": "gpt-4o",
             "project": "churn", "user": "ana", "input_tokens": 1_000, "output_tokens": 100,
             "cost_usd": Decimal("99")},
        ]  # fmt: skip
        assert llmspend.ingest(rows) == len(rows)
        llmspend.set_budget("org", "acme", 5000)
        llmspend.set_budget("project", "acme/churn", 1500, thresholds=(0.5, 0.8, 1.0))
        llmspend.set_budget("user", "acme/ana", 100, mode="soft")
        return {
            "records": llmspend.records(since=start),
            "statuses": {s.budget: s for s in llmspend.budget_status()},
        }
    finally:
        set_tracker(old)
        tracker.store.dispose()


def costs_by(frame: Any, key: str) -> dict[str, str]:
    return {
        name: format_usd(sum((c for c in group["cost_usd"] if c is not None), Decimal(0)))
        for name, group in frame.groupby(key)
    }


# -- the report, end to end -----------------------------------------------------------------------


def test_report_numbers_match_the_store(store_url: str, tmp_path: Path) -> None:
    known = seed(store_url)
    records, statuses = known["records"], known["statuses"]
    out, nb_out = tmp_path / "report.html", tmp_path / "report.ipynb"
    done = run(
        "--database-url", store_url, "--output", str(out), "--notebook-output", str(nb_out),
        "--json", home=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    total = sum((c for c in records["cost_usd"] if c is not None), Decimal(0))
    assert Decimal(summary["cost_usd"]) == total and summary["calls"] == len(records)
    assert summary["html"] == str(out) and summary["notebook"] == str(nb_out)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert summary["since"] == month_start(now).isoformat()  # default: this calendar month
    assert "password" not in done.stdout and done.stderr == ""

    page = out.read_text(encoding="utf-8")
    assert kpi(page, "Total spend") == format_usd(total)
    assert format_usd(total).startswith("$1,2")  # thousands separator, two decimals
    found = tables(page)
    by_model = found["By model"]
    assert column(by_model, "model", "cost") == costs_by(records, "model")
    assert column(by_model, "model", "calls") == {
        m: f"{n:,}" for m, n in records.groupby("model").size().items()
    }
    assert column(found["By project"], "project", "cost") == costs_by(records, "project")
    spenders = found["Top 10 users by spend"]
    assert column(spenders, "user", "cost") == costs_by(records, "user")
    assert [r[0] for r in spenders[1:]] == ["ana", "chen", "bo"]  # most expensive first
    for level, name, limit, state in (
        ("org", "acme", "$5,000.00", "ok"),
        ("project", "acme/churn", "$1,500.00", "warning"),
        ("user", "acme/ana", "$100.00", "exceeded"),
    ):
        rows = found[f"{level} budgets"]
        status = statuses[name]
        assert column(rows, "budget", "spent")[name] == format_usd(status.spent_usd)
        assert column(rows, "budget", "limit")[name] == limit
        assert column(rows, "budget", "state")[name] == status.state == state
    churn = records[records["project"] == "churn"]
    assert statuses["acme/churn"].spent_usd == sum(churn["cost_usd"], Decimal(0))

    # charts: inline SVG drawn locally; no scripts, no code
    svgs = re.findall(r"<svg\b.*?</svg>", page, re.S)
    assert len(svgs) >= 6
    drawn = "\n".join(svgs)
    for label in ("Spend by model", "gpt-4o-mini", "gemini-2.5-flash", "Budget status", "churn"):
        assert label in drawn, label
    assert_offline(page)
    assert "analytics.cost_breakdown" not in page and "import llmspend" not in page
    assert "Traceback" not in page and "No usage in this period." not in page
    # the executed notebook is kept; the store's URL reached the kernel through the
    # environment, not as a parameter (a password in it is not written into the notebook)
    nb = nbformat.read(nb_out, as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert 'database_url = ""' in injected.source and store_url not in injected.source
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]


def test_report_with_filters_and_a_past_period(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    records = seed(url)["records"]
    out = tmp_path / "churn.html"
    done = run(
        "--database-url", url, "--org", "acme", "--project", "churn", "--title", "Churn spend",
        "--output", str(out), home=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    churn = records[records["project"] == "churn"]
    total = sum(churn["cost_usd"], Decimal(0))
    assert f"{format_usd(total)} in {len(churn)} calls → {out}" in done.stdout
    page = out.read_text(encoding="utf-8")
    assert "<title>Churn spend</title>" in page and "org acme · project churn" in page
    assert kpi(page, "Total spend") == format_usd(total)
    found = tables(page)
    assert column(found["By model"], "model", "cost") == costs_by(churn, "model")
    assert set(column(found["Top 10 users by spend"], "user", "cost")) == {"ana", "bo"}
    assert "gemini-2.5-flash" not in column(found["By model"], "model", "cost")
    assert "project budgets" in found and "org budgets" not in found  # budgets of churn only

    # last month: only the one row from before this month
    past = tmp_path / "past.html"
    done = run("--database-url", url, "--period", "last-month", "-o", str(past), home=tmp_path)
    assert done.returncode == 0, done.stderr
    page = past.read_text(encoding="utf-8")
    assert kpi(page, "Total spend") == "$99.00"
    assert column(tables(page)["By model"], "model", "cost") == {"gpt-4o": "$99.00"}


def test_report_on_an_empty_store_renders(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    out = tmp_path / "empty.html"
    # the store comes from the environment, as under cron
    done = run("--output", str(out), home=tmp_path, env={"LLMSPEND_DATABASE_URL": url})
    assert done.returncode == 0, done.stderr
    assert f"$0.00 in 0 calls → {out}" in done.stdout
    page = out.read_text(encoding="utf-8")
    assert kpi(page, "Total spend") == "$0.00"
    for message in (
        "No usage in this period.",
        "No budgets set for this part of the hierarchy.",
        "No budget alerts in this period.",
        "no spend in this period",  # the charts say so too
    ):
        assert message in page, message
    assert "empty.sqlite" in page  # the store the notebook read
    assert "Traceback" not in page and 'data-mime-type="application/vnd.jupyter.stderr"' not in page
    assert_offline(page)
    assert (tmp_path / "empty.sqlite").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "last tuesday"], "since: cannot parse 'last tuesday' as a time"),
        (["--since", "2026-03-10", "--until", "2026-03-01"], "must be before until"),
        (["--org", "acmee"], "unknown org 'acmee' (the store knows: acme)"),
        (["--org", "acme", "--project", "churm"], "unknown project 'churm' in org acme"),
        (["--period", "fortnight"], "unknown period 'fortnight'"),
        (["--period", "month", "--since", "7d"], "either a period"),
        (["--decimals", "-1"], "decimals must be"),
        (["--timeout", "0"], "timeout must be a whole number of seconds of at least 1"),
        (["--kernel", "no-such-kernel"], "no Jupyter kernel named 'no-such-kernel'"),
    ],
)
def test_bad_parameters_fail_before_running(
    argv: list[str], message: str, tmp_path: Path, bad_store: str
) -> None:
    out = tmp_path / "bad.html"
    done = run("--database-url", bad_store, *argv, "--output", str(out), home=tmp_path)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.startswith("llmspend: error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stdout == "" and not out.exists()


@pytest.fixture(scope="module")
def bad_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store that knows org acme and project churn."""
    from llmspend.tracker import Tracker

    url = f"sqlite:///{tmp_path_factory.mktemp('bad') / 'store.sqlite'}"
    tracker = Tracker(url, org="acme", project="churn", user="ana")
    tracker.ingest([{"ts": dt.datetime(2026, 1, 5), "provider": "openai", "model": "gpt-4o",
                     "input_tokens": 10, "output_tokens": 5, "cost_usd": "0.01"}])  # fmt: skip
    tracker.store.dispose()
    return url


def test_usage_errors_and_missing_output_directory(tmp_path: Path, bad_store: str) -> None:
    done = run("--database-url", bad_store, "--output", str(tmp_path / "no" / "r.html"),
               home=tmp_path)  # fmt: skip
    assert done.returncode == 1 and "directory" in done.stderr and "does not exist" in done.stderr
    done = run("--no-such-option", home=tmp_path)
    assert done.returncode == 2 and "unrecognized arguments" in done.stderr
    done = run("--help", home=tmp_path)
    assert done.returncode == 0 and "--notebook-output" in done.stdout and "--period" in done.stdout


def test_a_failing_notebook_names_the_cell_and_error(tmp_path: Path, bad_store: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('period = ""\nsince = ""\nuntil = ""\ntitle = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell('raise KeyError("no such budget: acme/x")')]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    source = tmp_path / "failing.ipynb"
    nbformat.write(nb, source)
    out, kept = tmp_path / "r.html", tmp_path / "r.ipynb"
    done = run(
        "--database-url", bad_store, "--notebook", str(source), "-o", str(out),
        "--notebook-output", str(kept), home=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    # llmspend's own: one line (the kernel process shares stderr; libzmq may print an
    # assertion there as the failed kernel is shut down)
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("llmspend")]
    assert re.match(
        r"llmspend: error: the report notebook failed in cell \d+ \(raise KeyError", line
    )
    assert "KeyError: 'no such budget: acme/x'" in line
    assert not out.exists() and kept.exists()  # the executed notebook shows the traceback

    source.write_text("{not a notebook", encoding="utf-8")
    done = run("--database-url", bad_store, "--notebook", str(source), "-o", str(out),
               home=tmp_path)  # fmt: skip
    assert done.returncode == 1 and not out.exists()
    assert done.stderr.startswith(f"llmspend: error: the report notebook '{source}' could not run")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# -- periods (no notebook) ------------------------------------------------------------------------

NOW = dt.datetime(2026, 3, 15, 14, 30)


def test_periods() -> None:
    month = resolve_window(now=NOW)
    assert (month.since, month.until) == (dt.datetime(2026, 3, 1), dt.datetime(2026, 4, 1))
    assert month.label == "March 2026" and month.slug == "2026-03" and month.in_progress(NOW)
    assert resolve_window("", "", "", now=NOW) == month
    last = resolve_window("last-month", now=dt.datetime(2026, 1, 10))
    assert (last.since, last.until, last.label) == (
        dt.datetime(2025, 12, 1),
        dt.datetime(2026, 1, 1),
        "December 2025",
    )
    week = resolve_window("week", now=NOW)  # a Sunday: the week began on Monday the 9th
    assert week.since == dt.datetime(2026, 3, 9) and week.slug == "2026-W11"
    assert week.label == "week of 9 March 2026"
    assert resolve_window("quarter", now=NOW).label == "Q1 2026"
    assert resolve_window("last_year", now=NOW).slug == "2025"
    assert resolve_window("yesterday", now=NOW).label == "14 March 2026"
    span = resolve_window("7d", now=NOW)
    assert (span.since, span.until) == (NOW - dt.timedelta(days=7), NOW)
    assert resolve_window(since="2026-02-01", until="2026-03-01", now=NOW).label == "February 2026"
    custom = resolve_window(since="2026-02-03", until="2026-02-10", now=NOW)
    assert custom.label == "3 February 2026 – 9 February 2026"
    assert custom.slug == "2026-02-03_2026-02-09"
    assert resolve_window(since="2026-03-10", now=NOW).until == NOW
    assert resolve_window(until="2026-02-10", now=NOW).since == dt.datetime(2026, 2, 1)
    for bad in (("fortnight", None, None), (None, "nope", None), ("0d", None, None),
                (None, "2026-03-02", "2026-03-01")):  # fmt: skip
        with pytest.raises(ValidationError):
            resolve_window(*bad, now=NOW)


def test_previous_period_is_like_for_like() -> None:
    march = Window(dt.datetime(2026, 3, 1), dt.datetime(2026, 4, 1))
    before = march.previous(NOW)  # March 1–15 14:30 against the same stretch of February
    assert before.since == dt.datetime(2026, 2, 1)
    assert before.until == dt.datetime(2026, 2, 15, 14, 30)
    done = march.previous(dt.datetime(2026, 5, 1))
    assert (done.since, done.until) == (dt.datetime(2026, 2, 1), dt.datetime(2026, 3, 1))
    end_of = Window(dt.datetime(2026, 3, 1), dt.datetime(2026, 4, 1)).previous(
        dt.datetime(2026, 3, 31, 12)
    )
    assert end_of.until == dt.datetime(2026, 3, 1)  # February is shorter: all of it
    week = Window(dt.datetime(2026, 3, 9), dt.datetime(2026, 3, 16))
    assert week.previous(dt.datetime(2026, 4, 1)).since == dt.datetime(2026, 3, 2)


def test_filter_names() -> None:
    assert filter_names("") is None and filter_names(None) is None and filter_names([]) is None
    assert filter_names("acme, beta") == ["acme", "beta"]
    assert filter_names(["acme", "acme"]) == ["acme"]


def test_the_by_model_table_counts_the_calls_of_a_model_with_no_price(tmp_path: Path) -> None:
    """An unknown model's calls add nothing to the cost: the table says how many there are."""
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    base = {"ts": now, "provider": "openai", "org": "acme", "project": "churn", "user": "ana",
            "input_tokens": 1000, "output_tokens": 10, "status": "ok"}  # fmt: skip
    llmspend.install(url, org="acme", project="churn", user="ana")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the unknown model's warning
            llmspend.ingest(
                [base | {"model": "no-such-model-x"}] * 2 + [base | {"model": "gpt-4o"}]
            )
    finally:
        llmspend.uninstall()
    out = tmp_path / "r.html"
    done = run("--database-url", url, "--since", "1h", "-o", str(out), home=tmp_path)
    assert done.returncode == 0, done.stderr
    by_model = tables(out.read_text(encoding="utf-8"))["By model"]
    assert column(by_model, "model", "unpriced calls") == {"no-such-model-x": "2", "gpt-4o": "0"}
    assert column(by_model, "model", "cost")["no-such-model-x"] == "$0.00"
