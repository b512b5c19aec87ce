"""Budgets' webhooks are fired by the gateway only (issue 25).

A real gateway and the simulator as child processes, receivers on 127.0.0.1 only: a budget
with a webhook crossed through the gateway is delivered by the gateway when its
configuration allow-lists 127.0.0.1 (``[webhooks] allow``), refused and recorded as refused
when it does not (``LLMSPEND_WEBHOOK_ALLOW`` in the gateway's environment does not count);
a kernel in team mode that crosses the same budget's threshold itself posts nothing for the
budget (its own global webhook still gets the alert).
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmspend.alerting.query import fetch_deliveries
from llmspend.errors import ConfigError
from llmspend.gateway.config import load_config
from llmspend.store.engine import open_store
from tests.test_gateway import MESSAGES, Gateway, Sim, _openai

API = "/llmspend/api/v1"
ROLES = '[roles]\nadmins = ["root"]\n'
ENV = {"LLMSPEND_WEBHOOK_RETRIES": "0", "LLMSPEND_WEBHOOK_TIMEOUT": "10"}


class _Receiver(http.server.BaseHTTPRequestHandler):
    hits: list[tuple[str, dict[str, Any]]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.hits.append((self.path, json.loads(body or b"{}")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    hits: list[tuple[str, dict[str, Any]]] = []
    handler = type("R", (_Receiver,), {"hits": hits})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", hits
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    s = Sim()
    try:
        yield s
    finally:
        s.stop()


def _deliveries(db: str, count: int = 1) -> list[dict[str, Any]]:
    """The gateway's delivery rows, once ``count`` exist (generous polling; no timing is
    asserted: the gateway delivers off the request's path)."""
    store = open_store(db)
    deadline = time.monotonic() + 60
    while True:
        rows = [
            {str(k): v for k, v in d.items()} for d in fetch_deliveries(store).to_dict("records")
        ]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def _cross_through(gw: Gateway, hook: str) -> None:
    root, ana = gw.new_key("acme", "churn", "root"), gw.new_key("acme", "churn", "ana")
    body = {"scope": "user", "name": "acme/churn/ana", "limit": "0.000001", "mode": "soft",
            "thresholds": ["1.0"], "webhook_url": hook}  # fmt: skip
    r = httpx.post(gw.url + API + "/budgets", json=body, timeout=60,
                   headers={"authorization": f"Bearer {root}"})  # fmt: skip
    assert r.status_code == 200, r.text
    _openai(gw, ana).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)


@pytest.mark.parametrize("allowed", [True, False])
def test_the_gateway_delivers_a_budgets_webhook_with_its_configured_allow_list(
    tmp_path: Path, sim: Sim, receiver: Any, allowed: bool
) -> None:
    base, hits = receiver
    extra = ROLES + ('[webhooks]\nallow = ["127.0.0.1"]\n' if allowed else "")
    # The environment's allow-list is solo mode's: the gateway takes its configuration's.
    env = {**ENV, "LLMSPEND_WEBHOOK_ALLOW": "" if allowed else "127.0.0.1"}
    gw = Gateway(tmp_path, sim, extra=extra, env=env)
    try:
        _cross_through(gw, base + "/hook/SECRET-path")
        (row,) = _deliveries(gw.db)
    finally:
        log = gw.stop()
    assert "SECRET" not in log
    assert row["target"] == base and "SECRET" not in str(row)
    if allowed:
        assert (row["status"], row["http_status"]) == ("delivered", 200)
        ((path, payload),) = hits
        assert path == "/hook/SECRET-path"
        assert payload["alert"]["budget"] == "acme/churn/ana"
    else:
        assert (row["status"], row["attempts"], row["error"]) == (
            "refused", 0, "refused: destination not allowed",
        )  # fmt: skip
        assert hits == []


KERNEL = r"""
import json, sys
import openai
import llmspend
from llmspend.alerting.query import fetch_deliveries
from llmspend.alerting.webhooks import sender
from llmspend.tracker import get_tracker

sim, hook, own = sys.argv[1:4]
llmspend.install()
llmspend.set_budget("user", "acme/churn/ana", "0.000001", mode="soft", thresholds=["1.0"],
                    webhook_url=hook)
llmspend.set_webhook(own)
client = openai.OpenAI(base_url=sim + "/v1", api_key="sk-test", max_retries=0)
client.chat.completions.create(model="gpt-4o-mini", max_tokens=5,
                               messages=[{"role": "user", "content": "hi"}])
assert sender().wait(60)
store = get_tracker().store
print(json.dumps({
    "alerts": list(llmspend.alerts()["budget"]),
    "deliveries": [d["target"] for d in fetch_deliveries(store).to_dict("records")],
}))
"""


def test_a_kernel_in_team_mode_never_posts_a_budgets_webhook(
    tmp_path: Path, sim: Sim, receiver: Any
) -> None:
    base, hits = receiver
    env = {
        **os.environ, **ENV, "LLMSPEND_HOME": str(tmp_path / "home"),
        "LLMSPEND_DATABASE_URL": f"sqlite:///{tmp_path / 'kernel.db'}",
        # team mode, pointed at a gateway that is not even called: the call goes to the
        # simulator directly, so this kernel tracks it and crosses the threshold itself
        "LLMSPEND_GATEWAY_URL": "http://127.0.0.1:9/",
        "LLMSPEND_ORG": "acme", "LLMSPEND_PROJECT": "churn", "LLMSPEND_USER": "ana",
        "LLMSPEND_WEBHOOK_ALLOW": "127.0.0.1",  # it would be allowed, were it posted
        "LLMSPEND_NOTEBOOK_ALERTS": "0",
    }  # fmt: skip
    for var in ("LLMSPEND_GATEWAY_KEY", "JUPYTERHUB_API_TOKEN", "LLMSPEND_WEBHOOK_URL"):
        env.pop(var, None)
    out = subprocess.run(
        [sys.executable, "-c", KERNEL, sim.url, base + "/budget/SECRET", base + "/own"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["alerts"] == ["acme/churn/ana"]  # the threshold was crossed here
    assert seen["deliveries"] == [base]  # one delivery: the user's own global webhook
    assert [path for path, _ in hits] == ["/own"]


def test_the_webhooks_table_is_checked(tmp_path: Path) -> None:
    def load(text: str) -> Any:
        path = tmp_path / "gw.toml"
        path.write_text(text + '[upstreams.openai]\nbase_url = "http://127.0.0.1:1"\n')
        return load_config(str(path), {})

    assert load("").webhook_allow == ""
    assert load('[webhooks]\nallow = ["hooks.internal", "10.1.2.0/24"]\n').webhook_allow == (
        "hooks.internal 10.1.2.0/24"
    )
    for bad in ("[webhooks]\nallow = \"127.0.0.1\"\n", "[webhooks]\nallow = [\"a b\"]\n",
                "[webhooks]\nallowed = []\n", "webhooks = 1\n"):  # fmt: skip
        with pytest.raises(ConfigError, match="webhooks"):
            load(bad)
