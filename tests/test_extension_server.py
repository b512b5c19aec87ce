"""The JupyterLab extension's server routes (``/llmspend/*``), through a real Jupyter server.

pytest-jupyter's fixtures are imported into this module rather than loaded as a plugin:
as a plugin its autouse event-loop fixture and its test-call hook would apply to the
whole suite. So the tests are plain functions that run ``jp_fetch`` on the fixture's loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import warnings
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

import llmspend
from llmspend.call import Usage
from llmspend.pipeline import begin_call

if os.environ.get("CI"):  # CI builds and installs the extension (make extension): never skip
    import llmspend_jupyterlab
else:
    llmspend_jupyterlab = pytest.importorskip(
        "llmspend_jupyterlab", reason="the extension is not installed (make extension)"
    )
pytest.importorskip("pytest_jupyter")

from jupyter_server.auth.authorizer import Authorizer
from llmspend_jupyterlab.routes import AUTH_RESOURCE, HANDLERS, NAMESPACE
from pytest_jupyter.jupyter_server import *  # noqa: F403

Fetch = Callable[..., Any]


@pytest.fixture
def server_config() -> dict[str, Any]:
    """Extra server configuration (``ServerApp`` traits, ``LLMSpendLab`` settings); a test
    parametrizes it."""
    return {}


@pytest.fixture
def jp_server_config(server_config: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "ServerApp": {
            "jpserver_extensions": {"llmspend_jupyterlab": True},
            # Jupyter's default: handlers are reachable without a token unless they ask for
            # authentication themselves, so a route missing @authenticated answers here
            "allow_unauthenticated_access": True,
        }
    }
    for section, values in server_config.items():
        config.setdefault(section, {}).update(values)
    return config


@pytest.fixture(autouse=True)
def _no_closed_loop_left_current(jp_asyncio_loop: Any) -> Iterator[None]:
    """pytest-jupyter closes its loop after each test but leaves it set as the thread's
    current loop; unset it so that later tests in the session start clean."""
    yield
    asyncio.set_event_loop(None)


@pytest.fixture
def api(jp_fetch: Any, jp_asyncio_loop: Any) -> Fetch:
    """``api("status", params=..., method=..., body=...)`` → (code, decoded JSON)."""

    def call(path: str, **kwargs: Any) -> tuple[int, Any]:
        if isinstance(kwargs.get("body"), (dict, list)):
            kwargs["body"] = json.dumps(kwargs["body"])
        kwargs.setdefault("raise_error", False)
        response = jp_asyncio_loop.run_until_complete(jp_fetch(NAMESPACE, path, **kwargs))
        body = response.body.decode() if response.body else ""
        return response.code, (json.loads(body) if body else None)

    return call


NOW = dt.datetime.now(dt.UTC)


def row(cost: str | None, model: str = "gpt-4o-mini", **attr: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": NOW,
        "provider": "openai",
        "model": model,
        "org": "acme",
        "project": "churn",
        "user": "ana",
        "input_tokens": 100,
        "output_tokens": 10,
    }
    if cost is not None:
        out["cost_usd"] = cost
    return out | attr


@pytest.fixture
def known(installed: Any) -> Any:
    """A store with budgets at every level for acme/churn/ana and a few known calls."""
    llmspend.set_budget("org", "acme", "100", "month", mode="soft")
    llmspend.set_budget("project", "acme/churn", "20", "month")
    llmspend.set_budget("user", "acme/ana", "4.5", "day")
    llmspend.set_budget("project", "acme/other", "50", "month")  # not ana's context
    llmspend.set_budget("user", "acme/bob", "5", "day")  # nor this
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unknown model warns once
        llmspend.ingest(
            [
                row("2.50", "gpt-4o"),
                row("1.00"),
                row("0.25"),
                row(None, "mystery-model"),
                row("10", "gpt-4o", project="other", user="bob"),
            ]
        )
    return installed


def test_status_gives_the_budgets_of_the_context_and_todays_spend(known: Any, api: Fetch) -> None:
    code, status = api("status")
    assert code == 200
    assert status["context"] == {"org": "acme", "project": "churn", "user": "ana"}
    by_name = {(b["scope"], b["budget"]): b for b in status["budgets"]}
    assert list(by_name) == [("org", "acme"), ("project", "acme/churn"), ("user", "acme/ana")]
    org, project, user = by_name.values()
    assert (org["spent_usd"], org["limit_usd"], org["remaining_usd"]) == ("13.75", "100", "86.25")
    assert (org["mode"], org["period"], org["state"], org["calls"]) == ("soft", "month", "ok", 5)
    assert org["percent_used"] == pytest.approx(13.75)
    assert (project["spent_usd"], project["limit_usd"], project["calls"]) == ("3.75", "20", 4)
    assert project["percent_used"] == pytest.approx(18.75)
    assert (user["spent_usd"], user["limit_usd"], user["remaining_usd"]) == ("3.75", "4.5", "0.75")
    assert (user["period"], user["state"]) == ("day", "warning")
    assert user["percent_used"] == pytest.approx(83.3333)
    assert user["reserved_usd"] == "0"
    assert dt.datetime.fromisoformat(user["period_start"]) == NOW.replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    # every money field is an exact decimal string, never a float
    for budget in status["budgets"]:
        for key, value in budget.items():
            if key.endswith("_usd") and value is not None:
                assert isinstance(value, str) and Decimal(value) >= 0
    # the meter's headline: the budget closest to its limit
    assert status["headline"] == user
    assert status["today"]["spent_usd"] == "3.75"
    assert (status["today"]["calls"], status["today"]["unpriced_calls"]) == (4, 1)
    assert status["alerts"] == {"unacknowledged": 0, "latest_id": None}


def test_status_without_budgets_or_calls(installed: Any, api: Fetch) -> None:
    code, status = api("status")
    assert code == 200
    assert status["budgets"] == [] and status["headline"] is None
    assert status["today"]["spent_usd"] == "0" and status["today"]["calls"] == 0


def test_summary_gives_today_this_period_and_the_top_model(known: Any, api: Fetch) -> None:
    code, summary = api("summary")
    assert code == 200
    assert summary["context"] == {"org": "acme", "project": "churn", "user": "ana"}
    assert summary["today"]["spent_usd"] == "3.75" and summary["today"]["calls"] == 4
    period = summary["period"]
    # the headline budget's period (acme/ana, daily)
    assert (period["period"], period["budget"], period["scope"]) == ("day", "acme/ana", "user")
    assert (period["spent_usd"], period["calls"], period["unpriced_calls"]) == ("3.75", 4, 1)
    assert summary["top_model"] == {
        "provider": "openai",
        "model": "gpt-4o",
        "spent_usd": "2.5",
        "calls": 1,
    }


def test_summary_without_budgets_covers_the_calendar_month(installed: Any, api: Fetch) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        llmspend.ingest([row("0.5"), row("0.25"), row("0.5", "gpt-4o"), row("3", user="bob")])
    code, summary = api("summary")
    assert code == 200
    period = summary["period"]
    assert (period["period"], period["budget"]) == ("month", None)
    start = dt.datetime.fromisoformat(period["since"])
    assert (start.day, start.hour, start.utcoffset()) == (1, 0, dt.timedelta(0))
    assert (period["spent_usd"], period["calls"]) == ("1.25", 3)
    # two gpt-4o-mini calls ($0.75) beat one gpt-4o call ($0.50)
    assert summary["top_model"]["model"] == "gpt-4o-mini"
    assert summary["top_model"]["spent_usd"] == "0.75"


def test_today_starts_at_midnight_of_the_given_time_zone(installed: Any, api: Fetch) -> None:
    code, status = api("status", params={"tz": "Asia/Tokyo"})
    assert code == 200
    since = dt.datetime.fromisoformat(status["today"]["since"])
    local = since.astimezone(dt.timezone(dt.timedelta(hours=9)))
    assert (local.hour, local.minute) == (0, 0)
    for path in ("status", "summary"):  # {since, until}, as the README's table says
        code, answer = api(path, params={"tz": "Asia/Tokyo"})
        today = answer["today"]
        until = dt.datetime.fromisoformat(today["until"])
        assert until - dt.datetime.fromisoformat(today["since"]) == dt.timedelta(days=1)
    code, error = api("summary", params={"tz": "Mars/Olympus"})
    assert code == 400 and "time zone" in error["message"]


def spend(inp: int = 1000, out: int = 100, **attr: str) -> None:
    """One gpt-4o-mini call through the real pipeline (budgets, alerts and all)."""
    with llmspend.attribute(**attr):
        call = begin_call(
            "openai", "chat.completions", "gpt-4o-mini", input_tokens=inp, max_output_tokens=out
        )
    assert call is not None
    call.finish(Usage(input_tokens=inp, output_tokens=out))


ONE = Decimal("0.00021")  # gpt-4o-mini, 1000 in / 100 out


def test_alerts_list_the_contexts_alerts_newest_first_and_can_be_acknowledged(
    installed: Any, api: Fetch
) -> None:
    llmspend.set_budget("project", "acme/churn", ONE * 4, "day", mode="soft")
    llmspend.set_budget("project", "acme/other", ONE, "day", mode="soft")
    spend()  # 25 %
    spend()  # 50 %: the first alert
    spend(inp=3000)  # crosses 80 % and 100 % at once
    spend(project="other")  # someone else's budget, 3 alerts: not in ana's list
    assert len(llmspend.alerts()) == 6

    code, reply = api("alerts")
    assert code == 200
    alerts = reply["alerts"]
    assert [a["threshold"] for a in alerts] == [1.0, 0.8, 0.5]
    assert [a["id"] for a in alerts] == sorted((a["id"] for a in alerts), reverse=True)
    assert reply["unacknowledged"] == 3
    first = alerts[-1]
    assert {k: first[k] for k in ("kind", "budget", "scope", "org", "project", "user")} == {
        "kind": "threshold",
        "budget": "acme/churn",
        "scope": "project",
        "org": "acme",
        "project": "churn",
        "user": "ana",
    }
    assert (first["spent_usd"], first["limit_usd"], first["call_cost_usd"]) == (
        format(ONE * 2, "f"),
        format(ONE * 4, "f"),
        format(ONE, "f"),
    )
    assert first["percent_used"] == pytest.approx(50.0)
    assert first["acknowledged"] is False
    assert first["metadata"]["model"] == "gpt-4o-mini"
    dt.datetime.fromisoformat(first["ts"])

    code, status = api("status")
    assert status["alerts"] == {"unacknowledged": 3, "latest_id": alerts[0]["id"]}

    code, limited = api("alerts", params={"limit": "1"})
    assert [a["id"] for a in limited["alerts"]] == [alerts[0]["id"]]

    # acknowledge one: the only write
    code, ack = api(
        "alerts/acknowledge", method="POST", body={"ids": [first["id"]]}, raise_error=False
    )
    assert (code, ack) == (200, {"acknowledged": 1})
    frame = llmspend.alerts()
    assert frame.set_index("id").loc[first["id"], "acknowledged"]
    code, open_only = api("alerts", params={"acknowledged": "false"})
    assert [a["threshold"] for a in open_only["alerts"]] == [1.0, 0.8]
    assert open_only["unacknowledged"] == 2
    code, status = api("status")
    assert status["alerts"]["unacknowledged"] == 2


@pytest.mark.parametrize(
    ("path", "kwargs", "message"),
    [
        ("alerts", {"params": {"limit": "0"}}, "limit"),
        ("alerts", {"params": {"limit": "many"}}, "limit"),
        ("alerts", {"params": {"acknowledged": "maybe"}}, "acknowledged"),
        ("alerts", {"params": {"since": "last tuesday-ish"}}, "since"),
        ("alerts/acknowledge", {"method": "POST", "body": "not json"}, "JSON"),
        ("alerts/acknowledge", {"method": "POST", "body": {"ids": []}}, "ids"),
        ("alerts/acknowledge", {"method": "POST", "body": {"ids": ["1"]}}, "ids"),
        ("alerts/acknowledge", {"method": "POST", "body": {"ids": [424242]}}, "424242"),
    ],
)
def test_bad_requests_get_a_400_with_a_message(
    installed: Any, api: Fetch, path: str, kwargs: dict[str, Any], message: str
) -> None:
    code, error = api(path, **kwargs)
    assert code == 400
    assert message in error["message"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://llmspend@127.0.0.1:1/llmspend", "127.0.0.1"),  # nothing listens there
        ("not a database url", "not a database URL"),
    ],
)
def test_a_store_the_server_cannot_use_is_a_503(
    api: Fetch, monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    from llmspend.tracker import set_tracker

    monkeypatch.setenv("LLMSPEND_DATABASE_URL", url)
    set_tracker(None)  # the server's tracker is made from the environment on first use
    for path in ("status", "summary", "alerts"):
        code, error = api(path)
        assert code == 503, (path, error)
        assert message in error["message"]


# -- authentication ---------------------------------------------------------------------------
def _llmspend_routes(web_app: Any) -> list[tuple[str, type]]:
    """Every (pattern, handler class) the server routes under /llmspend/."""
    found = []

    def walk(rules: Any) -> None:
        for rule in rules:
            target = rule.target
            if hasattr(target, "rules"):
                walk(target.rules)
            elif isinstance(target, type):
                pattern = getattr(rule.matcher, "regex", None)
                if pattern is not None and f"/{NAMESPACE}/" in pattern.pattern:
                    found.append((pattern.pattern, target))

    walk(web_app.default_router.rules)
    return found


def _verbs(handler: type) -> list[str]:
    """The HTTP verbs the extension implements (not tornado's 405 defaults, nor
    jupyter_server's CORS preflight ``OPTIONS``, which answers no data)."""
    return [
        verb
        for verb in ("get", "head", "post", "put", "patch", "delete", "options")
        if getattr(handler, verb).__module__.startswith("llmspend_jupyterlab")
    ]


def test_every_route_requires_authentication(installed: Any, jp_web_app: Any, api: Fetch) -> None:
    routes = _llmspend_routes(jp_web_app)
    # the walk finds exactly what the extension registers: nothing is routed around it
    assert sorted(cls.__name__ for _, cls in routes) == sorted(cls.__name__ for _, cls in HANDLERS)
    checked = 0
    for path, handler in HANDLERS:
        verbs = _verbs(handler)
        assert verbs, f"{handler.__name__} serves no verb"
        for verb in verbs:
            kwargs: dict[str, Any] = {"method": verb.upper(), "headers": {"Authorization": ""}}
            if verb in ("post", "put", "patch"):
                kwargs["body"] = {"ids": [1]}
            code, _ = api(path, **kwargs)
            assert code == 403, f"{verb.upper()} /llmspend/{path} answered {code} without a token"
            # and with a wrong token
            kwargs["headers"] = {"Authorization": "token not-the-token"}
            code, _ = api(path, **kwargs)
            assert code == 403, f"{verb.upper()} /llmspend/{path} took a wrong token"
            checked += 1
    assert checked >= 4
    code, _ = api("status")
    assert code == 200  # and the token the server issued works


def test_the_server_sees_no_handler_without_an_auth_decorator(jp_environ: Any) -> None:
    """Jupyter Server warns about every verb lacking ``@authenticated``; none may warn."""
    from jupyter_server.serverapp import ServerApp
    from jupyter_server.utils import JupyterServerAuthWarning

    app = ServerApp.instance(  # the singleton, so that jp_server_cleanup tears it down
        allow_unauthenticated_access=False,
        jpserver_extensions={"llmspend_jupyterlab": True},
        reraise_server_extension_failures=True,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app.initialize(argv=[], find_extensions=False, new_httpserver=False)
    # one warning per extension, a line per unprotected verb (other extensions may have some)
    problems = [
        line
        for w in caught
        if issubclass(w.category, JupyterServerAuthWarning)
        for line in str(w.message).splitlines()
        if NAMESPACE in line or "llmspend" in line
    ]
    assert problems == []
    assert any(cls is HANDLERS[0][1] for _, cls in _llmspend_routes(app.web_app))


def test_acknowledging_keeps_the_xsrf_check(jp_web_app: Any) -> None:
    """Browsers authenticate with a cookie; their POST must carry the XSRF token."""
    from jupyter_server.base.handlers import APIHandler
    from llmspend_jupyterlab.routes import AcknowledgeHandler

    assert jp_web_app.settings.get("xsrf_cookies") is True
    assert AcknowledgeHandler.check_xsrf_cookie is APIHandler.check_xsrf_cookie


# -- authorization ----------------------------------------------------------------------------
class DenyLLMSpend(Authorizer):
    """Grants everything but the ``llmspend`` resource."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return resource != AUTH_RESOURCE


class ReadOnlyLLMSpend(Authorizer):
    """Grants everything but ``write`` on the ``llmspend`` resource."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return not (resource == AUTH_RESOURCE and action == "write")


def _bodies(path: str, verb: str) -> dict[str, Any]:
    """A request that would succeed if authorized."""
    if path == "alerts/acknowledge":
        return {"body": {"ids": [1]}}
    if verb == "post":
        return {"body": {"scope": "org", "name": "acme", "limit": "5"}}
    if verb == "patch":
        return {"body": {"scope": "org", "name": "acme", "limit": "6"}}
    if verb == "delete":
        return {"params": {"scope": "org", "name": "acme"}}
    return {}


@pytest.mark.parametrize("server_config", [{"ServerApp": {"authorizer_class": DenyLLMSpend}}])
def test_an_authorizer_denying_the_llmspend_resource_closes_every_route(
    known: Any, api: Fetch, jp_fetch: Any, jp_asyncio_loop: Any
) -> None:
    checked = 0
    for path, handler in HANDLERS:
        assert handler.auth_resource == AUTH_RESOURCE
        for verb in _verbs(handler):
            code, error = api(path, method=verb.upper(), **_bodies(path, verb))
            assert code == 403, f"{verb.upper()} /llmspend/{path} answered {code}"
            if verb != "head":
                assert AUTH_RESOURCE in error["message"]
            checked += 1
    assert checked >= 8
    # nothing was changed on the way
    assert [(b.scope, b.name, b.limit_usd) for b in llmspend.list_budgets("org")] == [
        ("org", "acme", Decimal(100))
    ]
    # the denial is the llmspend resource's only: the server's own API still answers
    reply = jp_asyncio_loop.run_until_complete(jp_fetch("api", "status"))
    assert reply.code == 200


@pytest.mark.parametrize("server_config", [{"ServerApp": {"authorizer_class": ReadOnlyLLMSpend}}])
def test_without_write_on_llmspend_budgets_are_read_only(known: Any, api: Fetch) -> None:
    code, listing = api("budgets")
    assert code == 200 and listing["can_manage"] is False
    for verb in ("post", "patch", "delete"):
        code, _ = api("budgets", method=verb.upper(), **_bodies("budgets", verb))
        assert code == 403, verb
    assert llmspend.budget_status("org", "acme")[0].limit_usd == Decimal(100)


# -- acknowledging only what the caller may see --------------------------------------------------
def test_alerts_of_budgets_that_do_not_apply_cannot_be_acknowledged(
    installed: Any, api: Fetch
) -> None:
    llmspend.set_budget("project", "acme/churn", ONE * 2, "day", mode="soft")
    llmspend.set_budget("project", "acme/other", ONE * 2, "day", mode="soft")
    spend()  # ana's project: 50 %
    spend(project="other", user="bob")  # bob's project: 50 %, not ana's to see
    frame = llmspend.alerts()
    mine = int(frame[frame["budget"] == "acme/churn"]["id"].iloc[0])
    bobs = int(frame[frame["budget"] == "acme/other"]["id"].iloc[0])
    code, error = api("alerts/acknowledge", method="POST", body={"ids": [mine, bobs]})
    assert code == 400 and str(bobs) in error["message"]
    assert not llmspend.alerts()["acknowledged"].any()  # all or nothing
    code, ack = api("alerts/acknowledge", method="POST", body={"ids": [mine]})
    assert (code, ack) == (200, {"acknowledged": 1})
    acked = llmspend.alerts().set_index("id")["acknowledged"]
    assert acked[mine] and not acked[bobs]


# -- budgets ------------------------------------------------------------------------------------
def test_budgets_are_created_changed_and_deleted(installed: Any, api: Fetch) -> None:
    code, listing = api("budgets")
    assert code == 200
    assert listing == {
        "context": {"org": "acme", "project": "churn", "user": "ana"},
        "can_manage": True,
        "budgets": [],
    }
    body = {
        "scope": "project",
        "name": "acme/churn",
        "limit": "25.50",
        "period": "week",
        "mode": "soft",
        "thresholds": ["0.5", "0.9"],
        "timezone": "Europe/Berlin",
        "webhook_url": "https://hooks.example.com/services/T0/SECRET",
    }
    code, created = api("budgets", method="POST", body=body)
    assert code == 200, created
    budget = created["budget"]
    assert (budget["scope"], budget["name"], budget["limit_usd"]) == (
        "project",
        "acme/churn",
        "25.5",
    )
    assert (budget["period"], budget["mode"], budget["timezone"]) == (
        "week",
        "soft",
        "Europe/Berlin",
    )
    assert budget["thresholds"] == ["0.5", "0.9"]
    assert budget["webhook_url"] == "https://hooks.example.com/***"  # never read back
    [stored] = llmspend.list_budgets()
    assert (stored.limit_usd, stored.mode, stored.timezone) == (
        Decimal("25.5"),
        "soft",
        "Europe/Berlin",
    )
    assert api("status")[1]["budgets"][0]["budget"] == "acme/churn"

    # a second POST for the same budget does not silently replace it
    code, error = api("budgets", method="POST", body=body | {"limit": "1"})
    assert code == 400 and "already exists" in error["message"]

    code, changed = api(
        "budgets", method="PATCH", body={"scope": "project", "name": "acme/churn", "limit": "40"}
    )
    assert code == 200 and changed["budget"]["limit_usd"] == "40"
    [stored] = llmspend.list_budgets()
    assert (stored.limit_usd, stored.period, stored.mode) == (Decimal(40), "week", "soft")
    assert stored.webhook_url == "https://hooks.example.com/***"  # kept when not given
    code, listing = api("budgets")
    assert [b["limit_usd"] for b in listing["budgets"]] == ["40"]

    code, changed = api(
        "budgets",
        method="PATCH",
        body={"scope": "project", "name": "acme/churn", "webhook_url": None, "mode": "hard"},
    )
    assert code == 200 and changed["budget"]["webhook_url"] is None
    assert llmspend.list_budgets()[0].mode == "hard"

    code, deleted = api(
        "budgets", method="DELETE", params={"scope": "project", "name": "acme/churn"}
    )
    assert (code, deleted) == (200, {"deleted": {"scope": "project", "name": "acme/churn"}})
    assert llmspend.list_budgets() == []
    code, error = api("budgets", method="DELETE", params={"scope": "project", "name": "acme/churn"})
    assert code == 404 and "acme/churn" in error["message"]


@pytest.mark.parametrize(
    ("verb", "body", "message"),
    [
        ("POST", {"scope": "project", "name": "acme/churn", "limit": "-5"}, "greater than 0"),
        ("POST", {"scope": "project", "name": "acme/churn", "limit": "lots"}, "amount of USD"),
        ("POST", {"scope": "team", "name": "acme", "limit": "5"}, "unknown budget scope"),
        ("POST", {"scope": "project", "name": "acme", "limit": "5"}, "org/project"),
        ("POST", {"scope": "org", "name": "acme", "limit": "5", "period": "fortnight"}, "period"),
        ("POST", {"scope": "org", "name": "acme", "limit": "5", "mode": "strict"}, "mode"),
        ("POST", {"scope": "org", "name": "acme", "limit": "5", "timezone": "Mars/Base"}, "IANA"),
        ("POST", {"scope": "org", "name": "acme", "limit": "5", "thresholds": ["1.5"]}, "(0, 1]"),
        ("POST", {"scope": "org", "name": "acme", "limit": "5", "webhook_url": "ftp://x"}, "http"),
        ("POST", {"scope": "org", "name": "acme"}, "limit is required"),
        ("POST", {"scope": "org", "name": "acme", "limit": "5", "colour": "red"}, "colour"),
        ("POST", {"name": "acme", "limit": "5"}, "scope"),
        ("POST", "not json", "JSON"),
        ("POST", ["a", "list"], "object"),
        ("PATCH", {"scope": "org", "name": "acme"}, "nothing to change"),
        ("PATCH", {"scope": "org", "name": "acme", "limit": "0"}, "greater than 0"),
    ],
)
def test_bad_budget_requests_get_the_librarys_message(
    installed: Any, api: Fetch, verb: str, body: Any, message: str
) -> None:
    if verb == "PATCH":
        llmspend.set_budget("org", "acme", "100")
    before = llmspend.list_budgets()
    code, error = api("budgets", method=verb, body=body)
    assert code == 400, error
    assert message in error["message"]
    assert llmspend.list_budgets() == before  # nothing changed


def test_an_error_message_with_a_percent_sign_is_sent_as_the_library_wrote_it(
    installed: Any, api: Fetch
) -> None:
    """Tornado doubles each ``%`` of a message raised without arguments (for its log)."""
    body = {"scope": "org", "name": "acme", "limit": "5", "thresholds": [2]}
    code, error = api("budgets", method="POST", body=body)
    assert code == 400
    assert "(e.g. 0.8 for 80 %), got 2" in error["message"] and "%%" not in error["message"]
    code, error = api("budgets", method="DELETE", params={"scope": "org", "name": "100%"})
    assert code == 404 and error["message"] == "no org budget 100%"
    code, error = api("alerts", params={"limit": "0"})  # a message of the route's own
    assert code == 400 and error["message"] == "limit must be an integer in 1..200"


def test_changing_a_budget_that_does_not_exist_is_a_404(installed: Any, api: Fetch) -> None:
    code, error = api(
        "budgets", method="PATCH", body={"scope": "user", "name": "acme/zoe", "limit": "3"}
    )
    assert code == 404 and "acme/zoe" in error["message"]
    code, error = api("budgets", method="DELETE", params={"scope": "user"})
    assert code == 400 and "scope" in error["message"]


@pytest.mark.parametrize("server_config", [{"LLMSpendLab": {"read_only": True}}])
def test_a_read_only_server_shows_members_their_budgets_and_refuses_changes(
    known: Any, api: Fetch
) -> None:
    llmspend.update_budget("project", "acme/churn", webhook_url="https://hooks.example.com/s/T")
    code, listing = api("budgets")
    assert code == 200 and listing["can_manage"] is False
    # only what applies to acme/churn/ana, and no webhook, not even masked
    assert [(b["scope"], b["name"]) for b in listing["budgets"]] == [
        ("org", "acme"),
        ("project", "acme/churn"),
        ("user", "acme/ana"),
    ]
    assert all(b["webhook_url"] is None for b in listing["budgets"])
    assert listing["budgets"][1]["has_webhook"] is True
    for verb in ("post", "patch", "delete"):
        code, error = api("budgets", method=verb.upper(), **_bodies("budgets", verb))
        assert code == 403 and "read-only" in error["message"], verb
    assert llmspend.budget_status("org", "acme")[0].limit_usd == Decimal(100)
    # acknowledging one's own alerts stays allowed (nothing to acknowledge: a 400, not 403)
    code, _ = api("alerts/acknowledge", method="POST", body={"ids": [1]})
    assert code == 400


def test_the_read_only_setting_is_read_from_the_server_config(jp_environ: Any) -> None:
    from jupyter_server.serverapp import ServerApp
    from llmspend_jupyterlab import LLMSpendLab
    from llmspend_jupyterlab.routes import SETTINGS_KEY

    app = ServerApp.instance(jpserver_extensions={"llmspend_jupyterlab": True})
    app.initialize(
        argv=["--LLMSpendLab.read_only=True"], find_extensions=False, new_httpserver=False
    )
    settings = app.web_app.settings[SETTINGS_KEY]
    assert isinstance(settings, LLMSpendLab) and settings.read_only is True
