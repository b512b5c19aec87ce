"""The ``llmspend`` CLI in team mode (issue 25): run as a subprocess with the gateway's URL
and a gateway key and no database URL, the user's commands (budget, export) go through the
gateway, scoped by role; the admin commands say they work on the database itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from llmspend.usage import fetch_records
from tests.teamstack import Stack, module_stack

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


stack = module_stack("teamcli")


class Cli:
    """``python -m llmspend`` as one user of the gateway, with no database URL."""

    def __init__(self, stack: Stack, home: Path, user: str, *, env_url: bool = True) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSPEND_")}
        self.env.pop("JUPYTERHUB_API_TOKEN", None)
        self.env.update(LLMSPEND_HOME=str(home), LLMSPEND_GATEWAY_KEY=stack.keys[user])
        self.prefix = [] if env_url else ["--gateway", stack.gw.url]
        if env_url:
            self.env["LLMSPEND_GATEWAY_URL"] = stack.gw.url

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "llmspend", *self.prefix, *args],
            env=self.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert (done.returncode == 0) == ok, (done.returncode, done.stdout, done.stderr)
        return done


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    yield home
    assert not home.exists() or not any(home.rglob("*")), list(home.rglob("*"))  # no store


def test_as_owner_budgets_are_managed_and_records_exported_through_the_gateway(
    stack: Stack, home: Path, tmp_path: Path
) -> None:
    ana = Cli(stack, home, "ana")
    said = ana("budget", "set", "project", "acme/churn", "100/month", "--soft").stdout
    assert said.startswith("set project budget acme/churn: $100 per month (soft)"), said
    said = ana("budget", "update", "project", "acme/churn", "--limit", "150", "--hard").stdout
    assert said.startswith("updated project budget acme/churn: $150 per month (hard)"), said
    listed = json.loads(ana("budget", "list", "--json").stdout)
    assert [b["limit_usd"] for b in listed if b["name"] == "acme/churn"] == ["150"]
    (status,) = json.loads(ana("budget", "status", "project", "acme/churn", "--json").stdout)
    assert status["limit_usd"] == "150" and status["state"] == "ok"
    assert "acme/churn" in ana("budget", "status").stdout

    out = tmp_path / "records.csv"
    assert ana("export", str(out)).stdout.strip() == f"exported 3 records to {out}"
    got = pd.read_csv(out, dtype=str)
    want = fetch_records(stack.store, org="acme", project="churn")
    assert sorted(got["user"]) == sorted(want["user"]) == ["ana", "ana", "bob"]
    assert [Decimal(c) for c in got["cost_usd"]] == list(want["cost_usd"])  # exact

    refused = ana("budget", "set", "org", "acme", "500", ok=False).stderr
    assert "owner of acme or admin" in refused, refused
    ana("budget", "set", "user", "acme/churn/tmp", "1/day")
    assert "deleted user budget acme/churn/tmp" in ana("budget", "delete", "user",
                                                       "acme/churn/tmp").stdout  # fmt: skip


def test_as_member_only_own_records_and_no_budget_changes(
    stack: Stack, home: Path, tmp_path: Path
) -> None:
    bob = Cli(stack, home, "bob", env_url=False)  # the gateway as --gateway URL
    out = tmp_path / "mine.csv"
    assert bob("export", str(out)).stdout.strip() == f"exported 1 records to {out}"
    assert list(pd.read_csv(out)["user"]) == ["bob"]
    refused = bob("export", str(out), "--project", "churn", "--user", "ana", ok=False).stderr
    assert "owner of acme/churn or admin" in refused, refused
    refused = bob("budget", "set", "user", "acme/churn/bob", "1000/day", ok=False).stderr
    assert "owner of acme/churn or admin" in refused, refused
    assert bob("budget", "delete", "project", "acme/churn", ok=False).returncode == 1
    listed = bob("budget", "list").stdout
    assert "acme/churn/ana" not in listed


def test_gateway_and_database_url_together_are_refused_and_admin_help_says_database(
    stack: Stack, home: Path
) -> None:
    bob = Cli(stack, home, "bob", env_url=False)
    both = bob("--database-url", "sqlite:///nowhere.db", "budget", "list", ok=False).stderr
    assert "not both" in both, both
    entries = {
        e.split()[0]: " ".join(e.split()) for e in re.split(r"\n    (?=\S)", bob("--help").stdout)
    }
    for command in ("db", "doctor", "audit", "gateway", "import", "reconcile"):
        assert "works on the database itself" in entries[command], entries[command]
    for command in ("budget", "export", "report"):
        assert "database itself" not in entries[command]
