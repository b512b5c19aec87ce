"""Secrets and prompts never reach the store, the logs or anything else llmspend writes;
SQL is always parameterized (DESIGN §8, §11).

One run through the real SDKs against the simulator, with known secrets everywhere they
can be: an OpenAI API key, a Gemini API key, prompt and completion text carrying markers
(the completion marker comes back through JSON-schema ``enum`` answers, tool-call
arguments and streamed deltas), a webhook URL whose path is a token — through budgets,
threshold alerts, a refusal, webhooks (one answering 200, one 500), a provider error, a
cut stream, async calls, both Gemini SDKs and, on SQLite, a store locked past its busy
timeout (the spool, if any). Then everything written is scanned: every row of every
``llmspend_*`` table, every file under ``$LLMSPEND_HOME`` (the SQLite file and its WAL
included, so deleted rows count too), DEBUG logs of the ``llmspend`` loggers, warnings,
webhook requests, alert events and frames, error messages llmspend raised.

SQL: a static scan of every statement llmspend builds (``exec_driver_sql``,
``text()``, the hot path's ``SQL()``, DBAPI ``execute``) proves that nothing but
allow-listed constant identifiers is ever formatted into SQL, and an injection attempt
through every name a user controls is refused or stored literally.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import http.server
import json
import logging
import os
import sqlite3
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import openai
import pytest

import llmspend
from llmspend.alerting.listeners import remove_alert_callback, set_webhook
from llmspend.alerting.webhooks import sender
from llmspend.sim import SimServer
from llmspend.store.engine import Store, forget_store

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import google.generativeai as legacy_genai
    from google import genai
    from google.genai import types as genai_types

OPENAI_KEY = "sk-test-SECRET123-" + "9f3c" * 8
GEMINI_KEY = "AIzaSy-test-SECRET456-" + "a1b2" * 6
PROMPT = "PROMPT-MARKER-7f3a"
COMPLETION = "COMPLETION-MARKER-9c1d"
HOOK_TOKEN = "hook-PATH-SECRET-55e1"  # a webhook path is a credential (e.g. Slack's)

#: What must never be written anywhere (the key fragments catch partial leaks).
SECRETS = {
    "OpenAI API key": OPENAI_KEY,
    "OpenAI key fragment": "SECRET123",
    "Gemini API key": GEMINI_KEY,
    "Gemini key fragment": "SECRET456",
    "prompt text": PROMPT,
    "completion text": COMPLETION,
}
#: The webhook token may live in the budget definition (the user configured it there), but
#: nowhere else: not in logs, warnings, or the delivery records.
HOOK_SECRETS = {"webhook path token": HOOK_TOKEN}

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": [COMPLETION]}},
    "required": ["answer"],
    "additionalProperties": False,
}


def messages(extra: str = "") -> list[dict[str, str]]:
    return [
        {"role": "system", "content": f"You are careful. {PROMPT}"},
        {"role": "user", "content": f"{extra} Tell me about {PROMPT}".strip()},
    ]


# -- capture ----------------------------------------------------------------------------------


class LogCapture(logging.Handler):
    """Every record of the ``llmspend`` loggers, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        # llmspend.sim is the simulated *provider* (test infrastructure, not the tracker):
        # it logs request lines, which for google-generativeai carry ?key=.
        if not record.name.startswith("llmspend.sim"):
            self.lines.append(self.format(record))


@contextlib.contextmanager
def captured_logs() -> Iterator[LogCapture]:
    handler = LogCapture()
    logger = logging.getLogger("llmspend")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class _Hook(http.server.BaseHTTPRequestHandler):
    """A webhook receiver: ``/ok/...`` answers 200, anything else 500."""

    requests: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).requests.append(
            {"path": self.path, "headers": dict(self.headers), "body": body.decode()}
        )
        code = 200 if self.path.startswith("/ok/") else 500
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[http.server.ThreadingHTTPServer]:
    _Hook.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh store; the SQLite file lives in ``$LLMSPEND_HOME``, so its bytes are
    scanned with everything else written there."""
    if request.param == "sqlite":
        url = f"sqlite:///{Path(os.environ['LLMSPEND_HOME']) / 'store.sqlite'}"
    else:
        url = request.getfixturevalue("pg_server").create_database()
    yield url
    forget_store(url)


def dump_tables(store: Store) -> dict[str, list[str]]:
    """Every row of every ``llmspend_*`` table, as text."""
    from sqlalchemy import MetaData, select

    meta = MetaData()
    with store.engine.connect() as conn:
        meta.reflect(conn, only=lambda name, _m: name.startswith("llmspend_"))
        return {
            name: [repr(tuple(row)) for row in conn.execute(select(table))]
            for name, table in sorted(meta.tables.items())
        }


def files_under(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def find_leaks(
    where: str, data: str | bytes, secrets: dict[str, str] = SECRETS
) -> list[tuple[str, str, str]]:
    """(where, what leaked, context) for every secret found in ``data``."""
    found = []
    for what, secret in secrets.items():
        needle: str | bytes = secret.encode() if isinstance(data, bytes) else secret
        at = data.find(needle)  # type: ignore[arg-type]
        if at >= 0:
            context = data[max(0, at - 60) : at + len(secret) + 60]
            found.append((where, what, repr(context)))
    return found


# -- the run ------------------------------------------------------------------------------------


def _openai_calls(sim: SimServer, got: dict[str, Any]) -> None:
    client = openai.OpenAI(api_key=OPENAI_KEY, base_url=sim.openai_base_url, max_retries=0)
    fmt = {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA, "strict": True}}
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=messages(),
        response_format=fmt,  # type: ignore[arg-type]
    )
    got["chat"] = reply.choices[0].message.content
    tool = {"type": "function", "function": {"name": "answer", "parameters": SCHEMA}}
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=messages(),
        tools=[tool],  # type: ignore[list-item]
    )
    got["tool"] = reply.choices[0].message.tool_calls[0].function.arguments  # type: ignore[index,union-attr]
    for usage in (True, False):
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=messages(), response_format=fmt, stream=True,  # type: ignore[arg-type]
            **({"stream_options": {"include_usage": True}} if usage else {}),
        )  # fmt: skip
        got[f"stream-{usage}"] = "".join(
            c.choices[0].delta.content or "" for c in stream if c.choices
        )
    text_fmt = {"format": {"type": "json_schema", "name": "a", "schema": SCHEMA, "strict": True}}
    resp = client.responses.create(
        model="gpt-4o-mini",
        instructions=PROMPT,
        input=f"about {PROMPT}",
        text=text_fmt,  # type: ignore[arg-type]
    )
    got["responses"] = resp.output_text
    client.embeddings.create(model="text-embedding-3-small", input=[PROMPT, f"more {PROMPT}"])
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-mini", messages=messages("#sim:error=500"))
    cut = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=messages("#sim:cut=3"),
        response_format=fmt,
        stream=True,  # type: ignore[arg-type]
    )
    with pytest.raises(openai.APIConnectionError):
        for _ in cut:
            pass
    cut.close()
    client.close()

    async def async_call() -> str | None:
        aclient = openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=sim.openai_base_url,
                                     max_retries=0)  # fmt: skip
        try:
            r = await aclient.chat.completions.create(
                model="gpt-4o-mini",
                messages=messages(),
                response_format=fmt,  # type: ignore[arg-type]
            )
            return r.choices[0].message.content
        finally:
            await aclient.close()

    got["async"] = asyncio.run(async_call())


def _gemini_calls(sim: SimServer, got: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = genai.Client(
            api_key=GEMINI_KEY, http_options=genai_types.HttpOptions(base_url=sim.url)
        )
        config = genai_types.GenerateContentConfig(
            system_instruction=PROMPT,
            response_mime_type="application/json",
            response_json_schema=SCHEMA,
        )
        reply = client.models.generate_content(
            model="gemini-2.5-flash", contents=f"about {PROMPT}", config=config
        )
        got["gemini"] = reply.text
        got["gemini-stream"] = "".join(
            c.text or ""
            for c in client.models.generate_content_stream(
                model="gemini-2.5-flash", contents=f"about {PROMPT}", config=config
            )
        )
        legacy_genai.configure(
            api_key=GEMINI_KEY, transport="rest", client_options={"api_endpoint": sim.url}
        )
        legacy = legacy_genai.GenerativeModel("gemini-2.5-flash", system_instruction=PROMPT)
        got["legacy"] = legacy.generate_content(f"about {PROMPT}").text


def _locked_store_call(url: str, sim: SimServer, home: Path) -> tuple[list[str], dict[str, bytes]]:
    """SQLite locked by another writer past the busy timeout while a call is recorded:
    whatever llmspend does with the row (spool it, warn), it must not write secrets.
    Returns the errors llmspend raised, as text, and the files in ``home`` while the store
    was locked (a spool is replayed and removed once the store is back)."""
    raised: list[str] = []
    path = url.removeprefix("sqlite:///")
    locker = sqlite3.connect(path, isolation_level=None, timeout=0.1)
    client = openai.OpenAI(api_key=OPENAI_KEY, base_url=sim.openai_base_url, max_retries=0)
    try:
        sender().wait(10)  # no webhook delivery is half-way through a write
        locker.execute("BEGIN IMMEDIATE")
        with llmspend.attribute(org="spoolorg"):  # no budget applies: nothing to reserve
            try:
                client.chat.completions.create(model="gpt-4o-mini", messages=messages())
            except llmspend.LLMSpendError as exc:
                raised.append(str(exc))
        while_locked = files_under(home)
    finally:
        with contextlib.suppress(sqlite3.Error):
            locker.execute("ROLLBACK")
        locker.close()
    with llmspend.attribute(org="spoolorg"):  # the store is back: any spool is replayed
        client.chat.completions.create(model="gpt-4o-mini", messages=messages())
    client.close()
    return raised, while_locked


@pytest.fixture
def quick_webhooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("LLMSPEND_WEBHOOK_RETRIES", "1")
    monkeypatch.setenv("LLMSPEND_WEBHOOK_BACKOFF", "0.01")
    monkeypatch.setenv("LLMSPEND_WEBHOOK_TIMEOUT", "5")
    monkeypatch.setenv("LLMSPEND_WEBHOOK_ALLOW", "127.0.0.1")  # receivers on loopback
    yield
    set_webhook(None)


def test_no_secret_or_prompt_text_is_written_anywhere(
    store_url: str,
    fresh_sim: SimServer,
    hook_server: http.server.ThreadingHTTPServer,
    quick_webhooks: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = Path(os.environ["LLMSPEND_HOME"])
    sqlite = store_url.startswith("sqlite")
    if sqlite:
        monkeypatch.setenv("LLMSPEND_SQLITE_BUSY_TIMEOUT", "300")
    port = hook_server.server_address[1]
    events: list[Any] = []
    got: dict[str, Any] = {}
    raised: list[str] = []
    with captured_logs() as logs, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker = llmspend.install(store_url, org="acme", project="churn", user="ana")
        llmspend.on_alert(events.append)
        try:
            llmspend.set_budget("org", "acme", "1000")
            llmspend.set_budget(
                "user", "acme/ana", "0.0005", "day", mode="soft", thresholds=(0.01, 0.5, 1.0),
                webhook_url=f"http://127.0.0.1:{port}/ok/{HOOK_TOKEN}",
            )  # fmt: skip
            llmspend.set_webhook(f"http://127.0.0.1:{port}/fail/{HOOK_TOKEN}")
            llmspend.set_budget("project", "acme/tight", "0.000001", "total")
            with llmspend.attribute(tags={"run": "secrets"}):
                _openai_calls(fresh_sim, got)
                _gemini_calls(fresh_sim, got)
            refused_client = openai.OpenAI(
                api_key=OPENAI_KEY, base_url=fresh_sim.openai_base_url, max_retries=0
            )
            with llmspend.attribute(project="tight"), pytest.raises(llmspend.BudgetExceeded) as no:
                refused_client.chat.completions.create(model="gpt-4o-mini", messages=messages())
            refused_client.close()
            raised.append(str(no.value))
            while_locked: dict[str, bytes] = {}
            if sqlite:
                errors, while_locked = _locked_store_call(store_url, fresh_sim, home)
                raised += errors
            assert sender().wait(20), "webhooks still queued"
            tables = dump_tables(tracker.store)
            records = llmspend.records()
            alerts = llmspend.alerts()
            recent = [repr(row) for row in tracker.recent]
            statuses = [repr(s) for s in llmspend.budget_status()]
        finally:
            remove_alert_callback(events.append)
            llmspend.uninstall()

    # -- the secrets did pass through the hooked SDKs (else this test proves nothing)
    sent = json.dumps([[r.path, r.body, r.headers] for r in fresh_sim.requests], default=str)
    assert PROMPT in sent and OPENAI_KEY in sent and GEMINI_KEY in sent
    for name in ("chat", "tool", "stream-True", "stream-False", "responses", "async", "gemini",
                 "gemini-stream"):  # fmt: skip
        assert COMPLETION in (got[name] or ""), (name, got[name])
    assert set(records["status"]) >= {"ok", "error", "partial", "refused"}
    assert records["provider"].eq("google").sum() >= 3
    assert set(alerts["kind"]) == {"threshold", "refused"} and events
    assert any(r["path"].startswith("/ok/") for r in _Hook.requests)
    assert any(r["path"].startswith("/fail/") for r in _Hook.requests)
    assert any("webhook" in line for line in logs.lines)  # the failing webhook was logged

    # -- and nothing of them was written or said anywhere
    leaks: list[tuple[str, str, str]] = []
    for name, rows in tables.items():
        leaks += find_leaks(f"table {name}", "\n".join(rows))
        if name not in ("llmspend_budgets", "llmspend_audit"):  # where the URL is configured
            leaks += find_leaks(f"table {name}", "\n".join(rows), HOOK_SECRETS)
    for rel, data in files_under(home).items():
        leaks += find_leaks(f"file $LLMSPEND_HOME/{rel}", data)
    for rel, data in while_locked.items():  # the spool, before its replay removed it
        leaks += find_leaks(f"file $LLMSPEND_HOME/{rel} (store locked)", data)
        if not rel.startswith("store.sqlite"):  # the store holds the budget's URL, by design
            leaks += find_leaks(f"file $LLMSPEND_HOME/{rel} (store locked)", data, HOOK_SECRETS)
    everything_said = {
        "log": "\n".join(logs.lines),
        "warnings": "\n".join(f"{w.category.__name__}: {w.message}" for w in caught),
        "alert events": "\n".join(
            f"{e!r}\n{e.message}\n{json.dumps(e.to_json(), default=str)}" for e in events
        ),
        "alerts()": alerts.to_json(default_handler=str, date_format="iso"),
        "records()": records.to_json(default_handler=str, date_format="iso"),
        "tracker.recent": "\n".join(recent),
        "budget_status()": "\n".join(statuses),
        "errors raised by llmspend": "\n".join(raised),
    }
    for where, text in everything_said.items():
        leaks += find_leaks(where, text)
        leaks += find_leaks(where, text, HOOK_SECRETS)
    for req in _Hook.requests:
        leaks += find_leaks(f"webhook POST {req['path'][:5]}", req["body"])
        leaks += find_leaks(f"webhook POST {req['path'][:5]}", json.dumps(req["headers"]))
    assert not leaks, "secrets written:\n" + "\n".join(map(str, leaks))


# -- SQL is parameterized ----------------------------------------------------------------------

PACKAGE = Path(llmspend.__file__).parent

#: The only things llmspend formats into SQL text: constant identifiers, integers, and SQL
#: that SQLAlchemy compiled. Keyed by (file, expression); anything else formatted into a
#: statement fails the test below.
_MARK_MIGRATION = "store/migrations/versions/0006_rollup_mark.py"
ALLOWED_IN_SQL: dict[tuple[str, str], str] = {
    ("budgets/ledger.py", "', '.join([c.key for c in BUDGET_COLS] + ['created_at'])"):
        "column names of the Budget model",
    ("budgets/ledger.py", "', '.join((f'b.{c}' for c in _COLS.split(', ')))"):
        "the same column names, qualified",
    ("budgets/ledger.py", "' AND '.join(where)"): "constant WHERE clauses (values bound)",
    ("budgets/ledger.py", "', '.join((str(int(i)) for i in ids))"):
        "ids read from the store, each passed through int() (id_list)",
    ("usage.py", "UsageRecord.__tablename__"): "a model's table name",
    ("usage.py", "', '.join(_INSERT_COLUMNS)"): "constant column names",
    ("usage.py", "', '.join([mark] * len(_INSERT_COLUMNS))"): "DBAPI placeholders",
    ("budgets/holds.py", "id_list(hard + soft)"):
        "period ids read from the store, each passed through int() (ledger.id_list)",
    ("budgets/holds.py", "id_list(soft)"):
        "period ids read from the store, each passed through int() (ledger.id_list)",
    ("budgets/holds.py", "id_list(ids)"):
        "period ids read from the store, each passed through int() (ledger.id_list)",
    ("store/hierarchy.py", "table"): "one of two constant table names (_member)",
    ("store/sqlite.py", "int(self.RESTART_WAIT_MS)"): "PRAGMA busy_timeout; a constant, int()",
    ("store/sqlite.py", "int(self.busy_ms)"): "PRAGMA busy_timeout; the store's setting, int()",
    ("store/rollups.py", "compiled.string"): "a statement compiled by SQLAlchemy",
    ("store/rollups.py", "hourly.sql"): "the compiled rollup upsert (compiled.string)",
    ("store/rollups.py", "daily.sql"): "the compiled rollup upsert (compiled.string)",
    ("store/rollups.py", "hourly.name"): "a model's table name (LOCK TABLE)",
    ("store/rollups.py", "daily.name"): "a model's table name (LOCK TABLE)",
    ("store/rollups.py", "table"): "one of the two rollup table names (_FOLDS)",
    ("store/rollups.py", "bucket"): "a constant bucket expression over ts (_FOLDS)",
    ("store/rollups.py", "', '.join(_COLUMNS)"): "constant column names",
    ("store/rollups.py", "', '.join(DIMENSION_COLUMNS)"): "constant column names",
    ("store/rollups.py", "', '.join((f'coalesce(sum({m}), 0)' for m in MEASURES[4:]))"):
        "sum() over constant column names",
    ("store/rollups.py", "', '.join((f'{m} = {table}.{m} + excluded.{m}' for m in MEASURES))"):
        "constant column and table names",
    (_MARK_MIGRATION, "', '.join(_MEASURES)"):
        "constant column names (a migration)",
    (_MARK_MIGRATION, "', '.join((f'sum({m})' for m in _MEASURES))"):
        "sum() over constant column names (a migration)",
    ("store/migrations/versions/0003_rollups.py", "', '.join(_MEASURES)"):
        "constant column names (a migration)",
    ("store/migrations/versions/0003_rollups.py", "', '.join((f'sum({m})' for m in _MEASURES))"):
        "sum() over constant column names (a migration)",
    ('analytics/query.py', "' UNION ALL '.join([one] * len(chunk))"):
        'one compiled SELECT repeated per chunk of ranges (values bound)',
    ('bulkload.py', "', '.join('?' * len(names))"):
        "constant column names (usage._INSERT_COLUMNS), placeholders, a model's table name",
    ('bulkload.py', "', '.join(names)"):
        "constant column names (usage._INSERT_COLUMNS), placeholders, a model's table name",
    ('bulkload.py', 'UsageRecord.__tablename__'):
        "constant column names (usage._INSERT_COLUMNS), placeholders, a model's table name",
    ('cli/dbcheck.py', 'table'):
        'constant table names (COUNTED)',
    ('store/arrowio.py', "', '.join((STORE_COLUMN.get(c, c) for c in columns))"):
        "records() columns checked against RECORD_COLUMNS (usage._record_columns), a model's table name",  # noqa: E501
    ('store/arrowio.py', 'UsageRecord.__tablename__'):
        "records() columns checked against RECORD_COLUMNS (usage._record_columns), a model's table name",  # noqa: E501
    ('store/health.py', 'int(limit)'):
        "PRAGMA quick_check's limit, int()",
    ('store/migrations/versions/0009_rollup_families.py', '\', \'.join((d if d in dims else "\'\'" for d in _DIMS))'):  # noqa: E501
        'constant table, column and bucket expressions (a migration)',
    ('store/migrations/versions/0009_rollup_families.py', "', '.join((f'sum({m})' for m in _MEASURES))"):  # noqa: E501
        'constant table, column and bucket expressions (a migration)',
    ('store/migrations/versions/0009_rollup_families.py', "', '.join(_DIMS)"):
        'constant table, column and bucket expressions (a migration)',
    ('store/migrations/versions/0009_rollup_families.py', "', '.join(_MEASURES)"):
        'constant table, column and bucket expressions (a migration)',
    ('store/migrations/versions/0009_rollup_families.py', 'name'):
        'constant table, column and bucket expressions (a migration)',
    ('store/migrations/versions/0009_rollup_families.py', '{\'hourly\': \'bucket\', \'daily\': "date_trunc(\'day\', bucket)", \'weekly\': "date_trunc(\'week\', bucket)"}[grain]'):  # noqa: E501
        'constant table, column and bucket expressions (a migration)',
    ('store/migrations/versions/0009_rollup_families.py', '{\'hourly\': \'bucket\', \'daily\': "substr(bucket, 1, 10) || \' 00:00:00.000000\'", \'weekly\': "date(substr(bucket, 1, 10), \'-6 days\', \'weekday 1\') || \' 00:00:00.000000\'"}[grain]'):  # noqa: E501
        'constant table, column and bucket expressions (a migration)',
    ('store/migrations/versions/0012_quarter_rollups.py', '\', \'.join((d if d in dims else "\'\'" for d in _DIMS))'):  # noqa: E501
        'constant table, column and bucket expressions (a migration)',
    ('store/migrations/versions/0012_quarter_rollups.py', "', '.join(_DIMS)"):
        'constant table, column and bucket expressions (a migration)',
    ('store/migrations/versions/0012_quarter_rollups.py', "', '.join(_MEASURES)"):
        'constant table, column and bucket expressions (a migration)',
    ('store/migrations/versions/0012_quarter_rollups.py', 'name'):
        'constant table, column and bucket expressions (a migration)',
    ('store/migrations/versions/0013_rollup_queue_and_api.py', "', '.join(('bucket', *key, *_MEASURES))"):  # noqa: E501
        'constant table, column and bucket expressions (a migration)',
    ('store/migrations/versions/0013_rollup_queue_and_api.py', "', '.join((str(i) for i in range(1, len(key) + 2)))"):  # noqa: E501
        'constant table, column and bucket expressions (a migration)',
    ('store/migrations/versions/0013_rollup_queue_and_api.py', "', '.join(dims)"):
        'constant table, column and bucket expressions (a migration)',
    ('store/migrations/versions/0013_rollup_queue_and_api.py', '(_PG_BUCKET if pg else _SQLITE_BUCKET)[grain]'):  # noqa: E501
        'constant table, column and bucket expressions (a migration)',
    ('store/migrations/versions/0013_rollup_queue_and_api.py', 'name'):
        'constant table, column and bucket expressions (a migration)',
    ('store/recover.py', "', '.join('?' * len(cols))"):
        "identifiers read from the damaged file's schema, quoted (_quote), and placeholders",
    ('store/recover.py', "', '.join((_quote(c) for c in cols))"):
        "identifiers read from the damaged file's schema, quoted (_quote), and placeholders",
    ('store/recover.py', 'name'):
        "identifiers read from the damaged file's schema, quoted (_quote), and placeholders",
    ('store/rollup_batch.py', "', '.join('?' * len(r.columns))"):
        'constant rollup table and column names, placeholders',
    ('store/rollup_batch.py', "', '.join(('bucket', *r.key))"):
        'constant rollup table and column names, placeholders',
    ('store/rollup_batch.py', "', '.join((f'{m} = {table}.{m} + excluded.{m}' for m in MEASURES))"):
        'constant rollup table and column names, placeholders',
    ('store/rollup_batch.py', "', '.join(_SOURCE)"):
        'constant rollup table and column names, placeholders',
    ('store/rollup_batch.py', "', '.join(r.columns)"):
        'constant rollup table and column names, placeholders',
    ('store/rollup_batch.py', 'r.table.name'):
        'constant rollup table and column names, placeholders',
    ('store/rollups.py', "', '.join(('bucket', *r.key))"):
        'constant rollup table names, columns and bucket expressions (Rollup definitions)',
    ('store/rollups.py', '\', \'.join((("coalesce(service_tier, \'\')" if d == \'service_tier\' else d) if d in r.dims else "\'\'" for d in r.key))'):  # noqa: E501
        'constant rollup table names, columns and bucket expressions (Rollup definitions)',
    ('store/rollups.py', "', '.join((str(i) for i in range(1, len(r.key) + 2)))"):
        'constant rollup table names, columns and bucket expressions (Rollup definitions)',
    ('store/rollups.py', "', '.join(_RAW_SUM_LIST)"):
        'constant rollup table names, columns and bucket expressions (Rollup definitions)',
    ('store/rollups.py', "', '.join(parts)"):
        'constant rollup table names, columns and bucket expressions (Rollup definitions)',
    ('store/rollups.py', "', '.join(r.columns)"):
        'constant rollup table names, columns and bucket expressions (Rollup definitions)',
    ('store/rollups.py', '_SQLITE_BUCKET[r.grain]'):
        'constant rollup table names, columns and bucket expressions (Rollup definitions)',
    ('store/rollups.py', 'r.table.name'):
        'constant rollup table names, columns and bucket expressions (Rollup definitions)',
    ('store/transactions.py', 'int(self._busy_ms)'):
        'PRAGMA busy_timeout; a number, int()',
    ('store/transactions.py', 'int(wait * 1000)'):
        'PRAGMA busy_timeout; a number, int()',
    ('store/transactions.py', 'int(slice_s * 1000)'):
        'PRAGMA busy_timeout; a number, int()',
    ("store/migrations/versions/0015_usage_generation.py", "name"):
        "constant trigger names (a migration)",
    ("store/migrations/versions/0015_usage_generation.py", "when"):
        "constant trigger events and WHEN clauses (a migration)",
    ("store/rollup_batch.py", "head"):
        "a constant INSERT head: a model's table name and constant column names",
    ("store/rollup_batch.py", "tail"):
        "a constant ON CONFLICT clause over constant column names",
    ("store/rollup_batch.py", "', '.join([one] * per)"): "DBAPI placeholders",
    ("store/rollup_batch.py", "', '.join([one] * (len(rest) // width))"): "DBAPI placeholders",
    ("store/segments.py", "', '.join(dict.fromkeys(('id', 'record_uid', 'service_tier', *(STORE_COLUMN.get(c, c) for c in COLUMN_KINDS))))"):  # noqa: E501
        "the usage table's constant column names (_SIGNATURE)",
    ("store/segments.py", "', '.join((f':{name}' for name in ids))"): "named placeholders",
}  # fmt: skip

_STRING_SINKS = frozenset({"exec_driver_sql", "executescript"})
_MAYBE_SINKS = frozenset({"execute", "executemany"})  # strings, or SQLAlchemy constructs
_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)


class SqlScan:
    """Where a module builds SQL text, and what it formats into it.

    Sinks: ``exec_driver_sql``, DBAPI ``execute``/``executemany``/``executescript`` given a
    string, ``sqlalchemy.text()`` and llmspend's hot-path ``SQL()``. For each, the SQL
    argument is traced back through local and module assignments, local helper functions,
    ``SQL(...).text`` and ``self.attr`` to string literals; every other expression formatted
    in (f-string parts, ``%``/``+`` operands, ``.replace()``/``.format()`` arguments,
    ``.join()`` results, unresolved names) is a *hole*.
    """

    def __init__(self, source: str) -> None:
        self.tree = ast.parse(source)
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                child._llmspend_parent = node  # type: ignore[attr-defined]
        self.module_values: dict[str, list[ast.expr]] = {}
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        for node in self.tree.body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.module_values.setdefault(target.id, []).append(node.value)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                if node.value is not None:
                    self.module_values.setdefault(node.target.id, []).append(node.value)
            elif isinstance(node, _FUNCS):
                self.functions[node.name] = node
        self.sa_text = any(
            isinstance(n, ast.ImportFrom)
            and (n.module or "").startswith("sqlalchemy")
            and any(a.name == "text" for a in n.names)
            for n in ast.walk(self.tree)
        )

    @staticmethod
    def _up(node: ast.AST, kinds: Any) -> Any:
        while (node := getattr(node, "_llmspend_parent", None)) is not None:
            if isinstance(node, kinds):
                return node
        return None

    def _values(self, name: str, at: ast.AST) -> list[ast.expr] | None:
        """What ``name`` was assigned, in the enclosing functions or the module
        (``None``: a parameter, or unknown)."""
        fn = self._up(at, _FUNCS)
        while fn is not None:
            found = [
                n.value
                for n in ast.walk(fn)
                if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == name for t in n.targets)
            ]
            if found:
                return found
            args = fn.args
            if any(a.arg == name for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)):
                return None
            fn = self._up(fn, _FUNCS)
        return self.module_values.get(name)

    def _sql_call(self, e: ast.expr) -> bool:
        f = e.func if isinstance(e, ast.Call) else None
        return isinstance(f, ast.Name) and (f.id == "SQL" or (f.id == "text" and self.sa_text))

    def stringy(self, e: ast.expr, depth: int = 0) -> bool:
        """Whether an ``execute`` argument is SQL text (rather than a SQLAlchemy construct)."""
        if depth > 6:
            return False
        if isinstance(e, ast.Constant):
            return isinstance(e.value, str)
        if isinstance(e, ast.JoinedStr | ast.BinOp):
            return True
        if isinstance(e, ast.IfExp):
            return self.stringy(e.body, depth + 1) or self.stringy(e.orelse, depth + 1)
        if isinstance(e, ast.Call):
            f = e.func
            if self._sql_call(e):
                return True
            if isinstance(f, ast.Attribute):
                if f.attr == "render":
                    return True
                if f.attr == "join":
                    return isinstance(f.value, ast.Constant) and isinstance(f.value.value, str)
                if f.attr in ("replace", "format", "strip"):
                    return self.stringy(f.value, depth + 1)
            if isinstance(f, ast.Name) and f.id in self.functions:
                returns = [r.value for r in ast.walk(self.functions[f.id])
                           if isinstance(r, ast.Return) and r.value is not None]  # fmt: skip
                return any(self.stringy(v, depth + 1) for v in returns)
            return False
        if isinstance(e, ast.Name):
            values = self._values(e.id, e)
            return bool(values) and any(self.stringy(v, depth + 1) for v in values)
        return isinstance(e, ast.Attribute) and e.attr in ("text", "sql")

    def holes(self, e: ast.expr, depth: int = 0) -> list[str]:
        src = ast.unparse(e)
        if depth > 10:
            return [src]
        if isinstance(e, ast.Constant):
            return [] if isinstance(e.value, str) else [src]
        if isinstance(e, ast.JoinedStr):
            return [h for v in e.values if isinstance(v, ast.FormattedValue)
                    for h in self.holes(v.value, depth + 1)]  # fmt: skip
        if isinstance(e, ast.BinOp):
            if isinstance(e.op, ast.Add):
                return self.holes(e.left, depth + 1) + self.holes(e.right, depth + 1)
            return [*self.holes(e.left, depth + 1), ast.unparse(e.right)]
        if isinstance(e, ast.IfExp):
            return self.holes(e.body, depth + 1) + self.holes(e.orelse, depth + 1)
        if isinstance(e, ast.Call):
            f = e.func
            if self._sql_call(e):
                return self.holes(e.args[0], depth + 1) if e.args else [src]
            if isinstance(f, ast.Attribute):
                if f.attr == "render":  # SQL.render(dialect): checked where SQL() is built
                    return []
                if f.attr == "replace" and len(e.args) == 2:
                    return self.holes(f.value, depth + 1) + self.holes(e.args[1], depth + 1)
                if f.attr == "strip":
                    return self.holes(f.value, depth + 1)
                return [src]
            if isinstance(f, ast.Name) and f.id in self.functions:
                return [h for r in ast.walk(self.functions[f.id])
                        if isinstance(r, ast.Return) and r.value is not None
                        for h in self.holes(r.value, depth + 1)]  # fmt: skip
            return [src]
        if isinstance(e, ast.Name):
            values = self._values(e.id, e)
            return [h for v in values for h in self.holes(v, depth + 1)] if values else [src]
        if isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name):
            if e.attr == "text":  # SQL(...).text
                built = [v for v in self._values(e.value.id, e) or [] if self._sql_call(v)]
                if built:
                    return [h for v in built for h in self.holes(v, depth + 1)]
            if e.value.id == "self":
                cls = self._up(e, ast.ClassDef)
                assigned = [
                    n.value
                    for n in ast.walk(cls) if cls is not None
                    if isinstance(n, ast.Assign)
                    and any(isinstance(t, ast.Attribute) and t.attr == e.attr
                            and isinstance(t.value, ast.Name) and t.value.id == "self"
                            for t in n.targets)
                ]  # fmt: skip
                if assigned:
                    return [h for v in assigned for h in self.holes(v, depth + 1)]
        return [src]

    def sites(self) -> Iterator[tuple[int, str, list[str]]]:
        """(line, call, holes) for every place SQL text is executed or built."""
        for node in ast.walk(self.tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            f, arg = node.func, node.args[0]
            if isinstance(f, ast.Attribute) and f.attr in _MAYBE_SINKS:
                if not self.stringy(arg):
                    continue
            elif not (
                (isinstance(f, ast.Attribute) and f.attr in _STRING_SINKS) or self._sql_call(node)
            ):
                continue
            yield node.lineno, ast.unparse(node)[:100], self.holes(arg)


def test_sql_scanner_finds_values_formatted_into_sql() -> None:
    """The scanner itself: it must see through variables, helpers and ``SQL().text``."""
    source = """
from sqlalchemy import text
from .store.fastsql import SQL
_Q = SQL("SELECT * FROM t WHERE id IN ({ids})")
def build(name):
    return f"SELECT * FROM t WHERE name = '{name}'"
def a(conn, name, ids):
    conn.exec_driver_sql(build(name))
    sql = "DELETE FROM t WHERE org = '%s'" % name
    conn.connection.cursor().execute(sql)
    conn.execute(text("SELECT 1 WHERE x = " + name))
    run(conn, SQL(_Q.text.replace("{ids}", ids)))
    conn.execute(text("SELECT :a"), {"a": name})
    conn.execute(select(t).where(t.c.name == name))
"""
    found = sorted({(line, tuple(holes)) for line, _, holes in SqlScan(source).sites() if holes})
    assert found == [(8, ("name",)), (10, ("name",)), (11, ("name",)), (12, ("ids",))], found


def test_sql_is_parameterized_everywhere() -> None:
    unexpected = []
    sites = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for line, call, holes in SqlScan(path.read_text(encoding="utf-8")).sites():
            sites += 1
            for hole in holes:
                if (rel, hole) not in ALLOWED_IN_SQL:
                    unexpected.append(f"llmspend/{rel}:{line}: {hole!r} formatted into {call}")
    assert sites > 20  # the scan found the hot path's statements
    assert not unexpected, (
        "values formatted into SQL text (bind them as parameters, or allow-list a constant "
        "identifier in ALLOWED_IN_SQL with the reason):\n" + "\n".join(unexpected)
    )


INJECTION = "x'; DROP TABLE llmspend_usage;--"


def test_injection_through_names_is_refused_or_stored_literally(
    store_url: str, fresh_sim: SimServer
) -> None:
    tracker = llmspend.install(store_url, org="acme", project="churn", user="ana")
    try:
        for scope, name in (("org", INJECTION), ("project", f"acme/{INJECTION}"),
                            ("user", f"acme/{INJECTION}"), ("project", INJECTION)):  # fmt: skip
            with pytest.raises(llmspend.BudgetError):
                llmspend.set_budget(scope, name, "5")
        for field in ("org", "project", "user"):
            with pytest.raises(llmspend.ValidationError), llmspend.attribute(**{field: INJECTION}):
                pass
            assert llmspend.records(**{field: INJECTION}).empty
        client = openai.OpenAI(api_key="x", base_url=fresh_sim.openai_base_url, max_retries=0)
        with warnings.catch_warnings(), llmspend.attribute(tags={INJECTION: INJECTION}):
            warnings.simplefilter("ignore")  # the model has no price
            client.chat.completions.create(
                model=INJECTION, messages=[{"role": "user", "content": INJECTION}]
            )
        client.close()
        row = {"ts": "2024-01-01", "provider": INJECTION, "model": INJECTION,
               "request_id": INJECTION, "api": INJECTION, "session_id": INJECTION}  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            llmspend.ingest([row])
        frame = llmspend.records(model=INJECTION)
        assert len(frame) == 2  # the table is there, and the text is data
        called = frame[frame["provider"] == "openai-compatible"].iloc[0]
        assert called["tags"] == {INJECTION: INJECTION}
        assert llmspend.records(request_id=INJECTION)["provider"].tolist() == [INJECTION]
        tables = dump_tables(tracker.store)
        assert "llmspend_usage" in tables and "llmspend_budgets" in tables
    finally:
        llmspend.uninstall()
