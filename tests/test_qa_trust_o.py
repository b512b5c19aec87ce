"""The trust model as a demanding user tries it (QA round 33, helper O): whose records a
bad or odd filter reads through a real gateway, and what the caller is told."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.teamstack import Stack, module_stack
from tests.test_gateway import MESSAGES, _openai

stack = module_stack("qa_trust_o")
API = "/llmspend/api/v1"


def _call(stack: Stack, user: str, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {stack.keys[user]}"}
    return httpx.request(method, stack.gw.url + API + path, headers=headers, timeout=60, **kw)


@pytest.mark.parametrize("user", ["bob", "root"])
@pytest.mark.parametrize("param", ["org", "project", "user"])
def test_an_empty_name_filter_is_solo_modes_400_for_everyone(
    stack: Stack, user: str, param: str
) -> None:
    r = _call(stack, user, "GET", "/records", params={param: ""})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "ValidationError"
    assert error["message"] == f"filter {param}: expected a name or a non-empty list of names"


@pytest.mark.parametrize(
    "org",
    [{"acme": 1}, {"$tuple": ["acme", "globex"]}, [], ""],
    ids=["object", "tuple", "[]", "''"],
)
def test_odd_filters_to_the_analytics_are_checked_as_the_query_reads_them(
    stack: Stack, org: Any
) -> None:
    r = _call(stack, "bob", "POST", "/analytics/cost_breakdown", content=json.dumps({"org": org}))
    assert r.status_code in (400, 403), r.text  # never a 500, never bob's org's rows
    assert "error" in r.json()


def test_acknowledging_an_alert_the_caller_cannot_see_names_nothing_of_it(stack: Stack) -> None:
    for body in (
        {"scope": "project", "name": "acme/secret-merger", "limit": "0.000001", "mode": "soft"},
        {"scope": "org", "name": "acme", "limit": "0.000001", "mode": "soft"},
    ):
        assert _call(stack, "root", "POST", "/budgets", json=body).status_code == 200
    secret = stack.gw.new_key("acme", "secret-merger", "ana")
    _openai(stack.gw, secret).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=5
    )
    alerts = _call(stack, "root", "GET", "/alerts").json()
    hidden = next(a["id"] for a in alerts if a["budget"] == "acme/secret-merger")
    shown = next(a["id"] for a in alerts if a["scope"] == "org" and a["budget"] == "acme")
    gina = stack.gw.new_key("globex", "x", "gina")
    headers = {"authorization": f"Bearer {gina}"}
    url = stack.gw.url + API + "/alerts/acknowledge"
    answers = {
        i: httpx.post(url, headers=headers, json={"ids": [i]}, timeout=60) for i in (hidden, 10**9)
    }
    for i, r in answers.items():  # the same answer as for an alert that does not exist
        assert r.status_code == 400, r.text
        assert r.json()["error"] == {"message": f"no alert with id {i}", "type": "ValidationError"}
    assert "secret" not in answers[hidden].text
    # a budget bob may see but not manage: still a 403 naming the role he lacks
    r = _call(stack, "bob", "POST", "/alerts/acknowledge", json={"ids": [shown]})
    assert r.status_code == 403, r.text
    assert r.json()["error"]["missing_role"] == "owner of acme or admin"
    unacked = _call(stack, "root", "GET", "/alerts", params={"acknowledged": "false"}).json()
    assert {hidden, shown} <= {a["id"] for a in unacked}
