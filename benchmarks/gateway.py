"""Latency the llmspend gateway adds to a call, against calling ``llmspend.sim`` directly.

In one run: the simulator (``llmspend sim serve``, a process of its own), a gateway
(``llmspend gateway serve``, another process) in front of it on PostgreSQL (a throwaway
cluster, or ``--pg-url``) with three hard budgets applying to every call (org, project,
user; limits far away), and asyncio clients (httpx) making the same chat-completion
request directly to the simulator and through the gateway, interleaved batch by batch so
machine noise hits both alike. At 1, 50 and 200 concurrent clients, streaming and not:
median and p99 of each and the added latency (gateway minus direct, per statistic), the
proxy's CPU time per request (and its event loop's share: the rest is the store's worker
threads), and how many requests failed and why (not timed).
Target (issue 24): <= 1 ms median, <= 5 ms p99 added at 200 concurrent clients.

``--before SRC`` adds a gateway run from another checkout (``git archive REV | tar -x -C
SRC``; ``--before-pure`` hides uvloop and httptools from it), for before/after figures
from one run. ``--litellm PATH`` runs LiteLLM's proxy (the ``litellm`` command of a venv
of its own) side by side against the same simulator, with no budgets or database (its
lightest setup).

    python benchmarks/gateway.py [--requests 2000] [--pg-url URL] [--litellm PATH]
                                 [--before SRC [--before-pure]]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
from overhead import pct  # benchmarks/overhead.py (run as a script)
from overhead import sim_process as openai_sim_process
from pgcluster import postgres  # benchmarks/pgcluster.py (run as a script)

BODY = {"model": "gpt-4o-mini", "max_tokens": 20,
        "messages": [{"role": "user", "content": "Say hello through the gateway"}]}  # fmt: skip
STREAM_BODY = {**BODY, "stream": True, "stream_options": {"include_usage": True}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=5).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start")


@contextlib.contextmanager
def sim_process() -> Iterator[str]:
    """``llmspend sim serve`` in a child process (overhead.py's): its root URL."""
    with openai_sim_process() as base_url:
        yield base_url.removesuffix("/v1")


def gateway_setup(sim: str, db: str, tmp: Path) -> tuple[Path, str]:
    """Three hard budgets and a key on ``db``, a configuration for ``sim``: (its path, the key)."""
    from llmspend.budgets.manage import set_budget
    from llmspend.gateway.keys import create_key
    from llmspend.store.engine import open_store

    config = tmp / "gateway.toml"
    config.write_text(f'[upstreams.openai]\nbase_url = "{sim}"\nkey_env = "BENCH_KEY"\n')
    store = open_store(db)
    for scope, name in (("org", "acme"), ("project", "acme/bench"), ("user", "acme/bench/ana")):
        set_budget(store, scope, name, "1000000", "month", mode="hard")
    _, key = create_key(store, org="acme", project="bench", user="ana")
    return config, key


@contextlib.contextmanager
def gateway_process(
    config: Path, key: str, db: str, tmp: Path, src: str | None = None, pure: bool = False
) -> Iterator[tuple[str, str, int]]:
    """A gateway with ``config`` on ``db``: (URL, the key, its pid). ``src``: run the
    llmspend of another checkout (put first on ``PYTHONPATH``); ``pure``: without uvloop and
    httptools (uvicorn then uses asyncio's loop and h11)."""
    port = _free_port()
    env = {**os.environ, "BENCH_KEY": "sk-bench"}
    paths = [src] if src else []
    if pure:
        stubs = tmp / "no-uvloop"
        stubs.mkdir(exist_ok=True)
        for name in ("uvloop", "httptools"):
            (stubs / f"{name}.py").write_text(f"raise ImportError('{name} hidden')\n")
        paths.insert(0, str(stubs))
    if paths:
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, "-m", "llmspend", "gateway", "serve", "--port", str(port),
           "--config", str(config), "--database-url", db]  # fmt: skip
    with open(tmp / f"gateway-{port}.log", "wb") as log:
        # Not started in the current directory: ``python -m`` puts it first on sys.path,
        # ahead of PYTHONPATH, so a checkout there would shadow ``src``.
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
    try:
        _wait(f"http://127.0.0.1:{port}/health", proc, "the gateway")
        yield f"http://127.0.0.1:{port}/openai", key, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def litellm_process(binary: str, sim: str, tmp: Path) -> Iterator[tuple[str, str, int]]:
    """LiteLLM's proxy in front of ``sim``, no database: (URL, its master key, its pid)."""
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: gpt-4o-mini\n    litellm_params:\n"
        f"      model: openai/gpt-4o-mini\n      api_base: {sim}/v1\n      api_key: sk-bench\n"
        "general_settings:\n  master_key: sk-litellm-bench\n"
    )
    port = _free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    with open(tmp / "litellm.log", "wb") as log:
        proc = subprocess.Popen(
            [binary, "--config", str(config), "--port", str(port), "--host", "127.0.0.1"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait(f"http://127.0.0.1:{port}/health/liveliness", proc, "litellm")
        yield f"http://127.0.0.1:{port}", "sk-litellm-bench", proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _one(client: httpx.AsyncClient, url: str, key: str, stream: bool) -> float | str:
    """One request's latency in seconds, or why it failed (a transport error, a status
    other than 200, a stream without its end: counted, not timed)."""
    headers = {"Authorization": f"Bearer {key}"}
    t0 = time.perf_counter()
    try:
        if stream:
            async with client.stream("POST", url, json=STREAM_BODY, headers=headers) as r:
                tail = b""
                async for chunk in r.aiter_raw():
                    tail = (tail + chunk)[-64:]
            if r.status_code == 200 and b"[DONE]" not in tail:
                return "stream ended without [DONE]"
        else:
            r = await client.post(url, json=BODY, headers=headers)
    except httpx.TransportError as e:
        return f"{type(e).__name__}: {e}"[:120]
    elapsed = time.perf_counter() - t0
    return elapsed if r.status_code == 200 else f"HTTP {r.status_code}"


async def _batch(url: str, key: str, clients: int, n: int, stream: bool) -> list[float | str]:
    """``n`` requests from ``clients`` concurrent clients; each request's latency."""
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    out: list[float | str] = []
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        await asyncio.gather(*(_one(client, url, key, stream) for _ in range(clients)))  # warm

        async def worker(count: int) -> None:
            for _ in range(count):
                out.append(await _one(client, url, key, stream))

        share = [n // clients + (i < n % clients) for i in range(clients)]
        await asyncio.gather(*(worker(c) for c in share))
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (Linux /proc), 0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main_thread_cpu_seconds(pid: int) -> float:
    """CPU time of the main thread of process ``pid`` (the gateway's event loop: HTTP)."""
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    targets: dict[str, tuple[str, str, int]], clients: int, n: int, stream: bool, rounds: int
) -> tuple[dict[str, list[float | str]], dict[str, tuple[float, float]]]:
    """Latencies per target, and each proxy's CPU seconds per request: (all threads, the
    main thread's — the event loop; the rest is the store's worker threads)."""
    got: dict[str, list[float | str]] = {name: [] for name in targets}
    cpu = {name: [0.0, 0.0] for name in targets}
    for _ in range(rounds):  # interleaved: each target in turn, n / rounds requests each
        for name, (base, key, pid) in targets.items():
            url = base + "/v1/chat/completions"
            before = (cpu_seconds(pid), main_thread_cpu_seconds(pid)) if pid else (0.0, 0.0)
            got[name] += asyncio.run(_batch(url, key, clients, max(clients, n // rounds), stream))
            if pid:
                cpu[name][0] += cpu_seconds(pid) - before[0]
                cpu[name][1] += main_thread_cpu_seconds(pid) - before[1]
    return got, {name: (cpu[name][0] / len(got[name]), cpu[name][1] / len(got[name]))
                 for name in targets}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=2000, help="per target and setting")
    ap.add_argument("--clients", default="1,50,200", help="concurrency levels")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved batches per setting")
    ap.add_argument("--pg-url", default=None, help="default: a throwaway cluster")
    ap.add_argument("--litellm", default=None, help="the litellm command, to run it alongside")
    ap.add_argument(
        "--before",
        default=None,
        metavar="SRC",
        help="also a gateway from another checkout (e.g. `git archive REV`)",
    )
    ap.add_argument("--before-pure", action="store_true",
                    help="run the --before gateway without uvloop and httptools")  # fmt: skip
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        db, note = stack.enter_context(postgres(args.pg_url))
        if db is None:
            sys.exit(f"no PostgreSQL: {note}")
        sim = stack.enter_context(sim_process())
        targets = {"direct": (sim, "sk-bench", 0)}
        config, key = gateway_setup(sim, db, tmp)
        targets["gateway"] = stack.enter_context(gateway_process(config, key, db, tmp))
        if args.before:
            targets["before"] = stack.enter_context(
                gateway_process(config, key, db, tmp, args.before, pure=args.before_pure)
            )
        if args.litellm:
            targets["litellm"] = stack.enter_context(litellm_process(args.litellm, sim, tmp))
        print(f"PostgreSQL: {note}; {os.cpu_count()} CPUs shared by the simulator, the")
        print("proxies and the clients; latency in ms per request, added = proxy - direct")
        print("(cpu: the proxy process's CPU ms per request, warm-up excluded only roughly;")
        print("loop: of which its main thread's, the event loop: HTTP; the rest is the store's")
        print("worker threads)")
        head = f"{'clients':>7} {'stream':>6} {'target':>8} {'n':>5} {'median':>8} {'p99':>8}"
        print(head + f" {'+median':>8} {'+p99':>8} {'cpu':>6} {'loop':>6}")
        for clients in (int(c) for c in args.clients.split(",")):
            for stream in (False, True):
                n = args.requests if clients > 1 else max(200, args.requests // 5)
                got, cpu = measure(targets, clients, n, stream, args.rounds)
                base = [v for v in got["direct"] if isinstance(v, float)] or [float("nan")]
                for name, all_values in got.items():
                    values = [v for v in all_values if isinstance(v, float)] or [float("nan")]
                    failed = Counter(v for v in all_values if isinstance(v, str))
                    med, p99 = statistics.median(values) * 1e3, pct(values, 0.99) * 1e3
                    added = ""
                    if name != "direct":
                        plus_med = med - statistics.median(base) * 1e3
                        plus_p99 = p99 - pct(base, 0.99) * 1e3
                        total, loop = cpu[name]
                        added = f" {plus_med:8.2f} {plus_p99:8.2f} {total * 1e3:6.2f}"
                        if name != "litellm":  # one process, its threads not told apart
                            added += f" {loop * 1e3:6.2f}"
                    note = "".join(f"\n{'':>17}failed {c}x: {why}" for why, c in failed.items())
                    print(f"{clients:>7} {stream!s:>6} {name:>8} {len(all_values):>5} "
                          f"{med:8.2f} {p99:8.2f}{added}{note}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
