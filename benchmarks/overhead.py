"""Latency llmspend adds to a call: price + reserve + settle + record (DESIGN §10).

Makes the same chat-completion call to the bundled simulator through the real openai SDK
(its SDK tap) and through a plain ``httpx`` client posting JSON to the simulator declared as
an endpoint (the transport tap alone), alternating between llmspend installed and not
(interleaved, so machine noise hits both alike), with and without budgets, on a SQLite
store. Prints median and p99 of each and the added latency, and the calling thread's CPU
time per call (``time.thread_time``: on a loaded machine the steadier figure). Targets:
median <= 0.3 ms, p99 <= 2 ms on SQLite, for either tap.

The simulator runs in a process of its own (``llmspend sim serve``), as a provider does:
on a thread of the calling process its request handling would take turns with the call
for the GIL, which no real call pays. ``--sim-in-process`` runs it on a thread anyway.

``--micro N`` times the pipeline alone instead (no SDK, no HTTP): ``begin_call`` and
``Call.finish`` for a chat call under three budgets (org, project, user), N calls a round,
five rounds; prints wall and CPU (``time.process_time``, this process's threads) per call.

    python benchmarks/overhead.py [--calls 2000] [--tap sdk|transport|both] [--sim-in-process]
    python benchmarks/overhead.py --micro 5000
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


@contextlib.contextmanager
def sim_process() -> Iterator[str]:
    """``llmspend sim serve`` on a free port, in a child process: its OpenAI base URL."""
    cmd = [sys.executable, "-m", "llmspend", "sim", "serve", "--port", "0"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        try:
            line = proc.stdout.readline() if proc.stdout else ""
            found = re.search(r"OpenAI base_url (\S+)\)", line)
            if not found:
                raise RuntimeError(f"the simulator did not start: {line!r}")
            yield found.group(1)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@contextlib.contextmanager
def sim_thread() -> Iterator[str]:
    from llmspend.sim import SimServer

    with SimServer() as sim:
        yield sim.openai_base_url


def micro(calls: int, database_url: str | None) -> None:
    """The pipeline alone: begin, finish, record, three budgets (see the module docstring)."""
    import llmspend
    from llmspend.call import Usage
    from llmspend.pipeline import begin_call

    with tempfile.TemporaryDirectory() as tmp:
        llmspend.install(database_url or f"sqlite:///{tmp}/micro.sqlite", org="bench",
                         project="p", user="u")  # fmt: skip
        llmspend.set_budget("org", "bench", "1000000", "month")
        llmspend.set_budget("project", "bench/p", "100000", "month", mode="soft")
        llmspend.set_budget("user", "bench/u", "10000", "day")
        msgs = [{"role": "user", "content": "How many tokens is this sentence?"}]
        usage = Usage(14, output_tokens=10)

        def one() -> None:
            call = begin_call("openai", "chat", "gpt-4o-mini", payload=msgs, max_output_tokens=50)
            assert call is not None
            call.finish(usage, response_model="gpt-4o-mini-2024-07-18", request_id="r")

        for _ in range(500):  # warm up
            one()
        walls, cpus = [], []
        for _ in range(5):
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(calls):
                one()
            walls.append((time.perf_counter() - t0) / calls * 1e6)
            cpus.append((time.process_time() - c0) / calls * 1e6)
        llmspend.uninstall()
    print(
        f"pipeline alone (begin, finish, record, 3 budgets): median {statistics.median(walls):.1f}"
        f" us/call wall, {statistics.median(cpus):.1f} us CPU "
        f"(rounds: {', '.join(f'{w:.0f}' for w in walls)} us wall)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--block", type=int, default=20, help="calls per interleaved block")
    ap.add_argument("--database-url", default=None)
    ap.add_argument(
        "--sim-in-process", action="store_true", help="run the simulator on a thread of this one"
    )
    ap.add_argument(
        "--tap",
        choices=("sdk", "transport", "both"),
        default="both",
        help="sdk: the openai SDK (its SDK tap); transport: a plain httpx client posting "
        "to the simulator declared as an endpoint (the transport tap alone)",
    )
    ap.add_argument(
        "--micro", type=int, metavar="N", default=0,
        help="time the pipeline alone (no SDK, no HTTP), N calls a round, and exit",
    )  # fmt: skip
    args = ap.parse_args()
    if args.micro:
        micro(args.micro, args.database_url)
        return

    import httpx
    import openai

    import llmspend

    sim = sim_thread() if args.sim_in_process else sim_process()
    with tempfile.TemporaryDirectory() as tmp, sim as base_url:
        url = args.database_url or f"sqlite:///{tmp}/overhead.sqlite"
        client = openai.OpenAI(api_key="x", base_url=base_url, max_retries=0)
        http = httpx.Client()
        msgs = [{"role": "user", "content": "How many tokens is this sentence?"}]
        body = {"model": "gpt-4o-mini", "messages": msgs, "max_tokens": 50}
        llmspend.declare_endpoint(base_url, "openai")  # for the transport tap

        # Each call's wall time and its thread's CPU time (what it cost this process's
        # calling thread: the simulator's work and other processes' load are not in it).
        def sdk_call() -> tuple[float, float]:
            c0, t0 = time.thread_time(), time.perf_counter()
            client.chat.completions.create(model="gpt-4o-mini", messages=msgs, max_tokens=50)
            return time.perf_counter() - t0, time.thread_time() - c0

        def transport_call() -> tuple[float, float]:
            c0, t0 = time.thread_time(), time.perf_counter()
            http.post(base_url + "/chat/completions", json=body).raise_for_status()
            return time.perf_counter() - t0, time.thread_time() - c0

        taps = ("sdk", "transport") if args.tap == "both" else (args.tap,)
        cases = [
            (tap, label, budgets)
            for tap in taps
            for label, budgets in (
                ("no budgets", False),
                ("3 budgets (org, project, user)", True),
            )
        ]
        for tap, label, budgets in cases:
            one = sdk_call if tap == "sdk" else transport_call
            label = f"{tap} tap, {label}"
            llmspend.install(url, org="bench", project="p", user="u")
            if budgets:
                llmspend.set_budget("org", "bench", "1000000", "month")
                llmspend.set_budget("project", "bench/p", "100000", "month", mode="soft")
                llmspend.set_budget("user", "bench/u", "10000", "day")
            llmspend.uninstall()
            for _ in range(200):  # warm both paths
                one()
            base_timed: list[tuple[float, float]] = []
            ours_timed: list[tuple[float, float]] = []
            # Interleaved in short blocks: installing patches the SDK's classes, which
            # empties CPython's method caches; toggling around every call would charge
            # that to the call after it, which no user ever sees.
            for block in range(2 * args.calls // args.block):
                installed = block % 2 == 1
                if installed:
                    llmspend.install(url, org="bench", project="p", user="u")
                one()  # the first call after a toggle warms the caches again; not counted
                (ours_timed if installed else base_timed).extend(one() for _ in range(args.block))
                if installed:
                    llmspend.uninstall()
            base, base_cpu = [w for w, _ in base_timed], [c for _, c in base_timed]
            ours, ours_cpu = [w for w, _ in ours_timed], [c for _, c in ours_timed]
            added_med = (statistics.median(ours) - statistics.median(base)) * 1000
            added_cpu = (statistics.median(ours_cpu) - statistics.median(base_cpu)) * 1000
            added_p99 = (pct(ours, 0.99) - pct(base, 0.99)) * 1000
            print(
                f"{label:42} without: median {statistics.median(base) * 1000:.3f} ms, "
                f"p99 {pct(base, 0.99) * 1000:.3f} ms | with: median "
                f"{statistics.median(ours) * 1000:.3f} ms, p99 {pct(ours, 0.99) * 1000:.3f} ms"
            )
            print(
                f"{'':42} added: median {added_med:.3f} ms (target <= 0.3), "
                f"p99 {added_p99:.3f} ms (target <= 2); CPU of the calling thread: median "
                f"{statistics.median(base_cpu) * 1000:.3f} ms without, "
                f"{statistics.median(ours_cpu) * 1000:.3f} ms with, added {added_cpu:.3f} ms"
            )


if __name__ == "__main__":
    main()
