"""Two gateway replicas on one PostgreSQL store, eight client processes (the real openai
SDK, its default retries) racing one hard budget through both: the store is the only
state, so spent stays within the limit, refused calls reach nothing upstream, and no SDK
retries a refusal."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pgserver import PgServer
from tests.test_gateway import MESSAGES, Gateway, Sim

pytestmark = pytest.mark.postgres

CLIENTS = 8
CALLS = 6  # per client


def _client(urls: list[str], key: str, index: int, barrier: Any) -> dict[str, int]:
    """One client process: ``CALLS`` chat calls alternating between the replicas."""
    import httpx2  # the openai SDK's own HTTP library
    import openai

    attempts = 0

    def count(request: httpx2.Request) -> None:
        nonlocal attempts
        attempts += 1

    done = {"ok": 0, "refused": 0, "other": 0}
    with httpx2.Client(event_hooks={"request": [count]}, timeout=120) as http:
        clients: list[Any] = [
            openai.OpenAI(base_url=u + "/openai/v1", api_key=key, http_client=http) for u in urls
        ]
        barrier.wait()  # every client starts together
        for i in range(CALLS):
            try:
                clients[(index + i) % len(clients)].chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, max_tokens=50
                )
                done["ok"] += 1
            except openai.PermissionDeniedError:
                done["refused"] += 1
            except openai.APIError:
                done["other"] += 1
    return {**done, "attempts": attempts}


@pytest.fixture(scope="module")
def replicas(
    pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Sim, list[Gateway]]]:
    tmp: Path = tmp_path_factory.mktemp("replicas")
    db = pg_server.create_database()
    sim = Sim()
    gateways: list[Gateway] = []
    try:
        for name in ("a", "b"):  # one after the other: the first creates the schema
            gateways.append(Gateway(tmp, sim, db=db, name=name))
        yield sim, gateways
    finally:
        for g in gateways:
            g.stop()
        sim.stop()


def test_two_replicas_hold_one_hard_budget_against_eight_racing_clients(
    replicas: tuple[Sim, list[Gateway]],
) -> None:
    sim, (a, b) = replicas
    # The worst case one call reserves, read from a probe under a roomy budget.
    a.cli("budget", "set", "project", "acme/probe", "100/day", "--hard")
    probe = httpx.post(
        a.url + "/openai/v1/chat/completions",
        headers={"Authorization": f"Bearer {a.new_key('acme', 'probe', 'p')}"},
        json={"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 50},
        timeout=60,
    )
    assert probe.status_code == 200, probe.text
    estimate = Decimal(probe.headers["x-llmspend-estimate-usd"])
    limit = estimate * 10  # room for some calls of the 48, not all
    a.cli("budget", "set", "project", "acme/race", f"{limit}/day", "--hard")
    key = b.new_key("acme", "race", "ana")
    sent = sim.count()

    ctx = mp.get_context("spawn")
    barrier = ctx.Manager().Barrier(CLIENTS)
    with ctx.Pool(CLIENTS) as pool:
        results = pool.starmap(_client, [([a.url, b.url], key, i, barrier) for i in range(CLIENTS)])
    ok = sum(r["ok"] for r in results)
    refused = sum(r["refused"] for r in results)
    assert sum(r["other"] for r in results) == 0, results
    assert ok + refused == CLIENTS * CALLS
    assert ok >= 1 and refused >= 1, results  # the budget was raced to its end
    # No SDK retried anything: one HTTP attempt per call.
    assert sum(r["attempts"] for r in results) == CLIENTS * CALLS
    # Only the admitted calls reached the upstream.
    assert sim.count() - sent == ok
    rows = a.rows("project_name = :p", p="race")
    assert sorted({r.status for r in rows}) == ["ok", "refused"]
    assert sum(r.status == "ok" for r in rows) == ok
    assert sum(r.status == "refused" for r in rows) == refused
    spent = sum(r.cost_nanos for r in rows)
    assert 0 < spent <= limit * 10**9
