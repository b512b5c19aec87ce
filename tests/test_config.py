"""Settings from the environment: one reader of numbers, with messages naming the variable."""

from __future__ import annotations

import pytest

from llmspend.budgets.holds import lease_seconds
from llmspend.config import env_number
from llmspend.errors import ConfigError
from llmspend.store.sqlite import SQLITE_BUSY_TIMEOUT_MS, busy_timeout_ms


@pytest.mark.parametrize("raw", ["", None])
def test_unset_or_empty_gives_the_default(monkeypatch: pytest.MonkeyPatch, raw: str | None) -> None:
    if raw is None:
        monkeypatch.delenv("LLMSPEND_LEASE_SECONDS", raising=False)
        monkeypatch.delenv("LLMSPEND_SQLITE_BUSY_TIMEOUT", raising=False)
    else:
        monkeypatch.setenv("LLMSPEND_LEASE_SECONDS", raw)
        monkeypatch.setenv("LLMSPEND_SQLITE_BUSY_TIMEOUT", raw)
    assert lease_seconds() == 600.0
    assert busy_timeout_ms() == SQLITE_BUSY_TIMEOUT_MS


@pytest.mark.parametrize(("raw", "value"), [("5", 5.0), ("0.25", 0.25), ("604800", 604800.0)])
def test_a_lease_in_range_is_read(monkeypatch: pytest.MonkeyPatch, raw: str, value: float) -> None:
    monkeypatch.setenv("LLMSPEND_LEASE_SECONDS", raw)
    assert lease_seconds() == value


@pytest.mark.parametrize("raw", ["0", "-1", "nan", "inf", "-inf", "604801", "1e308", "abc", "5s"])
def test_a_bad_lease_is_a_config_error_naming_it(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("LLMSPEND_LEASE_SECONDS", raw)
    with pytest.raises(ConfigError, match=r"LLMSPEND_LEASE_SECONDS must be a number of seconds"):
        lease_seconds()


@pytest.mark.parametrize("raw", ["-1", "1.5", "abc", "nan"])
def test_a_bad_busy_timeout_is_a_config_error(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("LLMSPEND_SQLITE_BUSY_TIMEOUT", raw)
    with pytest.raises(ConfigError, match=r"must be a whole number of milliseconds"):
        busy_timeout_ms()


def test_zero_is_a_whole_number_in_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMSPEND_SQLITE_BUSY_TIMEOUT", "0")
    assert busy_timeout_ms() == 0


def test_bounds_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_TEST_NUMBER", "11")
    with pytest.raises(
        ConfigError, match=r"X_TEST_NUMBER must be a number of apples > 1 and <= 10"
    ):
        env_number("X_TEST_NUMBER", 2, unit="apples", low=1, high=10)


@pytest.mark.parametrize("raw", ["inf", "-inf", "nan", "Infinity"])
def test_no_bound_lets_infinity_or_nan_through(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("X_TEST_NUMBER", raw)
    with pytest.raises(ConfigError, match=r"X_TEST_NUMBER must be a number of days > 0"):
        env_number("X_TEST_NUMBER", 30, unit="days")
