"""llmspend.analytics and budget_history() in team mode (issue 25): a gateway child process
(SQLite and PostgreSQL store) serves them; this process is the kernel, with
``LLMSPEND_GATEWAY_URL``, a gateway key and no database. Each frame equals the solo-mode frame
computed on the gateway's store over what the caller may read (columns, dtypes, Decimal
objects, tz-aware periods, ``.attrs``), and budget rows show only budgets the caller sees."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import llmspend
from llmspend import analytics, teamwire
from llmspend.budgets import manage
from llmspend.errors import BudgetError, ConfigError, PermissionDenied, ValidationError
from llmspend.teamclient import client
from llmspend.timeutil import utcnow
from llmspend.tracker import Tracker
from tests import teamstack
from tests.test_analytics import make_rows

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::UserWarning")

UTC = dt.UTC
#: The budgets set, and those that apply to bob (member of acme/churn).
BUDGETS = [
    ("org", "acme"),
    ("org", "beta"),
    ("project", "acme/churn"),
    ("project", "acme/web"),
    ("user", "acme/churn/bob"),
    ("user", "acme/churn/ana"),
    ("user", "acme/bob"),
]
BOBS = {"acme", "acme/churn", "acme/churn/bob", "acme/bob"}


class Stack(teamstack.Stack):
    def __init__(self, tmp: Path, db: str | None) -> None:
        super().__init__(tmp, db)
        self.tracker = Tracker(self.gw.db, org="acme", project="churn", user="ana")
        self.now = utcnow().replace(microsecond=0)
        self.since, self.until = self.now - dt.timedelta(days=20), self.now + dt.timedelta(hours=1)
        for scope, name in BUDGETS:  # users' tiny daily budgets: crossed by today's chats
            tiny = name.endswith(("/ana", "/bob"))
            manage.set_budget(
                self.store,
                scope,
                name,
                "0.000001" if tiny else "100",
                "day" if tiny else "month",
                mode="soft",
                thresholds=(Decimal(1),),
            )
        # History up to two days ago: today's spend is the chats' below (so they cross).
        self.tracker.ingest(make_rows(400, self.now - dt.timedelta(days=2), days=30, seed=25))
        for user in ("ana", "bob"):  # past their thresholds: the gateway records alerts
            self.chat(user)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    pg = None if request.param == "sqlite" else request.getfixturevalue("pg_server")
    db = None if pg is None else pg.create_database()
    s = Stack(tmp_path_factory.mktemp("teamanalytics"), db)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def be(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Team mode with no database and no store opened: ``be(user)`` switches the key."""
    yield from teamstack.team_kernel(stack.gw.url, stack.keys, tmp_path / "home", monkeypatch)


def _calls(s: Stack) -> list[tuple[str, dict[str, Any]]]:
    """Every function with arguments that make its answer independent of the clock."""
    lo, hi = s.since, s.until
    return [
        ("spending_trends", {"since": lo, "until": hi}),
        (
            "spending_trends",
            {
                "granularity": "week",
                "since": lo,
                "until": hi,
                "by": "model",
                "tz": "Europe/Paris",
                "fill_gaps": True,
            },
        ),
        ("cost_breakdown", {"by": ["project", "tag:team"], "since": lo, "until": hi}),
        ("cost_breakdown", {"by": "streamed", "since": s.now + dt.timedelta(days=9)}),  # empty
        ("usage_comparison", {"current": "7d", "until": hi, "by": ["provider", "model"]}),
        ("realtime_metrics", {"window": dt.timedelta(days=2), "until": hi}),
        ("usage_report", {"since": lo, "until": hi}),
        ("aggregated_spending", {"level": "org", "since": lo, "until": hi}),
        ("aggregated_spending", {"level": "user", "since": lo, "until": hi}),
        ("budget_utilization", {"since": lo, "until": hi}),
        ("budget_recommendations", {"since": lo, "until": hi}),
        ("alerts_summary", {"since": lo}),
        ("dashboard_data", {"since": lo, "until": hi, "realtime_window": (lo, hi)}),
    ]


_NOW_DEPENDENT = {
    "budget_recommendations": [
        "forecast_usd",
        "forecast_low_usd",
        "forecast_high_usd",
        "will_exceed",
        "suggested_limit_usd",
        "daily_rate_usd",
        "note",
    ],
    "budget_utilization": ["projected_usd"],
    "budgets": ["projected_usd"],
}


def _equal(got: Any, want: Any, name: str) -> None:
    if isinstance(want, dict):
        assert list(got) == list(want)
        for key in want:
            _equal(got[key], want[key], key)
        return
    drop = [c for c in _NOW_DEPENDENT.get(name, ()) if c in want.columns]
    pd.testing.assert_frame_equal(got.drop(columns=drop), want.drop(columns=drop))
    assert got.attrs == want.attrs
    for col in want.columns:  # Decimal objects, not floats or text
        if want[col].dtype == object and any(isinstance(v, Decimal) for v in want[col]):
            assert all(isinstance(v, Decimal) for v in got[col] if v is not None), col


def solo(s: Stack, name: str) -> dict[str, Any]:
    """The solo-mode call's store (and price book: no tracker is made here)."""
    if name == "budget_recommendations":
        return {"store": s.store, "pricebook": s.tracker.pricebook}
    return {"store": s.store}


def _visible(frame: pd.DataFrame) -> pd.DataFrame:
    if not len(frame):
        return frame
    return frame[[b in BOBS for b in frame["budget"]]].reset_index(drop=True)


def test_as_admin_every_function_answers_the_solo_frame(stack: Stack, be: Any) -> None:
    be("root")
    for name, args in _calls(stack):
        got = getattr(analytics, name)(**args)
        want = getattr(analytics, name)(**args, **solo(stack, name))
        _equal(got, want, name)
    report = analytics.usage_report(since=stack.since, until=stack.until)
    assert isinstance(report.attrs["totals"]["cost_usd"], Decimal)
    trend = analytics.spending_trends(since=stack.since, until=stack.until, tz="Europe/Paris")
    assert str(trend["period"].dt.tz) == "Europe/Paris" and len(trend)
    assert analytics.cost_breakdown(since=stack.now + dt.timedelta(days=9)).empty


def test_as_member_usage_is_their_own_and_budgets_what_applies(stack: Stack, be: Any) -> None:
    be("bob")
    for name, args in _calls(stack):
        got = getattr(analytics, name)(**args)
        want: Any
        if name in ("budget_utilization", "alerts_summary"):
            want = _visible(getattr(analytics, name)(**args, store=stack.store))
        elif name == "dashboard_data":
            want = analytics.dashboard_data(**args, org="acme", user="bob", store=stack.store)
            want["budgets"] = _visible(analytics.budget_utilization(store=stack.store))
            want["alerts"] = _visible(
                analytics.alerts_summary(args["since"], args["until"], store=stack.store)
            )
        elif name == "budget_recommendations":
            both = analytics.budget_recommendations(**args, **solo(stack, name))
            mine = analytics.budget_recommendations(
                **args, org="acme", user="bob", **solo(stack, name)
            )
            want = pd.concat(
                [_visible(both[both["kind"] == "forecast"]), mine[mine["kind"] != "forecast"]],
                ignore_index=True,
            )
        else:
            want = getattr(analytics, name)(**args, org="acme", user="bob", store=stack.store)
            if name == "aggregated_spending":
                hidden = [b is not None and b not in BOBS for b in want["budget"]]
                for col in [c for c in want.columns if c.startswith("budget")]:
                    want.loc[hidden, col] = float("nan") if col == "budget_percent_used" else None
        _equal(got, want, name)
    used = analytics.budget_utilization()
    assert set(used["budget"]) == BOBS and len(used) == len(BOBS)
    assert set(analytics.cost_breakdown(by="user")["user"]) == {"bob"}
    assert set(analytics.alerts_summary()["budget"]) == {"acme/churn/bob", "acme/bob"}
    with pytest.raises(PermissionDenied, match="owner of acme/churn or admin") as refused:
        analytics.cost_breakdown(project="churn", user="ana")
    assert refused.value.missing_role == "owner of acme/churn or admin"
    with pytest.raises(PermissionDenied, match="owner of acme or admin"):
        analytics.spending_trends(org="acme")
    with pytest.raises(PermissionDenied):
        analytics.dashboard_data(org="beta")


def test_as_owner_the_project_is_read(stack: Stack, be: Any) -> None:
    be("ana")
    lo, hi = stack.since, stack.until
    got = analytics.cost_breakdown(by=["project", "user"], since=lo, until=hi)
    want = analytics.cost_breakdown(
        by=["project", "user"], since=lo, until=hi, org="acme", project="churn", store=stack.store
    )
    _equal(got, want, "cost_breakdown")
    assert set(got["project"]) == {"churn"} and len(set(got["user"])) > 1
    mine = analytics.usage_report(["user"], lo, hi, project="churn", user="bob")
    _equal(
        mine,
        analytics.usage_report(
            ["user"], lo, hi, org="acme", project="churn", user="bob", store=stack.store
        ),
        "usage_report",
    )
    with pytest.raises(PermissionDenied, match="owner of acme/web or admin"):
        analytics.cost_breakdown(project="web")
    seen = set(analytics.budget_utilization()["budget"])
    assert seen == {"acme", "acme/churn", "acme/churn/ana", "acme/churn/bob"}


def test_a_bad_argument_is_the_solo_validation_error(stack: Stack, be: Any) -> None:
    be("root")
    bad: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("cost_breakdown", ("nope",), {}),
        ("spending_trends", ("fortnight",), {}),
        ("usage_report", (), {"flavour": "x"}),
        ("realtime_metrics", ("soon",), {}),
        ("aggregated_spending", ("galaxy",), {}),
        ("budget_utilization", (), {"model": "gpt-4o"}),
        ("alerts_summary", (), {"colour": "red"}),
        ("spending_trends", (), {"since": "2026-02-01", "until": "2026-01-01"}),
    ]
    for name, args, kwargs in bad:
        with pytest.raises(ValidationError) as solo:
            getattr(analytics, name)(*args, **kwargs, store=stack.store)
        with pytest.raises(ValidationError) as team:
            getattr(analytics, name)(*args, **kwargs)
        assert str(team.value) == str(solo.value), name
        assert type(team.value) is type(solo.value), name
    with pytest.raises(TypeError):
        analytics.dashboard_data(colour="red")  # type: ignore[call-arg]  # as in solo mode
    with pytest.raises(ValidationError, match="cannot be sent to the llmspend gateway"):
        analytics.budget_recommendations(pricebook=stack.tracker.pricebook)
    with pytest.raises(ConfigError, match="not served in team mode") as refused:
        analytics.rebuild_rollups()
    assert "llmspend db rebuild-rollups" in str(refused.value)  # what docs/team.md promises


def test_budget_history_goes_through_the_gateway_scoped(stack: Stack, be: Any) -> None:
    be("ana")
    got = llmspend.budget_history("project", "acme/churn")
    want = manage.budget_history(stack.store, "project", "acme/churn")
    pd.testing.assert_frame_equal(got, want)
    assert len(got) >= 1 and isinstance(got["spent_usd"].iloc[0], Decimal)
    with pytest.raises(PermissionDenied, match="owner of acme/web or admin"):
        llmspend.budget_history("project", "acme/web")
    with pytest.raises(BudgetError, match="no user acme/churn/nobody budget"):  # hers, unset
        llmspend.budget_history("user", "acme/churn/nobody")
    be("bob")
    pd.testing.assert_frame_equal(
        llmspend.budget_history("user", "acme/churn/bob"),
        manage.budget_history(stack.store, "user", "acme/churn/bob"),
    )
    with pytest.raises(PermissionDenied):
        llmspend.budget_history("user", "acme/churn/ana")


def test_names_are_what_the_caller_may_read(stack: Stack, be: Any) -> None:
    be("bob")
    gateway = client()
    assert gateway is not None
    his = analytics.cost_breakdown("project", org="acme", user="bob", store=stack.store)
    assert gateway.names() == (["acme"], sorted({"churn", *his["project"]}), ["bob"])
    be("ana")
    orgs, projects, users = client().names()  # type: ignore[union-attr]
    assert orgs == ["acme"] and "churn" in projects and "ops" not in projects  # beta's
    assert {"ana", "bob", "cy"} <= set(users) and not {"dee", "eve"} & set(users)
    be("root")
    orgs, projects, users = client().names()  # type: ignore[union-attr]
    assert orgs == ["acme", "beta"] and {"churn", "web", "ops"} <= set(projects)
    assert {"ana", "bob", "dee"} <= set(users)


def test_frames_travel_exactly() -> None:
    """Empty frames keep their dtypes; None stays None; attrs and mixed columns survive."""
    frame = pd.DataFrame(
        {
            "a": pd.Series([Decimal("1.50"), None, Decimal("0.000000001")], dtype=object),
            "b": pd.Series([True, None, False], dtype=object),
            "c": pd.Series(["x", None, "z"], dtype=object),
            "d": pd.Series([1, 2, 3], dtype="int64"),
            "p": pd.Series(pd.to_datetime(["2026-01-01", "NaT", "2026-03-01"]).tz_localize(UTC)),
        }
    )
    frame.attrs["totals"] = {"cost_usd": Decimal("1.500000001"), "at": dt.datetime(2026, 1, 1)}
    back = teamwire.unpack(teamwire.pack(frame))
    pd.testing.assert_frame_equal(back, frame)
    assert back.attrs == frame.attrs and str(back["a"].iloc[0]) == "1.50"
    assert back["b"].iloc[1] is None and back["c"].iloc[1] is None
    empty = frame.iloc[:0]
    pd.testing.assert_frame_equal(teamwire.unpack(teamwire.pack(empty)), empty)
    both = teamwire.unpack(teamwire.pack({"x": frame, "y": empty}))
    assert list(both) == ["x", "y"]
    args = {"t": (1, "2"), "w": dt.timedelta(hours=3), "z": dt.timezone(dt.timedelta(hours=-5))}
    assert teamwire.decode(teamwire.encode(args)) == args
