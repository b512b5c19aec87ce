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
