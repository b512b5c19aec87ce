"""The openai tap reads a client's ``base_url`` straight from the client only where the
property's getter is the SDK's plain one; every other getter is still called."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from llmspend.providers import openai_sdk
from llmspend.providers.openai_sdk import detect_provider


def _sdk_clients() -> list[Any]:
    endpoint, version = "https://r.openai.azure.com", "2024-10-21"
    return [
        openai.OpenAI(api_key="x", base_url="https://api.x.ai/v1"),
        openai.AsyncOpenAI(api_key="x", base_url="https://api.x.ai/v1"),
        openai.AzureOpenAI(api_key="x", azure_endpoint=endpoint, api_version=version),
        openai.AsyncAzureOpenAI(api_key="x", azure_endpoint=endpoint, api_version=version),
    ]


@pytest.mark.parametrize("client", _sdk_clients(), ids=lambda c: type(c).__name__)
def test_the_sdk_clients_getters_are_read_straight_and_agree(client: Any) -> None:
    assert openai_sdk._base_url(client) is client.base_url
    assert openai_sdk._plain_getters[type(client).base_url] is not False


def test_a_client_whose_base_url_changes_after_a_call_is_seen_anew() -> None:
    client = openai.OpenAI(api_key="x", base_url="https://api.openai.com/v1")
    assert detect_provider(client) == "openai"
    client.base_url = "https://api.x.ai/v1"
    assert openai_sdk._base_url(client) is client.base_url
    assert detect_provider(client) == "xai"


def test_a_replaced_imported_getter_is_called(monkeypatch: pytest.MonkeyPatch) -> None:
    """``OpenAI.base_url`` imports its getter on each read: one patched in is followed."""
    from openai.lib import _client_auth

    client = openai.OpenAI(api_key="x", base_url="https://api.openai.com/v1")
    assert detect_provider(client) == "openai"
    xai = openai.OpenAI(api_key="x", base_url="https://api.x.ai/v1").base_url
    monkeypatch.setattr(_client_auth, "syncbase_url", lambda self: xai)
    assert detect_provider(client) == "xai"
    monkeypatch.undo()
    assert detect_provider(client) == "openai"


def test_the_module_level_clients_getter_is_called(monkeypatch: pytest.MonkeyPatch) -> None:
    """``openai.base_url = ...`` is read by the module client's own getter on each read."""
    client = openai._ModuleClient(api_key="x", base_url="https://api.openai.com/v1")
    assert detect_provider(client) == "openai"
    monkeypatch.setattr(openai, "base_url", "https://api.x.ai/v1")
    assert detect_provider(client) == "xai"
    assert openai_sdk._plain_getters[type(client).base_url] is False


class _Rerouted(openai.OpenAI):
    """A getter that names the same attribute but does more than return it."""

    @property
    def base_url(self) -> Any:
        return self._configured_base_url.copy_with(host="api.x.ai")

    @base_url.setter
    def base_url(self, url: Any) -> None:
        openai.OpenAI.base_url.fset(self, url)  # type: ignore[attr-defined]


class _Intercepted(openai.OpenAI):
    def __getattribute__(self, name: str) -> Any:
        if name == "base_url":
            return openai.OpenAI(api_key="x", base_url="https://api.x.ai/v1").base_url
        return super().__getattribute__(name)


@pytest.mark.parametrize("cls", [_Rerouted, _Intercepted])
def test_any_other_getter_is_called(cls: type) -> None:
    client = cls(api_key="x", base_url="https://api.openai.com/v1")
    assert detect_provider(client) == "xai"
    assert detect_provider(openai.OpenAI(api_key="x", base_url="https://api.openai.com/v1")) == (
        "openai"
    )


def test_a_getter_failing_is_no_host() -> None:
    client = openai.OpenAI(api_key="x", base_url="https://api.openai.com/v1")
    del client._configured_base_url
    assert detect_provider(client) == "openai-compatible"
