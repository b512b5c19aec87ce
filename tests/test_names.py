"""The one "name or list of names" filter validator (records(), analytics, the report)."""

from __future__ import annotations

from typing import Any

import pytest

from llmspend.errors import ValidationError
from llmspend.names import name_list


def test_a_name_or_a_list_of_names() -> None:
    assert name_list(None, "org") is None
    assert name_list("acme", "org") == ["acme"]
    assert name_list(("acme", "beta", "acme"), "org") == ["acme", "beta", "acme"]  # as given
    assert name_list("a,b", "org") == ["a,b"]  # commas are text-mode only


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "filter org: expected a name or a non-empty list of names"),
        ("", "filter org: expected a name or a non-empty list of names"),
        (["acme", 3], "filter org: expected a name or a non-empty list of names"),
        (["acme", ""], "filter org: expected a name or a non-empty list of names"),
        (5, "filter org: expected a name or a list of names"),
    ],
)
def test_bad_names_are_validation_errors(value: Any, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        name_list(value, "org")
    assert str(info.value) == message


def test_text_mode_for_report_parameters() -> None:
    assert name_list("", "org", text=True) is None and name_list([], "org", text=True) is None
    assert name_list(" acme, beta ,,acme", "org", text=True) == ["acme", "beta"]
    assert name_list([" ana "], "user", text=True) == ["ana"]
    with pytest.raises(ValidationError, match=r"^user: expected names, got 3$"):
        name_list(["ana", 3], "user", text=True)
    with pytest.raises(ValidationError, match=r"^user: expected names, got 5$"):
        name_list(5, "user", text=True)


def test_every_public_filter_uses_it(tracker: Any) -> None:
    import llmspend
    from llmspend import analytics

    bad: Any = 5
    for call in (
        lambda: llmspend.records(org=bad),
        lambda: analytics.cost_breakdown(org=bad),
        lambda: analytics.budget_utilization(org=bad),
        lambda: analytics.alerts_summary(model=bad),
    ):
        with pytest.raises(ValidationError, match=r"filter .*: expected a name or a list"):
            call()
