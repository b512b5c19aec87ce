from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.pgserver import PgServer, PgUnavailable

IN_CI = bool(os.environ.get("CI"))

_ENV_VARS = (
    "LLMSPEND_HOME", "LLMSPEND_DATABASE_URL", "LLMSPEND_PRICES", "LLMSPEND_ORG",
    "LLMSPEND_PROJECT", "LLMSPEND_USER", "JUPYTERHUB_USER", "LLMSPEND_GATEWAY_URL",
    "LLMSPEND_GATEWAY_KEY", "JUPYTERHUB_API_TOKEN", "LLMSPEND_OTEL", "LLMSPEND_WEBHOOK_ALLOW",
)  # fmt: skip


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The price table llmspend caches (``$XDG_CACHE_HOME/llmspend``) goes to a directory of
    the session's, not the user's cache; child processes inherit it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(autouse=True)
def _isolated_env(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Every test gets its own data directory and no llmspend settings from outside."""
    for var in _ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LLMSPEND_HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.setenv("LLMSPEND_USER", "tester")
    from llmspend.tracker import set_tracker

    set_tracker(None)
    yield
    set_tracker(None)


@pytest.fixture
def patient_locks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes racing for one SQLite store wait for each other's write lock as long as it
    takes (``LLMSPEND_LOCK_WAIT`` 60 s, inherited by child processes) instead of the 0.25 s
    after which the outage policy applies: on a loaded machine a writer can hold the lock
    longer, and these tests are about the budgets, not the lock wait
    (tests/test_store_faults.py tests that)."""
    monkeypatch.setenv("LLMSPEND_LOCK_WAIT", "60")


@pytest.fixture
def locked_sqlite(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """An installed SQLite store (busy timeout 100 ms), and another connection that can
    hold its write lock: (tracker, that connection)."""
    import sqlite3

    import llmspend
    from llmspend.store.engine import forget_store

    monkeypatch.setenv("LLMSPEND_SQLITE_BUSY_TIMEOUT", "100")
    path = tmp_path / "locked.sqlite"
    url = f"sqlite:///{path}"
    tracker = llmspend.install(url, org="acme", project="churn", user="ana")
    other = sqlite3.connect(path, isolation_level=None, timeout=0.1)
    yield tracker, other
    other.close()
    llmspend.uninstall()
    forget_store(url)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        server = PgServer().start()
    except PgUnavailable as exc:
        if IN_CI:
            pytest.fail(f"CI needs a PostgreSQL server and none could be started: {exc}")
        pytest.skip(f"no PostgreSQL server: {exc}")
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh, empty store URL: a SQLite file, or a new database on the test cluster."""
    from llmspend.store.engine import forget_store

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    else:
        url = request.getfixturevalue("pg_server").create_database()
    yield url
    forget_store(url)


@pytest.fixture
def tracker(store_url: str):  # type: ignore[no-untyped-def]
    """The current tracker, on a fresh store (SQLite and PostgreSQL)."""
    from llmspend.tracker import Tracker, set_tracker

    t = Tracker(store_url, org="acme", project="churn", user="ana")
    set_tracker(t)
    yield t
    set_tracker(None)


@pytest.fixture(scope="session")
def sim():  # type: ignore[no-untyped-def]
    """The bundled simulated provider on 127.0.0.1, shared by the session."""
    from llmspend.sim import SimServer

    server = SimServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh_sim(sim):  # type: ignore[no-untyped-def]
    """The session's simulator with its request log and behaviours reset."""
    sim.reset()
    return sim


def _install(url: str):  # type: ignore[no-untyped-def]
    import llmspend

    return llmspend.install(url, org="acme", project="churn", user="ana")


@pytest.fixture
def installed(tmp_path):  # type: ignore[no-untyped-def]
    """llmspend installed on a fresh SQLite store; uninstalled afterwards."""
    import llmspend
    from llmspend.store.engine import forget_store

    url = f"sqlite:///{tmp_path / 'installed.sqlite'}"
    tracker = _install(url)
    yield tracker
    llmspend.uninstall()
    forget_store(url)


@pytest.fixture
def installed_any(store_url: str):  # type: ignore[no-untyped-def]
    """llmspend installed on a fresh store, SQLite and PostgreSQL."""
    import llmspend

    tracker = _install(store_url)
    yield tracker
    llmspend.uninstall()


@pytest.fixture
def installed_pg(pg_server):  # type: ignore[no-untyped-def]
    """llmspend installed on a fresh PostgreSQL database (for what only PostgreSQL has)."""
    import llmspend
    from llmspend.store.engine import forget_store

    url = pg_server.create_database()
    tracker = _install(url)
    yield tracker
    llmspend.uninstall()
    forget_store(url)


@pytest.fixture
def moved(fresh_sim, tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """An OpenAI endpoint that answers 307 to the simulator; llmspend installed. Its URL
    (tests/test_http_redirects.py, and tests/compat/test_dspy.py for dspy's transport)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import llmspend
    from llmspend.dialects import hosts

    class Moved(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            body = b"<html>moved</html>"
            self.send_response(307)
            self.send_header("Location", fresh_sim.url + self.path)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Moved)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(hosts, "_declared", [])
    monkeypatch.delenv("LLMSPEND_ENDPOINTS", raising=False)
    base = f"http://127.0.0.1:{server.server_address[1]}/v1"
    llmspend.install(f"sqlite:///{tmp_path / 't.sqlite'}", org="acme", user="ana")
    llmspend.declare_endpoint(base, "openai")
    llmspend.declare_endpoint(fresh_sim.openai_base_url, "openai")
    yield base + "/chat/completions"
    llmspend.uninstall()
    server.shutdown()
    server.server_close()
    thread.join(5)
