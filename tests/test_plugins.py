"""Provider plugins: entry points, a third-party plugin end to end, and broken plugins.

A throwaway third-party distribution is written to ``tmp_path`` (a fake SDK, its plugin and
a ``.dist-info`` declaring the ``llmspend.providers`` entry point) and put on ``sys.path``,
as ``pip install`` would leave it. Nothing is sent anywhere but the local simulator.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from decimal import Decimal
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

import llmspend
from llmspend import plugins

TOYSDK = '''
"""A fake provider SDK: returns a canned response, and remembers what it sent."""
SENT = []


class Client:
    def complete(self, model, prompt, max_tokens=16):
        SENT.append((model, prompt, max_tokens))
        if prompt == "fail":
            raise ConnectionError("toy server down")
        return {"id": "toy-1", "model": model, "usage": {"input": 11, "output": 5}}
'''

TOYPLUGIN = '''
"""A third-party llmspend provider plugin for toysdk (as docs/plugins.md shows)."""
import toysdk  # noqa: F401  (the SDK: if it is missing, llmspend skips this plugin quietly)

from llmspend import Patch, Usage, begin_call


def _complete(wrapped, instance, args, kwargs):
    def bind(model, prompt, max_tokens=16):
        return model, prompt, max_tokens

    model, prompt, max_tokens = bind(*args, **kwargs)
    call = begin_call(
        "openai", "toy.complete", model, payload=prompt, max_output_tokens=max_tokens
    )  # may raise llmspend.BudgetExceeded: nothing is sent
    if call is None:  # llmspend is not installed (or failed)
        return wrapped(*args, **kwargs)
    try:
        response = wrapped(*args, **kwargs)
    except BaseException as exc:
        call.finish(None, status="error", error=exc)
        raise
    usage = response["usage"]
    call.finish(
        Usage(input_tokens=usage["input"], output_tokens=usage["output"]),
        response_model=response["model"],
        request_id=response["id"],
    )
    return response


class ToyPlugin:
    name = "toy"

    def patches(self):
        return [Patch("toysdk", "Client.complete", _complete)]
'''


def write_distribution(root: Path, name: str, entry_points_txt: str, **modules: str) -> None:
    """Leave ``name``-0.1 in ``root`` as an installer would: modules and a .dist-info."""
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points_txt))


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The registry as it is, restored afterwards; plugins logged as broken forgotten."""
    monkeypatch.setattr(plugins, "_registry", dict(plugins._registry))
    monkeypatch.setattr(plugins, "_loaded_entry_points", set(plugins._loaded_entry_points))
    monkeypatch.setattr(plugins, "_reported", set())
    before = set(sys.modules)
    yield
    llmspend.uninstall()
    for name in set(sys.modules) - before:
        if name.partition(".")[0] in {"toysdk", "toyplugin", "brokenplugin", "needsdk"}:
            del sys.modules[name]


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_registry: None) -> Path:
    """A directory on ``sys.path`` where the test "installs" distributions."""
    root = tmp_path / "site-packages"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))  # also invalidates importlib's caches
    return root


def install(tmp_path: Path) -> Any:
    importlib.invalidate_caches()
    return llmspend.install(
        f"sqlite:///{tmp_path / 'plugins.sqlite'}", org="acme", project="churn", user="ana"
    )


def llmspend_entry_points() -> dict[str, str]:
    return {
        ep.name: ep.value
        for ep in entry_points(group=plugins.ENTRY_POINT_GROUP)
        if ep.dist is not None and ep.dist.name == "llmspend"
    }


# -- the built-ins -------------------------------------------------------------------------


def test_the_builtins_are_entry_points_and_nothing_lists_them() -> None:
    assert llmspend_entry_points() == {
        "openai": "llmspend.providers.openai_sdk:OpenAIPlugin",
        "google-genai": "llmspend.providers.google_genai:GoogleGenAIPlugin",
        "google-generativeai": "llmspend.providers.google_generativeai:GoogleGenerativeAIPlugin",
        "anthropic": "llmspend.providers.anthropic_sdk:AnthropicPlugin",
        "httpx": "llmspend.providers.httpx_tap:HttpxPlugin",
        "httpx2": "llmspend.providers.httpx_tap:Httpx2Plugin",
        "requests": "llmspend.providers.requests_tap:RequestsPlugin",
        "aiohttp": "llmspend.providers.aiohttp_tap:AiohttpPlugin",
        "dspy": "llmspend.providers.lm15_tap:DspyPlugin",
    }
    import llmspend.providers

    for module in (plugins, llmspend.providers):
        assert not hasattr(module, "_BUILTIN")
        assert "openai_sdk" not in inspect.getsource(module)  # no hard-coded list elsewhere


def test_importing_a_builtin_tap_registers_nothing() -> None:
    """The built-ins are registered only through their entry points, as a third party's."""
    code = (
        "import llmspend.providers.openai_sdk, llmspend.providers.google_genai\n"
        "import llmspend.providers.google_generativeai\n"
        "from llmspend import plugins\n"
        "print(sorted(plugins._registry))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_plugins_load_at_install_not_at_import() -> None:
    code = (
        "import sys, llmspend\n"
        "print(sorted(m for m in sys.modules if m.startswith(('llmspend.plugins', "
        "'llmspend.providers', 'importlib.metadata'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_builtin_registered_twice_is_applied_once(
    tmp_path: Path, fresh_registry: None, fresh_sim: Any
) -> None:
    import openai
    from openai._base_client import SyncAPIClient

    from llmspend.providers.openai_sdk import OpenAIPlugin

    original = SyncAPIClient.__dict__["request"]
    llmspend.register_provider(OpenAIPlugin())  # by hand, as well as its entry point
    install(tmp_path)
    install(tmp_path)
    assert [p.name for p in plugins.registered().values()].count("openai") == 1
    wrapper = SyncAPIClient.__dict__["request"]
    assert wrapper is not original and wrapper.__wrapped__ is original  # one wrapper, ours

    client = openai.OpenAI(api_key="x", base_url=fresh_sim.openai_base_url, max_retries=0)
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert len(llmspend.records()) == 1  # one row, not two
    llmspend.uninstall()
    assert SyncAPIClient.__dict__["request"] is original


# -- a third-party plugin ------------------------------------------------------------------


def test_a_third_party_plugin_is_priced_budgeted_recorded_and_removed(
    tmp_path: Path, site: Path
) -> None:
    write_distribution(
        site,
        "toyplugin",
        "[llmspend.providers]\ntoy = toyplugin:ToyPlugin\n",
        toysdk=TOYSDK,
        toyplugin=TOYPLUGIN,
    )
    import toysdk

    original = toysdk.Client.__dict__["complete"]
    install(tmp_path)
    assert "toy" in plugins.registered()
    assert toysdk.Client.__dict__["complete"] is not original

    client = toysdk.Client()
    response = client.complete("gpt-4o-mini", "What is 2 + 2?", max_tokens=16)
    assert response["usage"] == {"input": 11, "output": 5}  # the caller's result, unchanged

    # priced through the normal price book, and recorded
    expected = llmspend.price("gpt-4o-mini", provider="openai", input_tokens=11, output_tokens=5)
    assert expected.status == "priced"
    assert expected.total_usd is not None and expected.total_usd > 0
    (row,) = llmspend.records().to_dict("records")
    assert (row["provider"], row["api"], row["model"]) == ("openai", "toy.complete", "gpt-4o-mini")
    assert (row["input_tokens"], row["output_tokens"]) == (11, 5)
    assert row["cost_usd"] == expected.total_usd
    assert isinstance(row["cost_usd"], Decimal)
    assert row["status"] == "ok"
    assert (row["org"], row["project"], row["user"]) == ("acme", "churn", "ana")

    # a failure is recorded as an error, and the SDK's exception reaches the caller unchanged
    with pytest.raises(ConnectionError, match="toy server down"):
        client.complete("gpt-4o-mini", "fail")
    assert llmspend.records(status="error")["cost_usd"].tolist() == [Decimal(0)]

    # budgeted: a hard budget refuses before the SDK is reached
    llmspend.set_budget("project", "acme/churn", "0.000001", "day", mode="hard")
    sent = len(toysdk.SENT)
    with pytest.raises(llmspend.BudgetExceeded):
        client.complete("gpt-4o-mini", "What is 3 + 3?", max_tokens=16)
    assert len(toysdk.SENT) == sent  # nothing was sent
    assert llmspend.records(status="refused")["api"].tolist() == ["toy.complete"]

    # uninstall restores the SDK method exactly; calls then go straight through
    llmspend.uninstall()
    assert toysdk.Client.__dict__["complete"] is original
    client.complete("gpt-4o-mini", "unrecorded")
    assert len(toysdk.SENT) == sent + 1
    assert len(llmspend.records()) == 3


def test_a_plugin_whose_sdk_is_missing_is_skipped_quietly(
    tmp_path: Path, site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_distribution(
        site,
        "needsdk",
        "[llmspend.providers]\nneeds = needsdk:Plugin\n",
        needsdk="import toysdk_not_installed  # noqa: F401\n",
    )
    with caplog.at_level(logging.DEBUG, logger="llmspend"):
        install(tmp_path)
    assert not [
        r for r in caplog.records if r.levelno >= logging.WARNING and "needs" in r.getMessage()
    ]
    assert "needs" not in plugins.registered()

    # once the SDK is installed, the next install() finds the plugin
    (site / "toysdk_not_installed.py").write_text("")
    (site / "needsdk.py").write_text(
        "import toysdk_not_installed  # noqa: F401\n\n"
        "class Plugin:\n    name = 'needs'\n\n    def patches(self):\n        return []\n"
    )
    install(tmp_path)
    assert "needs" in plugins.registered()


def test_a_broken_plugin_is_logged_once_and_the_builtins_still_work(
    tmp_path: Path, site: Path, caplog: pytest.LogCaptureFixture, fresh_sim: Any
) -> None:
    import openai

    write_distribution(
        site,
        "brokenplugin",
        "[llmspend.providers]\nbroken = brokenplugin:Plugin\n",
        brokenplugin="raise RuntimeError('boom')\n",
    )
    write_distribution(
        site,
        "toyplugin",
        """\
        [llmspend.providers]
        toy = toyplugin:ToyPlugin
        bad-factory = toyplugin:bad_factory
        bad-patches = toyplugin:BadPatches
        """,
        toysdk=TOYSDK,
        toyplugin=TOYPLUGIN
        + textwrap.dedent("""
            def bad_factory():
                raise ValueError("no config")


            class BadPatches:
                name = "bad-patches"

                def patches(self):
                    return ["not a patch"]
            """),
    )
    with caplog.at_level(logging.WARNING, logger="llmspend"):
        install(tmp_path)
        install(tmp_path)  # again: nothing is logged twice
    warned = sorted(
        message
        for r in caplog.records
        if r.levelno >= logging.WARNING
        and any(name in (message := r.getMessage()) for name in ("'b", "'toy'"))
    )
    assert len(warned) == 3, warned
    assert "'bad-factory'" in warned[0] and "ValueError: no config" in warned[0]
    assert "'bad-patches'" in warned[1] and "not a Patch" in warned[1]
    assert "'broken'" in warned[2] and "RuntimeError: boom" in warned[2]

    # the other plugins work: the toy one, and the built-in openai one
    import toysdk

    toysdk.Client().complete("gpt-4o-mini", "hello")
    client = openai.OpenAI(api_key="x", base_url=fresh_sim.openai_base_url, max_retries=0)
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    frame = llmspend.records()
    assert sorted(frame["api"]) == ["chat.completions", "toy.complete"]
    assert (frame["status"] == "ok").all()


def test_register_provider_rejects_what_is_not_a_plugin() -> None:
    with pytest.raises(TypeError, match="not a provider plugin"):
        llmspend.register_provider(object())  # type: ignore[arg-type]


def test_a_plugin_registered_again_while_installed_replaces_its_wrappers(
    tmp_path: Path, site: Path
) -> None:
    """A notebook user fixes a plugin and runs ``register_provider`` again: the new one
    hooks the SDK (not the old wrapper), once, and ``uninstall()`` still restores it."""
    write_distribution(site, "toysdk", "", toysdk=TOYSDK)
    import toysdk

    from llmspend import Patch, Usage, begin_call

    def plugin(api: str) -> Any:
        def complete(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
            call = begin_call("openai", api, args[0], payload=args[1])
            response = wrapped(*args, **kwargs)
            usage = Usage(input_tokens=11, output_tokens=5)
            assert call is not None
            call.finish(usage, response_model=response["model"])
            return response

        class Toy:
            name = "toy-by-hand"

            def patches(self) -> list[Patch]:
                return [Patch("toysdk", "Client.complete", complete)]

        return Toy()

    original = toysdk.Client.__dict__["complete"]
    install(tmp_path)
    llmspend.register_provider(plugin("toy.v1"))
    toysdk.Client().complete("gpt-4o-mini", "first")
    llmspend.register_provider(plugin("toy.v2"))
    toysdk.Client().complete("gpt-4o-mini", "second")
    assert llmspend.records()["api"].tolist() == ["toy.v1", "toy.v2"]
    assert toysdk.Client.__dict__["complete"].__wrapped__ is original  # one wrapper

    llmspend.uninstall()
    assert toysdk.Client.__dict__["complete"] is original
