"""Realistic usage rows for benchmarks, generated fast (numpy, seeded).

A few orgs, about fifteen projects, about sixty users (each in one org and one to three
of its projects), a dozen models over three providers, four months of history with
business-hour and weekday peaks, log-normal token counts, prompt caching on a third of
chat calls, a few errors, and costs given (what a backfill from a provider export has).
Cardinalities are arguments, so other benchmarks can ask for more.

    from benchmarks._data import usage_columns, usage_frame, usage_dicts
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import numpy as np

__all__ = ["MODELS", "usage_columns", "usage_dicts", "usage_frame"]

#: (provider, model, api, weight, $ per 1M input, $ per 1M output)
MODELS = [
    ("openai", "gpt-4o-mini", "chat.completions", 30, 0.15, 0.60),
    ("openai", "gpt-4o", "chat.completions", 12, 2.50, 10.00),
    ("openai", "gpt-4.1", "responses", 6, 2.00, 8.00),
    ("openai", "gpt-4.1-mini", "responses", 10, 0.40, 1.60),
    ("openai", "o4-mini", "responses", 5, 1.10, 4.40),
    ("openai", "text-embedding-3-small", "embeddings", 8, 0.02, 0.0),
    ("google", "gemini-2.5-flash", "generate_content", 14, 0.30, 2.50),
    ("google", "gemini-2.5-pro", "generate_content", 5, 1.25, 10.00),
    ("google", "gemini-2.5-flash-lite", "generate_content", 6, 0.10, 0.40),
    ("anthropic", "claude-sonnet-4", "messages", 6, 3.00, 15.00),
    ("anthropic", "claude-haiku-4-5", "messages", 5, 1.00, 5.00),
    ("anthropic", "claude-opus-4-1", "messages", 1, 15.00, 75.00),
]
HOUR_WEIGHT = [1, 1, 1, 1, 1, 2, 3, 6, 10, 12, 12, 11, 9, 11, 12, 12, 11, 9, 6, 4, 3, 2, 2, 1]
DAY_WEIGHT = [10, 10, 10, 10, 9, 3, 2]  # Monday..Sunday


def usage_columns(
    n: int,
    *,
    orgs: int = 3,
    projects: int = 15,
    users: int = 60,
    days: int = 120,
    start: dt.datetime = dt.datetime(2026, 6, 1),
    seed: int = 7,
) -> dict[str, Any]:
    """``n`` rows as numpy columns named as ``records()`` names them, sorted by ``ts``.

    ``cost_nanos`` holds each row's cost in nanodollars (int64); ``ts`` is
    ``datetime64[us]`` (naive UTC).
    """
    rnd = np.random.default_rng(seed)
    # people: each project in one org, each user in one org and 1-3 of its projects
    proj_org = np.arange(projects) % orgs
    user_org = np.arange(users) % orgs
    user_projects = []
    for u in range(users):
        mine = np.flatnonzero(proj_org == user_org[u])
        k = min(len(mine), 1 + int(rnd.integers(0, 3)))
        user_projects.append(rnd.choice(mine, size=k, replace=False))
    user_weight = rnd.pareto(1.2, users) + 0.2
    user = rnd.choice(users, size=n, p=user_weight / user_weight.sum())
    pick = rnd.random(n)
    project = np.empty(n, dtype=np.int64)
    for u in range(users):
        sel = user == u
        mine = user_projects[u]
        project[sel] = mine[np.minimum((pick[sel] * len(mine)).astype(np.int64), len(mine) - 1)]
    org = proj_org[project]
    # time: day by weekday weight, hour by business-hour weight, then sorted
    day_ids = np.arange(days)
    weekday = (start.weekday() + day_ids) % 7
    dw = np.asarray(DAY_WEIGHT, dtype=float)[weekday]
    day = rnd.choice(days, size=n, p=dw / dw.sum())
    hw = np.asarray(HOUR_WEIGHT, dtype=float)
    hour = rnd.choice(24, size=n, p=hw / hw.sum())
    micros = (day * 86400 + hour * 3600) * 1_000_000 + rnd.integers(0, 3_600_000_000, n)
    micros.sort()
    ts = np.datetime64(start, "us") + micros.astype("timedelta64[us]")
    # models
    mw = np.asarray([m[3] for m in MODELS], dtype=float)
    model = rnd.choice(len(MODELS), size=n, p=mw / mw.sum())
    api = np.asarray([m[2] for m in MODELS], dtype=object)[model]
    inp = np.minimum(rnd.lognormal(7.0, 1.2, n).astype(np.int64) + 20, 2_000_000)
    out = np.minimum(rnd.lognormal(5.5, 1.0, n).astype(np.int64) + 1, 64_000)
    out[api == "embeddings"] = 0
    chat = api != "embeddings"
    cached = np.where(chat & (rnd.random(n) < 1 / 3), (inp * rnd.random(n) * 0.9), 0)
    cached = cached.astype(np.int64)
    reasoning_models = np.isin(model, [4, 7])
    reasoning = np.where(reasoning_models, (out * rnd.random(n) * 0.7).astype(np.int64), 0)
    status = np.where(rnd.random(n) < 0.01, "error", "ok").astype(object)
    pin = np.asarray([m[4] for m in MODELS])[model]
    pout = np.asarray([m[5] for m in MODELS])[model]
    # $/1M tokens == nanodollars... ×1000 per token; cached input at a tenth
    cost = np.rint(((inp - cached) * pin + cached * pin / 10 + out * pout) * 1000).astype(np.int64)
    cost[status == "error"] = 0
    latency = np.round(rnd.lognormal(6.5, 0.7, n), 1)
    return {
        "ts": ts,
        "provider": np.asarray([m[0] for m in MODELS], dtype=object)[model],
        "api": api,
        "model": np.asarray([m[1] for m in MODELS], dtype=object)[model],
        "org": np.asarray([f"org{i}" for i in range(orgs)], dtype=object)[org],
        "project": np.asarray([f"proj{i}" for i in range(projects)], dtype=object)[project],
        "user": np.asarray([f"user{i}" for i in range(users)], dtype=object)[user],
        "input_tokens": inp,
        "cached_input_tokens": cached,
        "output_tokens": out,
        "reasoning_tokens": reasoning,
        "cost_nanos": cost,
        "status": status,
        "latency_ms": latency,
    }


def _usd(nanos: np.ndarray) -> list[Decimal]:
    scale = Decimal("1e-9")
    return [Decimal(int(v)).scaleb(-9) if v else Decimal(0) * scale for v in nanos]


def usage_frame(n: int, **kw: Any) -> Any:
    """The rows as a pandas DataFrame with ``cost_usd`` as exact ``Decimal`` (ingest's input)."""
    import pandas as pd

    cols = usage_columns(n, **kw)
    nanos = cols.pop("cost_nanos")
    frame = pd.DataFrame(cols)
    frame["cost_usd"] = pd.Series(_usd(nanos), dtype=object)
    return frame


def usage_dicts(n: int, **kw: Any) -> list[dict[str, Any]]:
    """The rows as a list of dicts (``ts`` as naive UTC datetimes, ``cost_usd`` Decimal)."""
    cols = usage_columns(n, **kw)
    nanos = cols.pop("cost_nanos")
    cols["ts"] = cols["ts"].astype(dt.datetime)
    keys = list(cols)
    lists = [cols[k].tolist() for k in keys]
    keys.append("cost_usd")
    lists.append(_usd(nanos))
    return [dict(zip(keys, vals, strict=True)) for vals in zip(*lists, strict=True)]
