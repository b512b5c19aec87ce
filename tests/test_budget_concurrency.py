"""Budgets under concurrency and process death, through the real openai SDK and llmspend.sim."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal

import pytest

import llmspend
from llmspend.call import estimate_input_tokens
from llmspend.timeutil import shift_clock

PROMPT = "summarize the quarter #sim:tokens={tokens:05d} #sim:completion=20"
MAX_TOKENS = 20


def exact_prompt() -> tuple[str, int]:
    """A prompt for which the sim reports exactly the tokens llmspend's estimate assumes."""
    placeholder = PROMPT.format(tokens=0)
    tokens = estimate_input_tokens([[{"role": "user", "content": placeholder}]])
    return PROMPT.format(tokens=tokens), tokens


WORKER = r"""
import sys, llmspend, openai
url, base, attempts, prompt = sys.argv[1:5]
attempts = int(attempts)
llmspend.install(url, org="acme", project="churn", user="ana")
client = openai.OpenAI(api_key="x", base_url=base, max_retries=0)
ok = refused = 0
print("ready", flush=True)  # a rendezvous: every worker starts its burst on the test's "go"
assert sys.stdin.readline() == "go\n"
for _ in range(attempts):
    try:
        client.chat.completions.create(
            model="gpt-4o-mini", max_tokens=20, messages=[{"role": "user", "content": prompt}],
            service_tier="default",  # reserved at the tier served: estimate == cost
        )
        ok += 1
    except llmspend.BudgetExceeded:
        refused += 1
print(ok, refused)
"""


@pytest.mark.usefixtures("patient_locks")
def test_eight_processes_never_overspend_a_hard_budget(store_url: str, sim) -> None:  # type: ignore[no-untyped-def]
    prompt, tokens = exact_prompt()
    one = llmspend.price("gpt-4o-mini", input_tokens=tokens, output_tokens=MAX_TOKENS).total_usd
    assert one is not None
    n_allowed = 12
    llmspend.install(store_url, org="acme", project="churn", user="ana")
    try:
        llmspend.set_budget("project", "acme/churn", one * n_allowed, "total")
        # the estimate equals the actual cost (the tier pinned), so the outcome does not
        # depend on timing
        import openai

        probe = openai.OpenAI(api_key="x", base_url=sim.openai_base_url, max_retries=0)
        probe.chat.completions.create(
            model="gpt-4o-mini",
            max_tokens=MAX_TOKENS,
            messages=[{"role": "user", "content": prompt}],
            service_tier="default",  # a tier left to the project is reserved at priority
        )
        row = llmspend.records().iloc[-1]
        assert row.cost_usd == row.estimate_usd == one
        sim.reset()
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    WORKER,
                    store_url,
                    sim.openai_base_url,
                    "4",
                    prompt,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        for p in procs:  # however slow start-up is, all eight are ready before any goes
            assert p.stdout is not None and p.stdout.readline() == "ready\n", p.communicate()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        ok = refused = 0
        for p in procs:
            out, err = p.communicate(timeout=180)
            assert p.returncode == 0, err
            a, b = map(int, out.split()[-2:])
            ok, refused = ok + a, refused + b
        assert ok == n_allowed - 1  # the probe took one
        assert refused == 32 - ok
        assert sim.request_count == ok  # refused calls sent nothing
        (status,) = llmspend.budget_status("project", "acme/churn")
        assert status.spent_usd == one * n_allowed == status.limit_usd
        assert status.reserved_usd == 0
        rec = llmspend.records()
        assert (rec.status == "ok").sum() == n_allowed and (
            rec.status == "refused"
        ).sum() == refused
        assert sum(rec.cost_usd) == status.spent_usd
    finally:
        llmspend.uninstall()


KILLED = r"""
import sys, llmspend, openai
url, base = sys.argv[1], sys.argv[2]
llmspend.install(url, org="acme", project="churn", user="ana")
client = openai.OpenAI(api_key="x", base_url=base, max_retries=0, timeout=60)
client.chat.completions.create(model="gpt-4o-mini", max_tokens=100,
                               messages=[{"role": "user", "content": "wait #sim:hang"}])
"""


def test_sigkill_while_holding_a_reservation_heals_after_the_lease(tmp_path, sim) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'k.sqlite'}"
    llmspend.install(url, org="acme", project="churn", user="ana")
    try:
        llmspend.set_budget("project", "acme/churn", "1", "total")
        sim.reset()
        env = dict(os.environ, LLMSPEND_LEASE_SECONDS="30")
        proc = subprocess.Popen([sys.executable, "-c", KILLED, url, sim.openai_base_url], env=env)
        deadline = time.monotonic() + 60
        while sim.request_count == 0:  # the request is in flight: the reservation is held
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        (held,) = llmspend.budget_status("project", "acme/churn")
        assert held.reserved_usd > 0 and held.remaining_usd < Decimal(1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        (still,) = llmspend.budget_status("project", "acme/churn")
        assert still.reserved_usd == held.reserved_usd  # the lease has not run out yet
        shift_clock(dt.timedelta(seconds=31))  # ... now it has
        (healed,) = llmspend.budget_status("project", "acme/churn")
        assert healed.reserved_usd == 0 and healed.remaining_usd == Decimal(1)
    finally:
        shift_clock(dt.timedelta(0))
        llmspend.uninstall()
