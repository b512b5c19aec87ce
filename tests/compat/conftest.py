"""The compatibility matrix: frameworks notebooks call LLMs through, against ``llmspend.sim``.

Run by ``make compat`` (which installs the frameworks of ``requirements.txt``), never by the
normal suite (``--ignore=tests/compat`` in pytest's ``addopts``). Every framework is
offline here: its network switches are set before it is imported, and any connection to
a host other than the loopback fails at once (a test that needed the internet fails fast
instead of hanging).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

# Offline switches, set before any framework is imported (litellm fetches its price map at
# import unless told to use its local copy).
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["LITELLM_TELEMETRY"] = "False"
os.environ["LITELLM_LOG"] = "ERROR"
os.environ["DSPY_CACHEDIR"] = os.environ.get("DSPY_CACHEDIR") or "/tmp/llmspend-compat-dspy"
os.environ["LANGCHAIN_TRACING_V2"] = "false"
os.environ["LANGSMITH_TRACING"] = "false"
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"
os.environ["LOGFIRE_SEND_TO_LOGFIRE"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["ANONYMIZED_TELEMETRY"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TIKTOKEN_CACHE_DIR"] = os.environ.get("TIKTOKEN_CACHE_DIR") or "/tmp/llmspend-tt"
for _key in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GOOGLE_API_KEY", "GEMINI_API_KEY"):
    os.environ.pop(_key, None)

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
_real_getaddrinfo = socket.getaddrinfo


def _loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if name is not None and str(name).lower() not in _LOOPBACK:
        raise OSError(f"compat tests talk to 127.0.0.1 only, not {name!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _loopback_only


@pytest.fixture
def spend(fresh_sim: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """llmspend installed on a fresh store, the simulator declared as an OpenAI and a Gemini
    endpoint (for frameworks with their own HTTP code); a :class:`Probe` to check with."""
    import llmspend
    from llmspend.dialects import hosts

    from .matrix import Probe

    monkeypatch.setattr(hosts, "_declared", [])
    monkeypatch.delenv("LLMSPEND_ENDPOINTS", raising=False)
    tracker = llmspend.install(f"sqlite:///{tmp_path / 'c.sqlite'}", org="acme", user="ana")
    llmspend.declare_endpoint(fresh_sim.openai_base_url, "openai")
    llmspend.declare_endpoint(fresh_sim.url + "/v1beta", "gemini")
    yield Probe(tracker, fresh_sim)
    llmspend.uninstall()


def pytest_configure(config: pytest.Config) -> None:
    # The frameworks' own deprecation and pydantic notices are not what this suite checks.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore::PendingDeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore::UserWarning")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from .matrix import SEEN

    if SEEN:
        terminalreporter.section("refusals as the user sees them")
        for test, shown, reachable, named in SEEN:
            terminalreporter.write_line(
                f"{test}: {shown}; BudgetExceeded reachable: {reachable}; budget named: {named}"
            )
