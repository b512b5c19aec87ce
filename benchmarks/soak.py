"""Soak: many kernels' worth of processes, one store, one simulated provider, one budget.

For each store (a SQLite file, then PostgreSQL), ``--procs`` worker processes (default 16)
make calls through the real openai SDK to ONE shared ``llmspend.sim`` server started by
this process on 127.0.0.1. The mix per worker: plain chat calls, streams with and without
``stream_options.include_usage``, provider errors (``#sim:error=500``) and cut streams
(``#sim:cut=N``). 70 % of the calls are charged to project ``p``, under a hard budget
that runs out about half-way through the soak; the rest to project ``q`` (no hard
budget), so served traffic keeps flowing afterwards. A soft user budget with thresholds
25/50/75/100 % covers both.

Phases: the workers start, run a pilot (``--pilot-seconds``, charged to a project no
budget covers) from which the budgets are sized, then the soak (``--seconds``). Every
4th call is made with llmspend uninstalled: the baseline, measured under exactly the same
load (a separate baseline phase would run at a different throughput, and a closed loop's
latency depends on its throughput). Printed per store:

* calls/s with llmspend (attempted, and served by the provider);
* p50/p99 duration of successful calls, baseline vs llmspend, and the difference (the
  added latency, which under this load includes waiting for the store's locks);
* overspend: the hard budget's spent vs its limit (must be $0), and reserved at the end;
* lost records: calls the SDK saw answered (by request id) or the simulator served with
  no row (must be 0); duplicated records: request ids with more than one row, and rows
  beyond what was served (must be 0); refusals seen vs refused rows;
* alert rows per budget and threshold: exactly 1 for each threshold the final spend
  crossed, 0 for the others.

Bounded in time and count: each phase stops at its time or after ``--max-calls`` per
worker; every call has a 30 s timeout; stragglers are killed (only the processes this
script started). Everything stays on 127.0.0.1. Exit status 1 if an invariant fails.

    python benchmarks/soak.py [--procs 16] [--seconds 60] [--pilot-seconds 6]
                              [--pg-url postgresql://...] [--no-pg]

Without ``--pg-url`` a throwaway PostgreSQL cluster is started the way the tests do
(``tests/pgserver.py``; needs the server binaries) and removed at the end. With
``--pg-url``, rows go under a fresh org name, so earlier runs do not count.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from pgcluster import postgres  # benchmarks/pgcluster.py (run as a script)

ROOT = Path(__file__).resolve().parent.parent
MODEL = "gpt-4o-mini"
MAX_TOKENS = 24
CALL_TIMEOUT = 30.0
#: (kind, weight). "cut" streams are dropped by the simulator after a few events.
MIX = (
    ("plain", 40),
    ("stream", 20),
    ("stream_usage", 20),
    ("error", 8),
    ("cut", 7),
    ("cut_usage", 5),
)
SUCCESS_KINDS = ("plain", "stream", "stream_usage")
BASELINE_EVERY = 4  # every 4th call is made without llmspend, under the same load
HARD_SHARE = 0.7  # of the calls go to project p (hard budget); the rest to q
SOFT_THRESHOLDS = (Decimal("0.25"), Decimal("0.5"), Decimal("0.75"), Decimal("1"))


# -- the worker (a separate process) -----------------------------------------------------------


def _prompt(kind: str, i: int) -> str:
    directive = {"error": " #sim:error=500", "cut": " #sim:cut=3", "cut_usage": " #sim:cut=2"}
    return f"soak call {i}: summarize the quarter{directive.get(kind, '')}"


def _one_call(client: Any, kind: str, i: int) -> tuple[str, str | None]:
    """Make one call of ``kind``; returns (outcome, request id)."""
    import openai

    import llmspend

    messages = [{"role": "user", "content": _prompt(kind, i)}]
    streamed = kind != "plain" and kind != "error"
    options: dict[str, Any] = {}
    if kind in ("stream_usage", "cut_usage"):
        options["stream_options"] = {"include_usage": True}
    try:
        if not streamed:
            resp = client.chat.completions.create(
                model=MODEL, messages=messages, max_tokens=MAX_TOKENS
            )
            return "ok", getattr(resp, "_request_id", None)
        stream = client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=MAX_TOKENS, stream=True, **options
        )
        rid = stream.response.headers.get("x-request-id")
        try:
            with stream:
                for _ in stream:
                    pass
        except openai.APIConnectionError:
            return "cut", rid
        return "ok", rid
    except llmspend.BudgetExceeded:
        return "refused", None
    except openai.APIStatusError as exc:
        return "error", exc.request_id
    except openai.APITimeoutError:
        return "timeout", None
    except openai.APIConnectionError:
        return "connection", None


def _wait_file(path: str, limit: float = 900.0) -> float:
    """Wait for the parent's go (a start time in ``path``); give up if it never comes."""
    give_up = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > give_up:
            raise SystemExit(f"soak worker: no go from the parent after {limit:g} s")
        time.sleep(0.01)
    at = float(Path(path).read_text())
    while time.time() < at:
        time.sleep(0.001)
    return at


def worker(args: argparse.Namespace) -> None:
    """Pilot, then the soak proper; every ``BASELINE_EVERY``-th call is made with llmspend
    uninstalled (the baseline, under the very same load)."""
    import openai

    import llmspend

    llmspend.install(args.url, org=args.org, project="p", user="u")
    client = openai.OpenAI(api_key="x", base_url=args.base_url, max_retries=0, timeout=CALL_TIMEOUT)
    rng = random.Random(args.seed)
    kinds, weights = zip(*MIX, strict=True)
    Path(args.ready_file).write_text("ready")
    i = 0
    for phase, go, seconds, out in (
        ("pilot", f"{args.go_file}-pilot", args.pilot_seconds, f"{args.out_file}-pilot"),
        ("main", f"{args.go_file}-main", args.seconds, f"{args.out_file}-main"),
    ):
        deadline = _wait_file(go) + seconds
        results: list[Call] = []
        n = 0
        while time.time() < deadline and n < args.max_calls:
            kind = rng.choices(kinds, weights)[0]
            project = "p" if rng.random() < HARD_SHARE else "q"
            baseline = n % BASELINE_EVERY == BASELINE_EVERY - 1
            if baseline:
                llmspend.uninstall()
            t0 = time.perf_counter()
            if baseline:
                outcome, rid = _one_call(client, kind, i)
            else:
                who = (
                    {"project": "pilot", "user": "pilot"}
                    if phase == "pilot"
                    else {"project": project}
                )
                with llmspend.attribute(**who):
                    outcome, rid = _one_call(client, kind, i)
            elapsed = (time.perf_counter() - t0) * 1000
            if baseline:
                llmspend.install(args.url, org=args.org, project="p", user="u")
            results.append((kind, outcome, rid, elapsed, time.time(), project, baseline))
            i, n = i + 1, n + 1
        Path(out).write_text(json.dumps(results))
    client.close()


# -- the parent ---------------------------------------------------------------------------------

#: (kind, outcome, request id, duration ms, end time, project, baseline?)
Call = tuple[str, str, "str | None", float, float, str, bool]


@dataclass
class Phase:
    """What the workers of one phase saw."""

    calls: list[Call] = field(default_factory=list)
    start: float = 0.0
    seconds: float = 0.0
    served: int = 0  # requests the simulator received
    killed: int = 0

    def of(self, *, baseline: bool) -> list[Call]:
        return [c for c in self.calls if c[6] == baseline]


def _read(paths: list[Path]) -> list[Call]:
    calls: list[Call] = []
    for path in paths:
        if path.exists():
            calls += [tuple(x) for x in json.loads(path.read_text())]  # type: ignore[misc]
    return calls


def _wait_for(paths: list[Path], children: list[Any], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not all(p.exists() for p in paths):
        dead = [c for c in children if c.poll() is not None]
        if dead or time.monotonic() > deadline:
            for c in children:
                c.kill()  # only processes this script started, by their own handle
            err = dead[0].stderr.read() if dead and dead[0].stderr else f"{what} timed out"
            raise RuntimeError(f"workers failed during {what}: {err[-2000:]}")
        time.sleep(0.05)


def _run(url: str, org: str, args: argparse.Namespace, sim: Any) -> Phase:
    """Start the workers, run the pilot, size and set the budgets, run the soak."""
    import llmspend

    procs = args.procs
    main = Phase(seconds=args.seconds)
    with tempfile.TemporaryDirectory(prefix="llmspend-soak-") as tmp:
        go, out = f"{tmp}/go", f"{tmp}/out"
        children = []
        for n in range(procs):
            argv = [
                sys.executable, __file__, "--worker", "--url", url, "--base-url",
                sim.openai_base_url, "--org", org, "--seconds", str(args.seconds),
                "--pilot-seconds", str(args.pilot_seconds), "--max-calls", str(args.max_calls),
                "--seed", str(n), "--go-file", go, "--ready-file", f"{tmp}/ready-{n}",
                "--out-file", f"{out}-{n}",
            ]  # fmt: skip
            children.append(subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True))
        _wait_for([Path(f"{tmp}/ready-{n}") for n in range(procs)], children, 300, "start-up")
        # the pilot pays for budgets like the soak will (else it runs faster than the soak)
        llmspend.set_budget("project", f"{org}/pilot", "1000000", "total")
        llmspend.set_budget("user", f"{org}/pilot", "1000000", "total", mode="soft")
        Path(f"{go}-pilot").write_text(str(time.time() + 0.5))
        pilot_files = [Path(f"{out}-{n}-pilot") for n in range(procs)]
        _wait_for(pilot_files, children, args.pilot_seconds + CALL_TIMEOUT + 60, "the pilot")
        pilot = [c for c in _read(pilot_files) if not c[6]]
        rows = llmspend.records(org=org, project="pilot")
        per_call = sum((c for c in rows["cost_usd"] if c is not None), Decimal(0)) / max(
            len(rows), 1
        )
        expected = Decimal(len(pilot) / args.pilot_seconds * args.seconds) * per_call
        hard = (expected * Decimal(HARD_SHARE) / 2).quantize(Decimal("0.000001"))
        soft = (expected * Decimal("0.3")).quantize(Decimal("0.000001"))
        llmspend.set_budget("project", f"{org}/p", hard, "total")
        llmspend.set_budget(
            "user", f"{org}/u", soft, "total", mode="soft", thresholds=SOFT_THRESHOLDS
        )
        sim.reset()  # nothing is in flight: the workers wait for the go
        main.start = time.time() + 0.5
        Path(f"{go}-main").write_text(str(main.start))
        wait_until = time.monotonic() + args.seconds + CALL_TIMEOUT + 60
        for c in children:
            try:
                _, err = c.communicate(timeout=max(1.0, wait_until - time.monotonic()))
            except subprocess.TimeoutExpired:
                c.kill()  # only processes this script started, by their own handle
                _, err = c.communicate()
                main.killed += 1
                continue
            if c.returncode != 0:
                print(f"  a worker exited {c.returncode}: {err[-2000:]}", file=sys.stderr)
        main.calls = _read([Path(f"{out}-{n}-main") for n in range(procs)])
    main.served = sim.request_count
    return main


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def soak_store(label: str, url: str, args: argparse.Namespace, sim: Any) -> bool:
    import llmspend

    org = f"soak-{uuid.uuid4().hex[:8]}"
    print(
        f"\n== {label}: {args.procs} processes, pilot {args.pilot_seconds:g} s, soak "
        f"{args.seconds:g} s; every {BASELINE_EVERY}th call without llmspend (baseline)",
        flush=True,
    )
    llmspend.install(url, org=org, project="p", user="u")
    try:
        return _report(org, _run(url, org, args, sim))
    finally:
        llmspend.uninstall()


def _report(org: str, soak: Phase) -> bool:
    import llmspend

    ours, base = soak.of(baseline=False), soak.of(baseline=True)
    frame = llmspend.records(org=org)
    frame = frame[frame["project"].isin(["p", "q"])]
    outcomes = Counter(c[1] for c in ours)
    first_refusal = min((c[4] for c in ours if c[1] == "refused"), default=None)

    # records vs what happened: baseline calls reach the simulator but are not recorded
    answered = {c[2] for c in ours if c[1] in ("ok", "cut") and c[2]}
    rows_by_rid = Counter(r for r in frame["request_id"] if r)
    lost_by_rid = len(answered - set(rows_by_rid))
    dup_by_rid = sum(n - 1 for n in rows_by_rid.values() if n > 1)
    non_refused_rows = int((frame["status"] != "refused").sum())
    refused_rows = int((frame["status"] == "refused").sum())
    served_ours = soak.served - len(base)
    lost_vs_sim = max(0, served_ours - non_refused_rows)
    extra_vs_sim = max(0, non_refused_rows - served_ours)
    errors_seen = outcomes["error"]
    error_rows = int((frame["status"] == "error").sum())

    # budgets
    (hard,) = llmspend.budget_status("project", f"{org}/p")
    (soft,) = llmspend.budget_status("user", f"{org}/u")
    in_p = frame[frame["project"] == "p"]
    p_cost = sum((c for c in in_p["cost_usd"] if c is not None), Decimal(0))
    overspend = max(Decimal(0), hard.spent_usd - hard.limit_usd)

    # alerts: exactly one row per threshold crossed, none for the others
    alerts = llmspend.alerts(org=org)
    kinds = list(alerts["kind"])
    got = Counter(
        (b, Decimal(str(t)))
        for b, t, k in zip(alerts["budget"], alerts["threshold"], kinds, strict=True)
        if k == "threshold"
    )
    refusal_alerts = Counter(
        b for b, k in zip(alerts["budget"], kinds, strict=True) if k == "refused"
    )
    alert_lines, alerts_ok = [], True
    for name, status, thresholds in (
        (f"{org}/p", hard, (Decimal("0.5"), Decimal("0.8"), Decimal("1"))),
        (f"{org}/u", soft, SOFT_THRESHOLDS),
    ):
        for t in thresholds:
            crossed = status.spent_usd >= t * status.limit_usd
            n = got.get((name, t), 0)
            alerts_ok &= n == (1 if crossed else 0)
            note = "" if crossed else " (not crossed)"
            alert_lines.append(f"{name.split('/')[-1]}@{t * 100:.0f}%: {n}{note}")

    def durations(calls: list[Call], kind: str | None) -> list[float]:
        return [c[3] for c in calls if c[1] == "ok" and (kind is None or c[0] == kind)]

    secs = soak.seconds
    print(
        f"  calls/s with llmspend: {len(ours) / secs:,.0f} attempted, "
        f"{(soak.served - len(base)) / secs:,.0f} served (+ {len(base) / secs:,.0f}/s baseline "
        f"calls); outcomes {dict(outcomes)}"
    )
    print("  duration of successful calls, ms: baseline -> llmspend = added latency")
    for kind in (None, *SUCCESS_KINDS):
        b, s = durations(base, kind), durations(ours, kind)
        cells = []
        for q in (0.5, 0.99):
            pb, ps = _pct(b, q), _pct(s, q)
            cells.append(f"p{int(q * 100)} {pb:7.2f} -> {ps:7.2f} = {ps - pb:+7.2f}")
        print(f"    {kind or 'all':12} n={len(s):6}/{len(b):5}  " + "   ".join(cells))
    ran_out = "never" if first_refusal is None else f"at {first_refusal - soak.start:.1f} s"
    print(
        f"  hard budget ${hard.limit_usd}: spent ${hard.spent_usd}, reserved "
        f"${hard.reserved_usd}, rows ${p_cost}; ran out {ran_out} of {secs:g}; "
        f"OVERSPEND ${overspend}"
    )
    print(f"  soft budget ${soft.limit_usd}: spent ${soft.spent_usd} ({soft.percent_used:.0f} %)")
    print(
        f"  records: {len(frame)} rows ({non_refused_rows} served, {refused_rows} refused); "
        f"simulator served {served_ours} llmspend calls; SDK answered {len(answered)} ids"
    )
    print(
        f"  LOST {lost_by_rid} by request id, {lost_vs_sim} vs the simulator; error rows "
        f"{error_rows} of {errors_seen} errors seen"
    )
    print(
        f"  DUPLICATED {dup_by_rid} by request id, {extra_vs_sim} beyond the simulator; "
        f"refused rows {refused_rows} of {outcomes['refused']} refusals seen"
    )
    print(
        f"  alert rows per threshold: {', '.join(alert_lines)}; refusal alerts "
        f"{dict(refusal_alerts) or 0}"
    )
    if soak.killed:
        print(f"  killed stragglers: {soak.killed}")
    checks = {
        "overspend 0": overspend == 0,
        "reserved 0": hard.reserved_usd == 0 and soft.reserved_usd == 0,
        "period spent == rows": hard.spent_usd == p_cost,
        "no lost records": lost_by_rid == 0 and lost_vs_sim == 0 and error_rows == errors_seen,
        "no duplicates": dup_by_rid == 0 and extra_vs_sim == 0,
        "refusals recorded": refused_rows == outcomes["refused"],
        "one alert per crossed threshold": alerts_ok,
        "at most one refusal alert per budget": all(n == 1 for n in refusal_alerts.values()),
        "no stragglers": not soak.killed,
        "every call answered": all(c[1] not in ("timeout", "connection") for c in soak.calls),
    }
    failed = [name for name, ok in checks.items() if not ok]
    print(f"  {'OK' if not failed else 'FAILED: ' + ', '.join(failed)}", flush=True)
    return not failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--procs", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0, help="soak phase, per store")
    ap.add_argument("--pilot-seconds", type=float, default=6.0, help="sizes the budgets")
    ap.add_argument("--max-calls", type=int, default=100_000, help="per worker and phase")
    ap.add_argument("--pg-url", default=None)
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("url", "base-url", "org", "go-file", "ready-file", "out-file"):
        ap.add_argument(f"--{name}", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return 0

    from llmspend.sim import SimServer

    ok = True
    with tempfile.TemporaryDirectory(prefix="llmspend-soak-") as home, SimServer() as sim:
        os.environ["LLMSPEND_HOME"] = home  # workers inherit it: spools stay in here
        ok &= soak_store("SQLite", f"sqlite:///{home}/soak.sqlite", args, sim)
        if not args.no_pg:
            with postgres(args.pg_url) as (url, note):
                if url is None:
                    print(f"\n== PostgreSQL: skipped ({note})")
                else:
                    ok &= soak_store(f"PostgreSQL ({note})", url, args, sim)
    print("\nsoak:", "all invariants held" if ok else "INVARIANTS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
