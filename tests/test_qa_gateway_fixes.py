"""The gateway used as a demanding user would, on 127.0.0.1: a key expiring past the
calendar, a PATCH naming what only the gateway decides, an oversized data API body, an
upstream stream cut — each a clear one-line answer that changes nothing."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from llmspend.budgets import manage
from llmspend.errors import ValidationError
from llmspend.gateway import keys
from llmspend.store.engine import open_store
from tests.pgserver import PgServer
from tests.teamstack import ROLES_TOML
from tests.test_gateway import MESSAGES, Gateway, Sim, _anthropic, _openai, sim_and_gateway

API = "/llmspend/api/v1"


@pytest.mark.parametrize("span", ["99999999d", "9999999999999999999d", "1000000000h"])
def test_an_expiry_past_the_calendar_is_a_validation_error(span: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="past the year 9999"):
        keys.parse_expiry(span)
    store = open_store(f"sqlite:///{tmp_path / 'k.db'}")
    with pytest.raises(ValidationError, match="before the year 9999"):
        keys.create_key(store, org="acme", project="p", user="u", expires=dt.timedelta.max)
    assert keys.list_keys(store) == []
    assert keys.parse_expiry("2000d") == dt.timedelta(days=2000)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sim, Gateway]]:
    with sim_and_gateway(tmp_path_factory.mktemp("qa"), extra=ROLES_TOML) as running:
        yield running


def test_keys_create_with_an_expiry_past_the_calendar_is_one_line(
    stack: tuple[Sim, Gateway],
) -> None:
    _, gateway = stack
    out = subprocess.run(
        [sys.executable, "-m", "llmspend", "--database-url", gateway.db, "gateway", "keys",
         "create", "--org", "acme", "--project", "churn", "--user", "x", "--expires",
         "99999999d"],
        env=gateway.env, capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "past the year 9999" in out.stderr and not out.stdout


@pytest.mark.parametrize("field", ["actor", "store", "scope", "name", "owner"])
def test_a_patch_naming_what_the_gateway_decides_is_a_400_that_changes_nothing(
    stack: tuple[Sim, Gateway], field: str
) -> None:
    _, gateway = stack
    ana = gateway.new_key("acme", "churn", "ana")
    auth = {"authorization": f"Bearer {ana}"}
    budget = {"scope": "project", "name": "acme/churn", "limit": "5"}
    assert httpx.post(gateway.url + API + "/budgets", json=budget, headers=auth).status_code == 200
    before = manage.audit_log(open_store(gateway.db))
    r = httpx.patch(
        gateway.url + API + "/budgets/project/acme/churn",
        json={field: "mallory", "limit": "7"}, headers=auth, timeout=60,
    )  # fmt: skip
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "BudgetError" and error["message"].startswith(f"cannot update {field}")
    store = open_store(gateway.db)
    assert manage.get_budget(store, "project", "acme/churn").limit_usd == 5
    assert len(manage.audit_log(store)) == len(before)


def test_a_data_api_body_over_max_request_bytes_is_a_413(stack: tuple[Sim, Gateway]) -> None:
    _, gateway = stack
    root = gateway.new_key("acme", "churn", "root")
    body = {"scope": "org", "name": "acme", "limit": "5", "webhook_url": "x" * 300_000}
    r = httpx.post(
        gateway.url + API + "/budgets", json=body, headers={"authorization": f"Bearer {root}"}
    )
    assert r.status_code == 413 and "over 200000 bytes" in r.json()["error"]["message"]
    assert [b.name for b in manage.list_budgets(open_store(gateway.db), "org")] == []


def test_a_stream_cut_upstream_is_a_warning_line_not_a_traceback(tmp_path: Path) -> None:
    with sim_and_gateway(tmp_path) as (_, gateway):
        key = gateway.new_key("acme", "churn", "ana")
        body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
        headers = {"x-sim-directives": "cut=2", "authorization": f"Bearer {key}"}
        url = gateway.url + "/openai/v1/chat/completions"
        with (
            pytest.raises(httpx.RemoteProtocolError),  # the client still sees the cut
            httpx.stream("POST", url, json=body, headers=headers, timeout=60) as r,
        ):
            for _ in r.iter_raw():
                pass
        deadline = time.monotonic() + 60
        while not gateway.rows():  # settled after the client saw the cut: poll
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (row,) = gateway.rows()
        assert row.status == "partial"
        log = gateway.stop()  # everything the request logged is in the file now
    assert "upstream stream cut: ClientPayloadError" in log
    assert "Traceback" not in log and "POST /openai 200" in log


@pytest.mark.postgres
def test_a_store_that_cannot_be_reached_is_the_providers_503_naming_no_store(
    tmp_path: Path, pg_server: PgServer
) -> None:
    """A key not yet cached, with the store down: the proxy and the data API answer 503 in
    their shapes (not a bare 500 the SDKs retry, nor a 400 quoting the store's URL), and
    nothing goes upstream."""
    import anthropic
    import openai

    db = pg_server.create_database()
    with sim_and_gateway(tmp_path, db=db, extra=ROLES_TOML) as (sim, gateway):
        keys_ = {u: gateway.new_key("acme", "churn", u) for u in ("ana", "bob")}
        sent = sim.count()
        pg_server.pause()  # the team's database goes away
        try:
            with pytest.raises(openai.InternalServerError) as oe:
                _openai(gateway, keys_["ana"]).with_options(max_retries=0).chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES
                )
            assert oe.value.status_code == 503
            assert oe.value.body["code"] == "store_unavailable"  # type: ignore[index]
            with pytest.raises(anthropic.APIStatusError) as ae:
                _anthropic(gateway, keys_["ana"]).with_options(max_retries=0).messages.create(
                    model="claude-sonnet-4-5", max_tokens=5, messages=MESSAGES
                )
            assert ae.value.status_code == 503
            answers = [
                httpx.get(gateway.url + API + path, timeout=60,
                          headers={"authorization": f"Bearer {keys_[user]}"})
                for path, user in (("/whoami", "bob"), ("/budgets", "ana"))
            ]  # fmt: skip
        finally:
            pg_server.resume()
        for r in answers:
            assert r.status_code == 503 and "cannot be reached" in r.json()["error"]["message"]
            assert str(pg_server.port) not in r.text and "postgres" not in r.text
        assert sim.count() == sent
        log = gateway.stop()
    assert "Traceback" not in log and "the store cannot be reached" in log


def test_an_upstream_whose_key_variable_is_unset_is_named_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A typo in ``key_env`` (or an env file not loaded) is said at start, not found out
    from the provider's 401s; an upstream with no ``key_env`` (keyless) is not named."""
    from llmspend.gateway.app import warn_keyless
    from llmspend.gateway.config import load_config

    config = tmp_path / "gateway.toml"
    config.write_text(
        '[upstreams.openai]\nbase_url = "http://127.0.0.1:9"\nkey_env = "QA_SET"\n'
        '[upstreams.anthropic]\nbase_url = "http://127.0.0.1:9"\nkey_env = "QA_UNSET"\n'
        '[upstreams.local]\ndialect = "openai"\nbase_url = "http://127.0.0.1:9"\n'
    )
    loaded = load_config(str(config), {"QA_SET": "sk-set-key-123"})
    with caplog.at_level("WARNING", logger="llmspend.gateway"):
        assert warn_keyless(loaded) == ["anthropic"]
    (said,) = [r.getMessage() for r in caplog.records]
    assert "upstream anthropic: QA_UNSET is not set" in said and "sk-set" not in said
