"""The gateway as a JupyterHub service: a real hub (``jupyterhub`` and the
``configurable-http-proxy`` npm package, started here), hub users' API tokens as
credentials, org/project from hub groups, the admin role from a hub role's custom scope.
Missing hub or proxy: skipped, an error under CI.

The proxy is found at ``$LLMSPEND_TEST_CHP``, else ``.venv/hub-proxy`` (``.ci/run``
installs it there: ``npm install --prefix .venv/hub-proxy configurable-http-proxy``), else
on PATH.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from llmspend.budgets import manage
from llmspend.gateway.config import HubConfig
from llmspend.gateway.hub import HubDenied, group_identity
from llmspend.store.engine import open_store
from tests.test_gateway import (
    MESSAGES,
    Gateway,
    Sim,
    _anthropic,
    _free_port,
    _openai,
    sim_and_gateway,
)

REPO = Path(__file__).resolve().parent.parent
SERVICE_TOKEN = secrets.token_hex(32)
ADMIN_TOKEN = secrets.token_hex(32)

HUB_CONFIG = """
c.JupyterHub.bind_url = "http://127.0.0.1:{public}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.pid_file = "{run}/proxy.pid"
c.JupyterHub.db_url = "sqlite:///{run}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{run}/cookie_secret"
c.JupyterHub.pid_file = "{run}/hub.pid"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = {{"ana", "bob"}}
c.JupyterHub.load_groups = {{"acme-churn": {{"users": ["ana"]}}, "lunch": {{"users": ["bob"]}}}}
c.JupyterHub.services = [
    {{"name": "llmspend", "api_token": {service!r}}},
    {{"name": "test-admin", "api_token": {admin!r}}},
]
c.JupyterHub.load_roles = [
    {{"name": "llmspend-service", "services": ["llmspend"],
      "scopes": ["read:users", "read:groups", "users:activity"]}},
    {{"name": "test-admin", "services": ["test-admin"], "scopes": ["admin:users", "tokens"]}},
    {{"name": "llmspend-admin", "users": ["ana"], "scopes": ["custom:llmspend:admin"]}},
]
c.JupyterHub.custom_scopes = {{
    "custom:llmspend:admin": {{"description": "Administer llmspend budgets"}},
}}
c.JupyterHub.extra_user_scopes = {{"access:services!service=llmspend"}}
"""


def _missing(what: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"CI needs {what} for the JupyterHub test")
    pytest.skip(f"{what} not available")


def _chp() -> str:
    for candidate in (
        os.environ.get("LLMSPEND_TEST_CHP"),
        str(REPO / ".venv/hub-proxy/node_modules/.bin/configurable-http-proxy"),
        shutil.which("configurable-http-proxy"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return _missing("configurable-http-proxy (npm)")


class Hub:
    def __init__(self, run: Path) -> None:
        jupyterhub = Path(sys.executable).parent / "jupyterhub"
        if not jupyterhub.exists():
            _missing("the jupyterhub package")
        chp = _chp()
        ports = {"public": _free_port(), "hub": _free_port(), "proxy_api": _free_port()}
        self.api = f"http://127.0.0.1:{ports['hub']}/hub/api"
        cfg = run / "jupyterhub_config.py"
        cfg.write_text(
            HUB_CONFIG.format(**ports, chp=chp, run=run, service=SERVICE_TOKEN, admin=ADMIN_TOKEN)
        )
        self.log = run / "hub.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(jupyterhub), "-f", str(cfg)], cwd=run, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 120
        while True:  # generous polling: no timing is asserted
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.api + "/", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"token {ADMIN_TOKEN}"}
        return httpx.request(method, self.api + path, headers=headers, timeout=30, **kwargs)

    def mint(self, user: str, scopes: list[str] | None = None) -> tuple[str, str]:
        """A new API token for ``user`` (``scopes``: fewer than the user's): (id, token)."""
        body: dict[str, Any] = {"note": "t", "expires_in": 3600}
        if scopes is not None:
            body["scopes"] = scopes
        r = self.admin("POST", f"/users/{user}/tokens", json=body)
        assert r.status_code == 201, r.text
        return r.json()["id"], r.json()["token"]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def hub_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hub, Sim, Gateway]]:
    run = tmp_path_factory.mktemp("hub")
    hub = Hub(run)
    try:
        env = {"JUPYTERHUB_API_TOKEN": SERVICE_TOKEN, "JUPYTERHUB_API_URL": hub.api}
        with sim_and_gateway(run, extra="[hub]\ncache_seconds = 1\n", env=env) as (sim, gateway):
            yield hub, sim, gateway
        assert SERVICE_TOKEN not in gateway.log.read_text()
    finally:
        hub.stop()


def test_a_hub_token_is_a_credential_attributed_to_its_user_and_group(
    hub_stack: tuple[Hub, Sim, Gateway],
) -> None:
    hub, sim, gateway = hub_stack
    _, token = hub.mint("ana")
    before, sent = len(gateway.rows()), sim.count()
    _openai(gateway, token).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=20
    )
    _anthropic(gateway, token).messages.create(
        model="claude-sonnet-4-5", max_tokens=20, messages=MESSAGES
    )
    assert sim.count() - sent == 2
    rows = gateway.rows()[before:]
    assert [(r.provider, r.org_name, r.project_name, r.user_name, r.status) for r in rows] == [
        ("openai", "acme", "churn", "ana", "ok"),
        ("anthropic", "acme", "churn", "ana", "ok"),
    ]
    assert token not in sim.last_headers().values()
    # A token with a single-user server's scopes only is a credential too.
    _, server_like = hub.mint("ana", scopes=["users:activity!user", "access:servers!server"])
    _openai(gateway, server_like).embeddings.create(model="text-embedding-3-small", input="x")
    last = gateway.rows()[-1]
    assert (last.api, last.org_name, last.project_name, last.user_name) == (
        "embeddings", "acme", "churn", "ana"
    )  # fmt: skip


def test_a_made_up_hub_token_gets_the_providers_401(hub_stack: tuple[Hub, Sim, Gateway]) -> None:
    import anthropic
    import openai

    _, sim, gateway = hub_stack
    sent = sim.count()
    with pytest.raises(openai.AuthenticationError):
        _openai(gateway, secrets.token_hex(32)).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=5
        )
    with pytest.raises(anthropic.AuthenticationError):
        _anthropic(gateway, "not-a-token").messages.create(
            model="claude-sonnet-4-5", max_tokens=5, messages=MESSAGES
        )
    with pytest.raises(openai.AuthenticationError):  # a made-up gateway key is no hub token
        _openai(gateway, "lsk_" + secrets.token_urlsafe(32)).embeddings.create(
            model="text-embedding-3-small", input="x"
        )
    assert sim.count() == sent


def test_a_service_token_is_no_users_credential(hub_stack: tuple[Hub, Sim, Gateway]) -> None:
    # The gateway's own service token and another service's (an admin one) name no user:
    # 401 at the proxy and at the data API, nothing sent, recorded or logged.
    _, sim, gateway = hub_stack
    sent, rows = sim.count(), len(gateway.rows())
    for token in (SERVICE_TOKEN, ADMIN_TOKEN):
        headers = {"Authorization": f"Bearer {token}"}
        r = httpx.post(gateway.url + "/openai/v1/chat/completions", headers=headers,
                       json={"model": "gpt-4o-mini", "messages": MESSAGES}, timeout=30)  # fmt: skip
        assert r.status_code == 401, r.text
        r = httpx.get(gateway.url + "/llmspend/api/v1/whoami", headers=headers, timeout=30)
        assert r.status_code == 401 and token not in r.text, r.text
    assert sim.count() == sent and len(gateway.rows()) == rows
    assert ADMIN_TOKEN not in gateway.log.read_text()


def test_a_user_in_no_mapped_group_is_refused_without_retry(
    hub_stack: tuple[Hub, Sim, Gateway],
) -> None:
    import openai

    hub, sim, gateway = hub_stack
    _, token = hub.mint("bob")  # bob is only in "lunch", which names no org and project
    sent = sim.count()
    with pytest.raises(openai.PermissionDeniedError, match="no group"):
        _openai(gateway, token).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=5
        )
    assert sim.count() == sent


def test_a_revoked_hub_token_is_refused_once_the_cache_age_has_passed(
    hub_stack: tuple[Hub, Sim, Gateway],
) -> None:
    import openai

    hub, _, gateway = hub_stack
    token_id, token = hub.mint("ana")
    headers = {"Authorization": f"Bearer {token}"}
    models = gateway.url + "/openai/v1/models"  # authenticated, forwarded untracked
    assert httpx.get(models, headers=headers, timeout=30).status_code == 200
    assert hub.admin("DELETE", f"/users/ana/tokens/{token_id}").status_code == 204
    deadline = time.monotonic() + 120  # cache_seconds = 1: refused about a second later
    while httpx.get(models, headers=headers, timeout=30).status_code != 401:
        assert time.monotonic() < deadline, "a revoked hub token was never refused"
    with pytest.raises(openai.AuthenticationError):
        _openai(gateway, token).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=5
        )


def test_a_hub_role_with_the_admin_scope_grants_admin_at_the_data_api(
    hub_stack: tuple[Hub, Sim, Gateway], tmp_path: Path
) -> None:
    hub, sim, _ = hub_stack
    # bob's only group maps to nothing: this gateway charges such users to acme/general, so
    # he is a plain member there (not refused for want of a project)
    env = {"JUPYTERHUB_API_TOKEN": SERVICE_TOKEN, "JUPYTERHUB_API_URL": hub.api}
    extra = '[hub]\ncache_seconds = 1\ndefault = {org = "acme", project = "general"}\n'
    gateway = Gateway(tmp_path, sim, db=f"sqlite:///{tmp_path / 'roles.db'}", extra=extra,
                      env=env, name="gw-roles")  # fmt: skip
    try:
        tokens = {user: hub.mint(user)[1] for user in ("ana", "bob")}

        def call(user: str, method: str, path: str, **kw: Any) -> httpx.Response:
            headers = {"authorization": f"Bearer {tokens[user]}"}
            url = gateway.url + "/llmspend/api/v1" + path
            return httpx.request(method, url, headers=headers, timeout=60, **kw)

        assert call("ana", "GET", "/whoami").json()["admin"] is True
        me = call("bob", "GET", "/whoami").json()
        assert (me["admin"], me["owns"], me["org"], me["user"]) == (False, [], "acme", "bob")
        body = {"scope": "org", "name": "acme", "limit": "250", "mode": "hard"}
        r = call("bob", "POST", "/budgets", json=body)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["missing_role"] == "owner of acme or admin"
        r = call("ana", "POST", "/budgets", json=body)
        assert r.status_code == 200, r.text
        r = call("bob", "PATCH", "/budgets/org/acme", json={"limit": "1000000"})
        assert r.status_code == 403, r.text
        log = manage.audit_log(open_store(gateway.db))
        assert list(log[log["budget"] == "org acme"]["actor"]) == ["ana"]
        (org,) = [b for b in manage.list_budgets(open_store(gateway.db)) if b.scope == "org"]
        assert org.limit_usd == 250
    finally:
        log_text = gateway.stop()
    assert SERVICE_TOKEN not in log_text and tokens["ana"] not in log_text


def _who(cfg: HubConfig, user: str, groups: list[str]) -> tuple[str, str, str]:
    found = group_identity(cfg, user, groups)
    return found.org, found.project, found.user


def test_group_mapping_explicit_then_pattern_then_default() -> None:
    cfg = HubConfig(
        api_url="http://127.0.0.1:1/hub/api", token="t", group_pattern="team-{org}-{project}",
        groups={"ds": ("acme", "science")},
    )  # fmt: skip
    assert _who(cfg, "ana", ["team-acme-churn", "ds"]) == ("acme", "science", "ana")
    assert _who(cfg, "ana", ["zz", "team-acme-churn"]) == ("acme", "churn", "ana")
    with pytest.raises(HubDenied, match="no group"):
        group_identity(cfg, "bob", ["lunch"])
    fallback = HubConfig(api_url=cfg.api_url, token="t", default=("acme", "general"))
    assert _who(fallback, "bob", ["lunch"]) == ("acme", "general", "bob")


def test_a_role_group_never_names_an_org_and_project() -> None:
    # docs/team.md's own example: admins by "llmspend-admins", owners by "churn-leads"; the
    # default pattern "{org}-{project}" must not charge their users to org "llmspend"/"churn".
    cfg = HubConfig(api_url="http://127.0.0.1:1/hub/api", token="t")
    roles = {"llmspend-admins", "churn-leads"}
    with pytest.raises(HubDenied, match="no group"):
        group_identity(cfg, "olga", ["llmspend-admins"], roles)
    with pytest.raises(HubDenied, match="no group"):
        group_identity(cfg, "olga", ["churn-leads"], roles)
    assert group_identity(cfg, "olga", ["churn-leads", "zeta-x"], roles).org == "zeta"
    explicit = HubConfig(api_url=cfg.api_url, token="t", groups={"churn-leads": ("acme", "c")})
    assert _who_roles(explicit, ["churn-leads"], roles) == ("acme", "c")  # named on purpose


def _who_roles(cfg: HubConfig, groups: list[str], roles: set[str]) -> tuple[str, str]:
    found = group_identity(cfg, "olga", groups, roles)
    return found.org, found.project


def test_a_group_that_grants_a_role_never_charges_its_users_to_an_org(
    hub_stack: tuple[Hub, Sim, Gateway], tmp_path: Path
) -> None:
    import openai

    hub, sim, _ = hub_stack
    # "acme-churn" matches the default pattern, but this gateway's [roles] makes it the
    # admins' group: ana (in it alone) is an admin, charged to no org and project
    env = {"JUPYTERHUB_API_TOKEN": SERVICE_TOKEN, "JUPYTERHUB_API_URL": hub.api}
    extra = '[hub]\ncache_seconds = 1\n[roles]\nadmin_groups = ["acme-churn"]\n'
    gateway = Gateway(tmp_path, sim, db=f"sqlite:///{tmp_path / 'rg.db'}", extra=extra,
                      env=env, name="gw-role-groups")  # fmt: skip
    try:
        _, token = hub.mint("ana")
        sent = sim.count()
        with pytest.raises(openai.PermissionDeniedError, match="no group"):
            _openai(gateway, token).chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=5
            )
        assert sim.count() == sent
        assert gateway.rows() == []
    finally:
        gateway.stop()
