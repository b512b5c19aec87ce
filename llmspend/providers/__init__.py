"""Provider plugins: how llmspend hooks an SDK, behind one interface.

A provider plugin is an object with a ``name`` and a ``patches()`` method returning
:class:`Patch` es — (module, "Class.method", wrapt wrapper). The built-in OpenAI and Gemini
support register themselves with :func:`register_provider`, exactly as a third party
would. ``install()`` applies every registered patch at class level with wrapt: now if the
module is imported, else when it is (post-import hook). ``uninstall()`` removes exactly
the wrappers it added (wrapt handles), even under someone else's wrapper.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import wrapt

__all__ = ["Patch", "ProviderPlugin", "apply_patches", "register_provider", "remove_patches"]

log = logging.getLogger("llmspend")

Wrapper = Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]


@dataclass(frozen=True)
class Patch:
    module: str  # e.g. "openai._base_client"
    attribute: str  # dotted path inside the module, e.g. "SyncAPIClient.request"
    wrapper: Wrapper


class ProviderPlugin(Protocol):
    name: str

    def patches(self) -> list[Patch]: ...


_registry: dict[str, ProviderPlugin] = {}
_applied: list[tuple[Any, str, Any]] = []  # (module object, attribute, wrapt handle)
_applied_keys: set[tuple[str, str]] = set()
_hooked_modules: set[str] = set()
_active = False
_lock = threading.RLock()

_BUILTIN = (
    "llmspend.providers.openai_sdk",
    "llmspend.providers.google_genai",
    "llmspend.providers.google_generativeai",
)


def register_provider(plugin: ProviderPlugin) -> None:
    """Register a provider plugin (applied at the next ``install()``, or now if installed)."""
    with _lock:
        _registry[plugin.name] = plugin
        if _active:
            _apply_plugin(plugin)


def _load_builtins() -> None:
    for name in _BUILTIN:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("llmspend"):
                continue  # a built-in plugin not shipped in this build
            raise


def _apply_one(module: Any, patch: Patch) -> None:
    key = (patch.module, patch.attribute)
    if key in _applied_keys:
        return
    try:
        handle = wrapt.wrap_function_wrapper(module, patch.attribute, patch.wrapper)
    except AttributeError:
        log.warning("llmspend: %s.%s not found; this SDK version is not hooked there",
                    patch.module, patch.attribute)  # fmt: skip
        return
    _applied.append((module, patch.attribute, handle))
    _applied_keys.add(key)


def _on_import(module: Any) -> None:
    with _lock:
        if not _active:
            return
        for plugin in _registry.values():
            for patch in plugin.patches():
                if patch.module == module.__name__:
                    _apply_one(module, patch)


def _apply_plugin(plugin: ProviderPlugin) -> None:
    for patch in plugin.patches():
        module = sys.modules.get(patch.module)
        if module is not None:
            _apply_one(module, patch)
        elif patch.module not in _hooked_modules:
            wrapt.register_post_import_hook(_on_import, patch.module)
            _hooked_modules.add(patch.module)


def apply_patches() -> None:
    """Apply every registered plugin's patches (idempotent)."""
    global _active
    with _lock:
        _load_builtins()
        _active = True
        for plugin in list(_registry.values()):
            _apply_plugin(plugin)


def remove_patches() -> None:
    """Remove exactly the wrappers ``apply_patches`` added."""
    global _active
    with _lock:
        _active = False
        while _applied:
            module, attribute, handle = _applied.pop()
            try:
                wrapt.unwrap_object(module, attribute, handle)
            except Exception as exc:  # someone replaced it wholesale: nothing of ours left
                log.warning("llmspend: could not unwrap %s.%s: %s",
                            module.__name__, attribute, exc)  # fmt: skip
        _applied_keys.clear()


def is_active() -> bool:
    return _active
