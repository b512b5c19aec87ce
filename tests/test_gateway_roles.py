"""Roles and the gateway's scoped data API (issue 25): the decisions of
``llmspend.gateway.roles`` case by case, then bob's list against real gateways on one
PostgreSQL store — refused for bob as a member and as the owner of another project, allowed
for ana as the owner of her project and for an admin, the audit naming the real actor."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmspend.budgets import manage
from llmspend.budgets.spec import parse_key
from llmspend.errors import BudgetError, ConfigError
from llmspend.gateway.keys import Identity
from llmspend.gateway.roles import (
    RoleConfig,
    Roles,
    can_acknowledge_alert,
    can_manage_budget,
    can_read_records,
    can_see_budget,
    parse_roles,
    roles_for,
)
from llmspend.store.engine import open_store
from tests.pgserver import PgServer
from tests.test_gateway import MESSAGES, Gateway, _openai, sim_and_gateway

# -- the decisions, as units ------------------------------------------------------------------

CONFIG = parse_roles({
    "admins": ["root"],
    "admin_groups": ["llmspend-admins"],
    "owners": {"acme": ["olga"], "acme/churn": ["ana"], "acme/fraud": ["bob"]},
    "group_owners": {"fraud-leads": ["acme/fraud"]},
})  # fmt: skip


def _roles(user: str, project: str = "churn", **hub: Any) -> Roles:
    return roles_for(Identity(1, "acme", project, user), CONFIG, **hub)


def test_roles_come_from_the_config_and_from_hub_scopes_and_groups() -> None:
    assert _roles("root").admin and not _roles("ana").admin
    assert _roles("olga").orgs == {"acme"}
    assert _roles("ana").projects == {("acme", "churn")}
    assert _roles("dan").orgs == set() and _roles("dan").projects == set()
    assert _roles("dan", hub_scopes=["custom:llmspend:admin"]).admin
    assert _roles("dan", hub_scopes=["read:users"]).admin is False
    assert _roles("dan", hub_groups=["llmspend-admins"]).admin
    assert _roles("dan", hub_groups=["fraud-leads"]).projects == {("acme", "fraud")}
    assert parse_roles(None) == RoleConfig()


def test_an_owner_grant_covers_the_users_key_in_that_org_only() -> None:
    # ana owns acme/churn and olga owns acme: keys made for "ana" and "olga" of another
    # org are other users (budgets and records name users per org) and own nothing there.
    assert roles_for(Identity(1, "globex", "x", "ana"), CONFIG).projects == set()
    assert roles_for(Identity(1, "globex", "x", "olga"), CONFIG).orgs == set()
    globex_ana = roles_for(Identity(1, "globex", "x", "ana"), CONFIG)
    assert can_manage_budget(globex_ana, K("project", "acme/churn")) is not None
    assert can_read_records(globex_ana, "acme", "churn", None) is not None
    # a hub group's grant is the hub's word on one hub user, whatever org they are charged to
    assert roles_for(
        Identity(0, "globex", "x", "dan"), CONFIG, hub_groups=["fraud-leads"]
    ).projects == {("acme", "fraud")}
    # an admin is an admin by name, whatever org the key names
    assert roles_for(Identity(1, "globex", "x", "root"), CONFIG).admin


@pytest.mark.parametrize(
    "spec",
    [
        [],
        {"admins": "root"},
        {"owners": {"a/b/c": ["x"]}},
        {"owners": {"acme": "x"}},
        {"owner": {}},
        {"admin_scope": ""},
        {"group_owners": {"g": ["bad/name/x"]}},
    ],
)
def test_a_malformed_roles_table_is_a_config_error(spec: Any) -> None:
    with pytest.raises(ConfigError, match="roles"):
        parse_roles(spec)


K = parse_key
BUDGETS = {
    "org": K("org", "acme"),
    "churn": K("project", "acme/churn"),
    "fraud": K("project", "acme/fraud"),
    "projects-default": K("project", "acme/*"),
    "ana-org-wide": K("user", "acme/ana"),
    "ana": K("user", "acme/churn/ana"),
    "bob": K("user", "acme/churn/bob"),
    "churn-users-default": K("user", "acme/churn/*"),
    "other-org": K("org", "globex"),
}
# Who may see / manage each budget: (member bob in churn, ana owner of churn, olga owner of
# acme, root admin).
SEE = {
    "org": "BAOR", "churn": "BAOR", "fraud": "OR", "projects-default": "BAOR",
    "ana-org-wide": "AOR", "ana": "AOR", "bob": "BAOR", "churn-users-default": "BAOR",
    "other-org": "R",
}  # fmt: skip
MANAGE = {
    "org": "OR", "churn": "AOR", "fraud": "OR", "projects-default": "OR", "ana-org-wide": "OR",
    "ana": "AOR", "bob": "AOR", "churn-users-default": "AOR", "other-org": "R",
}  # fmt: skip
ACK = {**MANAGE, "ana": "AOR", "bob": "BAOR", "ana-org-wide": "AOR"}
WHO = {"B": "dan", "A": "ana", "O": "olga", "R": "root"}


@pytest.mark.parametrize("budget", list(BUDGETS))
def test_who_may_see_manage_and_acknowledge_each_budget(budget: str) -> None:
    key = BUDGETS[budget]
    for letter, user in WHO.items():
        roles = _roles("bob" if letter == "B" else user)
        if letter == "B":  # bob, as a member of churn (not as fraud's owner)
            roles = roles_for(Identity(1, "acme", "churn", "bob"), RoleConfig())
        assert (can_see_budget(roles, key) is None) == (letter in SEE[budget]), (budget, user)
        assert (can_manage_budget(roles, key) is None) == (letter in MANAGE[budget]), user
        assert (can_acknowledge_alert(roles, key) is None) == (letter in ACK[budget]), user
    refused = can_manage_budget(roles_for(Identity(1, "acme", "churn", "bob"), CONFIG), key)
    assert refused is None or "owner of" in refused


def test_who_may_read_which_records() -> None:
    member = roles_for(Identity(1, "acme", "churn", "bob"), RoleConfig())
    ana, olga, root = _roles("ana"), _roles("olga"), _roles("root")
    assert can_read_records(member, "acme", None, "bob") is None
    assert can_read_records(member, "acme", "churn", "bob") is None
    assert can_read_records(member, "acme", "churn", "ana") == "owner of acme/churn or admin"
    assert can_read_records(member, "acme", None, None) == "owner of acme or admin"
    assert can_read_records(member, "globex", None, "bob") is not None
    assert can_read_records(member, None, None, "bob") == "admin"
    assert can_read_records(ana, "acme", "churn", None) is None
    assert can_read_records(ana, "acme", "churn", "carl") is None
    assert can_read_records(ana, "acme", "fraud", None) is not None
    assert can_read_records(ana, "acme", None, "carl") is not None  # across the org: no
    assert can_read_records(olga, "acme", None, None) is None
    assert can_read_records(olga, "globex", None, None) is not None
    assert can_read_records(root, None, None, None) is None


# -- bob's list against real gateways -------------------------------------------------------

ROLES_TOML = """
[roles]
admins = ["root"]
[roles.owners]
"acme/churn" = ["ana"]
"""
HOOK = "https://hooks.example.com/services/T000/B000/SECRETxyz"  # never crossed: no traffic
API = "/llmspend/api/v1"


class Stack:
    def __init__(self, tmp: Path, pg: PgServer) -> None:
        db = pg.create_database()
        # Two replicas on one store: in the second, bob owns another project. Both run with
        # LLMSPEND_USER=admin: the gateway's own environment names nobody.
        env = {"LLMSPEND_USER": "admin"}
        with ExitStack() as running:  # stopped here if the set-up fails
            self.sim, self.gw = running.enter_context(
                sim_and_gateway(tmp, db=db, extra=ROLES_TOML, env=env)
            )
            owner_toml = ROLES_TOML + '"acme/fraud" = ["bob"]\n'
            self.gw_owner = Gateway(tmp, self.sim, db=db, extra=owner_toml, env=env, name="gw2")
            running.callback(self.gw_owner.stop)
            self.store = open_store(db)
            users = ("ana", "bob", "root", "carl")
            self.keys = {u: self.gw.new_key("acme", "churn", u) for u in users}
            self._running = running.pop_all()

    def call(self, user: str, method: str, path: str, *, owner_gw: bool = False,
             headers: dict[str, str] | None = None, **kw: Any) -> httpx.Response:  # fmt: skip
        gw = self.gw_owner if owner_gw else self.gw
        auth = {"authorization": f"Bearer {self.keys[user]}", **(headers or {})}
        return httpx.request(method, gw.url + API + path, headers=auth, timeout=60, **kw)

    def stop(self) -> None:
        self._running.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, pg_server: PgServer) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("roles"), pg_server)
    try:
        for body in (
            {"scope": "org", "name": "acme", "limit": "500"},
            {"scope": "project", "name": "acme/churn", "limit": "100"},
            {"scope": "project", "name": "acme/fraud", "limit": "50"},
            {"scope": "user", "name": "acme/ana", "limit": "1000", "webhook_url": HOOK},
            {"scope": "user", "name": "acme/churn/bob", "limit": "1"},
            {"scope": "user", "name": "acme/churn/ana", "limit": "0.000001", "mode": "soft",
             "thresholds": ["1.0"]},
            *({"scope": "user", "name": f"acme/churn/tmp{i}", "limit": "1"} for i in (1, 2)),
        ):  # fmt: skip
            r = s.call("root", "POST", "/budgets", json=body)
            assert r.status_code == 200, r.text
        _openai(s.gw, s.keys["ana"]).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=5
        )
        yield s
    finally:
        s.stop()


REFUSED_AS = [("bob", False), ("bob", True)]  # a member; the owner of another project
ALLOWED_AS = ["ana", "root"]


def _refused(r: httpx.Response, role: str) -> None:
    assert r.status_code == 403, r.text
    assert r.json()["error"]["missing_role"] == role, r.text


def _audit_actors(stack: Stack, budget: str) -> list[str]:
    log = manage.audit_log(stack.store)
    return list(log[log["budget"] == budget]["actor"])


@pytest.mark.postgres
def test_without_a_live_key_nothing_is_answered(stack: Stack) -> None:
    for path in ("/budgets", "/status", "/records", "/alerts"):
        r = httpx.get(stack.gw.url + API + path, timeout=60)
        assert r.status_code == 401
        r = httpx.get(stack.gw.url + API + path, headers={"x-api-key": "lsk_nope"}, timeout=60)
        assert r.status_code == 401


@pytest.mark.postgres
def test_bob_lists_only_the_budgets_that_apply_to_him_and_no_webhook_secret(
    stack: Stack,
) -> None:
    def names(user: str, owner_gw: bool = False) -> set[str]:
        r = stack.call(user, "GET", "/budgets", owner_gw=owner_gw)
        assert r.status_code == 200 and "SECRET" not in r.text, r.text
        return {f"{b['scope']} {b['name']}" for b in r.json()}

    mine = {"org acme", "project acme/churn", "user acme/churn/bob"}
    assert names("bob") == mine
    assert names("bob", owner_gw=True) == mine | {"project acme/fraud"}
    assert names("ana") == {
        "org acme", "project acme/churn", "user acme/ana", "user acme/churn/ana",
        "user acme/churn/bob", "user acme/churn/tmp1", "user acme/churn/tmp2",
    }  # fmt: skip
    assert names("root") == names("ana") | {"project acme/fraud"}
    (ana_hook,) = [b for b in stack.call("root", "GET", "/budgets").json() if b["webhook_url"]]
    assert ana_hook["webhook_url"] == "https://hooks.example.com/***"
    status = stack.call("bob", "GET", "/status")
    assert status.status_code == 200
    assert {s["budget"] for s in status.json()} == {"acme", "acme/churn", "acme/churn/bob"}


@pytest.mark.postgres
def test_bob_cannot_read_anas_records_and_tags_ana_and_an_admin_can(stack: Stack) -> None:
    for user, owner_gw in REFUSED_AS:
        _refused(stack.call(user, "GET", "/records", owner_gw=owner_gw,
                            params={"user": "ana"}), "owner of acme or admin")  # fmt: skip
        r = stack.call(user, "GET", "/records", owner_gw=owner_gw,
                       params={"project": "churn", "columns": ["user", "tags"]})  # fmt: skip
        _refused(r, "owner of acme/churn or admin")
        r = stack.call(user, "GET", "/records", params={"user": "bob"})
        assert r.status_code == 200 and r.json() == []  # his own: none yet
    for user in ALLOWED_AS:
        params = {"project": "churn", "user": "ana", "columns": ["user", "model", "tags"]}
        r = stack.call(user, "GET", "/records", params=params)
        assert r.status_code == 200, r.text
        (row,) = r.json()
        assert row["user"] == "ana" and row["model"].startswith("gpt-4o-mini")
        assert "tags" in row
    import pyarrow as pa

    from llmspend.store.arrowio import to_pandas

    r = stack.call(
        "ana", "GET", "/records", headers={"accept": "application/vnd.apache.arrow.stream"}
    )
    assert r.headers["content-type"] == "application/vnd.apache.arrow.stream"
    frame = to_pandas(pa.ipc.open_stream(io.BytesIO(r.content)).read_all())
    assert list(frame["user"]) == ["ana"] and frame["cost_usd"].iloc[0] > 0


@pytest.mark.postgres
def test_cut_anas_hard_budget(stack: Stack) -> None:
    path = "/budgets/user/acme/ana"
    for user, owner_gw in REFUSED_AS:
        r = stack.call(user, "PATCH", path, owner_gw=owner_gw, json={"limit": "0.000001"})
        _refused(r, "owner of acme or admin")
    # ana's org-wide user budget is the org's to set: her project's owner may not either.
    _refused(stack.call("ana", "PATCH", path, json={"limit": "0.000001"}), "owner of acme or admin")
    r = stack.call("ana", "PATCH", "/budgets/user/acme/churn/ana", json={"limit": "0.000002"})
    assert r.status_code == 200 and r.json()["limit_usd"] == "0.000002"
    r = stack.call("root", "PATCH", path, json={"limit": "0.000001"})
    assert r.status_code == 200 and r.json()["limit_usd"] == "0.000001", r.text
    assert "SECRET" not in r.text
    assert _audit_actors(stack, "user acme/ana")[-1] == "root"
    assert _audit_actors(stack, "user acme/churn/ana")[-1] == "ana"


@pytest.mark.postgres
def test_turn_the_org_cap_soft_at_a_million(stack: Stack) -> None:
    change = {"mode": "soft", "limit": "1000000"}
    for user, owner_gw in [*REFUSED_AS, ("ana", False)]:
        r = stack.call(user, "PATCH", "/budgets/org/acme", owner_gw=owner_gw, json=change)
        _refused(r, "owner of acme or admin")
    r = stack.call("root", "PATCH", "/budgets/org/acme", json=change)
    assert r.status_code == 200 and r.json()["mode"] == "soft"
    assert _audit_actors(stack, "org acme")[-1] == "root"


@pytest.mark.postgres
def test_bob_cannot_raise_his_own_cap(stack: Stack) -> None:
    path = "/budgets/user/acme/churn/bob"
    for user, owner_gw in REFUSED_AS:
        _refused(stack.call(user, "PATCH", path, owner_gw=owner_gw, json={"limit": "1000"}),
                 "owner of acme/churn or admin")  # fmt: skip
        body = {"scope": "user", "name": "acme/churn/bob", "limit": "1000"}
        _refused(stack.call(user, "POST", "/budgets", owner_gw=owner_gw, json=body),
                 "owner of acme/churn or admin")  # fmt: skip
    for user, limit in (("ana", "2"), ("root", "3")):
        r = stack.call(user, "PATCH", path, json={"limit": limit})
        assert r.status_code == 200 and r.json()["limit_usd"] == limit
    assert _audit_actors(stack, "user acme/churn/bob")[-2:] == ["ana", "root"]


@pytest.mark.postgres
def test_pretending_to_be_admin_by_header_or_environment_changes_nothing(stack: Stack) -> None:
    fake = {"x-llmspend-user": "admin", "x-forwarded-user": "admin", "x-remote-user": "admin",
            "x-jupyterhub-user": "admin"}  # fmt: skip
    for user, owner_gw in REFUSED_AS:
        r = stack.call(user, "DELETE", "/budgets/user/acme/churn/tmp1", owner_gw=owner_gw,
                       headers=fake)  # fmt: skip
        _refused(r, "owner of acme/churn or admin")
        assert "bob may not delete" in r.json()["error"]["message"]
    for user, name in (("ana", "tmp1"), ("root", "tmp2")):
        r = stack.call(user, "DELETE", f"/budgets/user/acme/churn/{name}", headers=fake)
        assert r.status_code == 200, r.text
        assert _audit_actors(stack, f"user acme/churn/{name}") == ["root", user]
    assert "admin" not in set(manage.audit_log(stack.store)["actor"])
    assert "bob" not in set(manage.audit_log(stack.store)["actor"])


@pytest.mark.postgres
def test_bob_cannot_acknowledge_anas_alert(stack: Stack) -> None:
    r = stack.call("root", "GET", "/alerts")
    (alert,) = [a for a in r.json() if a["budget"] == "acme/churn/ana"]
    assert alert["acknowledged"] is False
    for user, owner_gw in REFUSED_AS:
        assert alert["id"] not in {a["id"] for a in stack.call(user, "GET", "/alerts").json()}
        r = stack.call(user, "POST", "/alerts/acknowledge", owner_gw=owner_gw,
                       json={"ids": [alert["id"]]})  # fmt: skip
        # an alert the caller may not see is answered as one that does not exist
        assert r.status_code == 400, r.text
        assert r.json()["error"]["message"] == f"no alert with id {alert['id']}"
    r = stack.call("ana", "POST", "/alerts/acknowledge", json={"ids": [alert["id"]]})
    assert r.status_code == 200 and r.json() == {"acknowledged": 1}
    r = stack.call("root", "POST", "/alerts/acknowledge", json={"ids": [alert["id"]]})
    assert r.status_code == 200 and r.json() == {"acknowledged": 0}  # already done
    (alert,) = [a for a in stack.call("ana", "GET", "/alerts").json() if a["id"] == alert["id"]]
    assert alert["acknowledged"] is True


@pytest.mark.postgres
def test_bad_input_is_a_400_with_set_budgets_message(stack: Stack, tmp_path: Path) -> None:
    local = open_store(f"sqlite:///{tmp_path / 's.db'}")
    bodies: list[dict[str, Any]] = [
        {"scope": "project", "name": "acme/churn", "limit": "-5"},
        {"scope": "project", "name": "acme/churn", "limit": "5", "period": "fortnight"},
        {"scope": "team", "name": "acme", "limit": "5"},
        {"scope": "project", "name": "acme/churn", "limit": "5", "thresholds": ["2"]},
    ]
    for body in bodies:
        rest = dict(body)
        with pytest.raises(BudgetError) as expected:
            manage.set_budget(local, rest.pop("scope"), rest.pop("name"), rest.pop("limit"),
                              **rest)  # fmt: skip
        r = stack.call("root", "POST", "/budgets", json=body)
        assert r.status_code == 400 and r.json()["error"]["message"] == str(expected.value)
    r = stack.call("root", "POST", "/budgets", json={"scope": "org", "name": "x", "limit": 1,
                                                     "owner": "me"})  # fmt: skip
    assert r.status_code == 400 and "owner" in r.json()["error"]["message"]
