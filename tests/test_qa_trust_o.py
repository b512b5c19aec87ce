"""The trust model as a demanding user tries it (QA round 33, helper O): whose records a
bad or odd filter reads through a real gateway, and what the caller is told."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.teamstack import Stack, module_stack

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
