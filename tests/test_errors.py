"""The errors module: every error pickles whole (a process pool sends it to the parent)."""

from __future__ import annotations

import datetime as dt
import inspect
import pickle
from decimal import Decimal

import pytest

from llmspend import errors

SAMPLES: dict[type[errors.LLMSpendError], errors.LLMSpendError] = {
    errors.PriceFileError: errors.PriceFileError("p.toml", "gpt-x", "input", "negative"),
    errors.MissingExtra: errors.MissingExtra("llmspend report", "notebook", ("papermill",)),
    errors.StoreCorrupted: errors.StoreCorrupted("/tmp/s.sqlite", "page 3 malformed"),
    errors.IngestError: errors.IngestError(7, "cost_usd", "must be >= 0"),
    errors.BudgetExceeded: errors.BudgetExceeded(
        budget="acme/churn",
        scope="project",
        period="day",
        limit=Decimal("0.0000001"),
        spent=Decimal("0"),
        reserved=Decimal("0.00002"),
        estimate=Decimal("0.0003"),
        resets_at=dt.datetime(2026, 12, 6, tzinfo=dt.UTC),
        reason="waited for holds",
    ),
    errors.PermissionDenied: errors.PermissionDenied("no", "owner of acme/churn"),
    errors.GatewayRefused: errors.GatewayRefused(403, "refused", {"x-a": "b"}, "admin"),
}


def _every_error() -> list[type[errors.LLMSpendError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.LLMSpendError)
    ]


@pytest.mark.parametrize("cls", _every_error(), ids=lambda c: c.__name__)
def test_every_error_pickles_with_its_message_and_fields(
    cls: type[errors.LLMSpendError],
) -> None:
    exc = SAMPLES.get(cls) or cls("something went wrong")
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is cls
    assert str(again) == str(exc) and again.args == exc.args
    assert vars(again) == vars(exc)


def test_a_tiny_limit_is_not_shown_as_zero() -> None:
    message = str(SAMPLES[errors.BudgetExceeded])
    assert "limit $0.0000001," in message and "reserved $0.00002," in message
