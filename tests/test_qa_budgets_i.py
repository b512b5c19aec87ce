"""The budget owner's exploratory findings: definitions as users type them."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

import llmspend
from llmspend.budgets.spec import check_webhook_url, mask_url
from llmspend.errors import BudgetError


def test_a_name_with_outer_spaces_is_the_same_budget(tracker) -> None:  # type: ignore[no-untyped-def]
    llmspend.set_budget("org", "acme", "5")
    b = llmspend.set_budget("org", " acme ", "7")
    assert b.name == "acme"
    assert [(x.name, x.limit_usd) for x in llmspend.list_budgets()] == [("acme", Decimal("7"))]
    assert llmspend.budget_status("org", " acme ")[0].limit_usd == Decimal("7")
    llmspend.delete_budget("org", "acme ")
    assert llmspend.list_budgets() == []


def test_numpy_floats_are_floats(tracker) -> None:  # type: ignore[no-untyped-def]
    b = llmspend.set_budget("org", "acme", np.float64(5.5), thresholds=[np.float64(0.5), 1.0])
    assert b.limit_usd == Decimal("5.5")
    assert b.thresholds == (Decimal("0.5"), Decimal("1.0"))
    with pytest.raises(BudgetError, match="finite"):
        llmspend.set_budget("org", "acme", np.float64("nan"))


def test_a_webhook_scheme_in_capitals_is_accepted(tracker) -> None:  # type: ignore[no-untyped-def]
    url = "HTTPS://hooks.example.com/T0/SECRET"
    assert check_webhook_url(url) == url
    b = llmspend.set_budget("org", "acme", "5", webhook_url=url)
    assert b.webhook_url == mask_url(url) == "https://hooks.example.com/***"
    with pytest.raises(BudgetError, match="scheme 'ftp'"):
        check_webhook_url("FTP://hooks.example.com/x")


def _three_alerts() -> list[int]:
    from llmspend.call import Usage
    from llmspend.pipeline import begin_call

    llmspend.set_budget("project", "acme/churn", "0.00021", "day", mode="soft")
    c = begin_call("openai", "chat.completions", "gpt-4o-mini", input_tokens=1000,
                   max_output_tokens=100)  # fmt: skip
    assert c is not None
    c.finish(Usage(input_tokens=1000, output_tokens=100))
    return list(llmspend.alerts().id)


def test_alert_ids_from_the_frame_acknowledge_even_when_none_are_left(installed) -> None:  # type: ignore[no-untyped-def]
    ids = _three_alerts()
    assert len(ids) == 3
    frame = llmspend.alerts()
    assert llmspend.acknowledge_alerts(frame.id.iloc[0]) == 1  # a numpy integer
    assert llmspend.acknowledge_alerts(llmspend.alerts(acknowledged=False).id) == 2  # a Series
    assert llmspend.acknowledge_alerts(llmspend.alerts(acknowledged=False).id) == 0  # empty
    assert llmspend.alerts().acknowledged.all()
    for bad in (["x"], [True], "1", 1.0):
        with pytest.raises(llmspend.LLMSpendError, match="alert ids must be integers"):
            llmspend.acknowledge_alerts(bad)  # type: ignore[arg-type]


def test_alerts_options_are_checked(installed) -> None:  # type: ignore[no-untyped-def]
    _three_alerts()
    llmspend.acknowledge_alerts(llmspend.alerts().id.iloc[0])
    with pytest.raises(llmspend.LLMSpendError, match="acknowledged must be True, False"):
        llmspend.alerts(acknowledged="no")  # was read as True
    assert len(llmspend.alerts(acknowledged=np.False_)) == 2
    for bad in (-1, "5", 2.0, True):
        with pytest.raises(llmspend.LLMSpendError, match="limit must be a whole number"):
            llmspend.alerts(limit=bad)
    assert len(llmspend.alerts(limit=np.int64(1))) == 1


def test_an_alert_names_its_threshold_as_set(installed) -> None:  # type: ignore[no-untyped-def]
    from llmspend.alerting.listeners import remove_alert_callback
    from llmspend.call import Usage
    from llmspend.pipeline import begin_call

    got: list = []
    llmspend.on_alert(got.append)
    try:
        llmspend.set_budget("project", "acme/churn", "0.00042", "day", mode="soft",
                            thresholds=(0.005, 0.125, 0.5))  # fmt: skip
        c = begin_call("openai", "chat.completions", "gpt-4o-mini", input_tokens=1000,
                       max_output_tokens=100)  # fmt: skip
        assert c is not None
        c.finish(Usage(input_tokens=1000, output_tokens=100))
    finally:
        remove_alert_callback(got.append)
    # was "reached 0 %" and "reached 12 %" (rounded to whole percents)
    assert [e.message.split(" — ")[0].rsplit("reached ", 1)[1] for e in got] == [
        "0.5 %", "12.5 %", "50 %"
    ]  # fmt: skip


def test_a_threshold_below_a_millionth_is_refused(tracker) -> None:  # type: ignore[no-untyped-def]
    # kept in millionths of the limit, 1e-9 became 0: an alert on any settlement, even $0
    with pytest.raises(BudgetError, match=r"at least 0\.000001"):
        llmspend.set_budget("org", "acme", "5", thresholds=[Decimal("1e-9"), 1])
    assert llmspend.list_budgets() == []
    b = llmspend.set_budget("org", "acme", "5", thresholds=[Decimal("0.000001"), 1])
    assert b.thresholds[0] == Decimal("0.000001")
