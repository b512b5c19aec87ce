"""The provider plugin registry: find plugins, apply their patches, remove exactly those.

Plugins are found through the entry-point group ``llmspend.providers`` — the built-in
OpenAI and Gemini taps exactly as a third party's — when ``install()`` runs, never at
``import llmspend``. An entry point names a zero-argument callable (normally the plugin
class) that returns a :class:`ProviderPlugin`; it is called once.

A plugin whose module cannot be imported because a module outside its own package (its
SDK) is missing is skipped quietly: SDKs are optional. A plugin that fails for any other
reason is logged once, by name, and skipped; it never breaks ``install()`` or another
plugin. A name is registered once: the first plugin of a name stays, unless
:func:`register_provider` replaces it on purpose.

``apply_patches()`` wraps every registered patch at class level with wrapt, now if its
module is imported, else when it is (post-import hook). ``remove_patches()`` removes
exactly the wrappers it added (wrapt handles), even under someone else's wrapper.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, EntryPoints, entry_points
from typing import Any, Protocol

import wrapt

__all__ = [
    "ENTRY_POINT_GROUP",
    "Patch",
    "ProviderPlugin",
    "Wrapper",
    "apply_patches",
    "is_active",
    "load_plugins",
    "register_provider",
    "registered",
    "remove_patches",
]

log = logging.getLogger("llmspend")

#: A wrapt wrapper: ``wrapper(wrapped, instance, args, kwargs)``.
Wrapper = Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]


@dataclass(frozen=True)
class Patch:
    """One method to wrap: ``wrapper`` around ``module``'s dotted ``attribute``."""

    module: str  # e.g. "openai._base_client"
    attribute: str  # dotted path inside the module, e.g. "SyncAPIClient.request"
    wrapper: Wrapper


class ProviderPlugin(Protocol):
    """A tap: its ``name`` (unique) and the patches that hook its SDK."""

    name: str

    def patches(self) -> list[Patch]: ...


#: The entry-point group every provider plugin, built-in or not, is declared in.
ENTRY_POINT_GROUP = "llmspend.providers"

_registry: dict[str, ProviderPlugin] = {}
# (plugin name, (module name, attribute), module object, wrapt handle), oldest first
_applied: list[tuple[str, tuple[str, str], Any, Any]] = []
_applied_keys: dict[tuple[str, str], str] = {}  # (module name, attribute) -> plugin name
_hooked_modules: set[str] = set()
_loaded_entry_points: set[tuple[str, str]] = set()  # (name, value): loaded or given up on
_reported: set[str] = set()  # plugins already logged as broken
_reported_missing: list[bool] = []  # llmspend's own entry points found missing (logged once)
_active = False
_lock = threading.RLock()


def register_provider(plugin: ProviderPlugin) -> None:
    """Register a provider plugin, replacing one of the same ``name``.

    Its patches are applied at the next ``install()``, or now if llmspend is installed (the
    wrappers of the plugin it replaces are removed first). Plugins declared as entry points
    need not call this.
    """
    _check_plugin(plugin)
    with _lock:
        if _active and plugin.name in _registry:
            _unwrap(lambda name: name == plugin.name)
        _registry[plugin.name] = plugin
        if _active:
            _apply_plugin(plugin)


def registered() -> dict[str, ProviderPlugin]:
    """The registered plugins by name (a copy)."""
    with _lock:
        return dict(_registry)


def _check_plugin(plugin: Any) -> None:
    if not isinstance(getattr(plugin, "name", None), str) or not callable(
        getattr(plugin, "patches", None)
    ):
        raise TypeError(f"{plugin!r} is not a provider plugin (it needs a name and patches())")


def _report(name: str, what: str, exc: BaseException) -> None:
    """Log a broken plugin once per process (its traceback at debug level)."""
    if name in _reported:
        return
    _reported.add(name)
    log.warning("llmspend: provider plugin %r %s and is skipped: %s: %s",
                name, what, type(exc).__name__, exc)  # fmt: skip
    log.debug("llmspend: provider plugin %r failed", name, exc_info=exc)


def _sdk_missing(ep: EntryPoint, exc: ImportError) -> bool:
    """Did ``ep`` fail to import because a module outside its own package is missing?"""
    missing = getattr(exc, "name", None)
    if not isinstance(exc, ModuleNotFoundError) or not missing:
        return False
    return missing.partition(".")[0] != ep.module.partition(".")[0]


def _load_entry_point(ep: EntryPoint) -> None:
    key = (ep.name, ep.value)
    if key in _loaded_entry_points:
        return
    try:
        factory = ep.load()
    except ImportError as exc:
        if _sdk_missing(ep, exc):  # an optional SDK is not installed: try again next time
            log.debug("llmspend: provider plugin %r skipped: %s", ep.name, exc)
            return
        _loaded_entry_points.add(key)
        _report(ep.name, "could not be imported", exc)
        return
    except Exception as exc:
        _loaded_entry_points.add(key)
        _report(ep.name, "could not be imported", exc)
        return
    _loaded_entry_points.add(key)
    try:
        plugin = factory()
        _check_plugin(plugin)
    except Exception as exc:
        _report(ep.name, "could not be created", exc)
        return
    _registry.setdefault(plugin.name, plugin)  # the same name registered once


def load_plugins() -> None:
    """Load the plugins declared in the ``llmspend.providers`` entry-point group.

    Each entry point is loaded once per process; one whose SDK is missing is tried again
    at the next call. Called by ``install()``.
    """
    with _lock:
        try:
            eps = entry_points(group=ENTRY_POINT_GROUP)
        except Exception as exc:  # unreadable metadata of some distribution
            _report(ENTRY_POINT_GROUP, "entry points could not be read", exc)
            eps = EntryPoints(())
        if not any(ep.module.startswith("llmspend.") for ep in eps) and not _reported_missing:
            _reported_missing.append(True)
            log.warning(
                "llmspend: its own entry points were not found, so no built-in provider is "
                "hooked; is the package installed (pip install -e .)?"
            )
        for ep in eps:
            _load_entry_point(ep)


def _apply_one(plugin: ProviderPlugin, module: Any, patch: Patch) -> None:
    key = (patch.module, patch.attribute)
    if key in _applied_keys:
        return
    try:
        handle = wrapt.wrap_function_wrapper(module, patch.attribute, patch.wrapper)
    except AttributeError:
        log.warning("llmspend: %s.%s not found; this SDK version is not hooked there",
                    patch.module, patch.attribute)  # fmt: skip
        return
    except Exception as exc:
        _report(plugin.name, f"could not patch {patch.module}.{patch.attribute}", exc)
        return
    _applied.append((plugin.name, key, module, handle))
    _applied_keys[key] = plugin.name


def _patches(plugin: ProviderPlugin) -> list[Patch]:
    try:
        patches = list(plugin.patches())
        for patch in patches:
            if not isinstance(patch, Patch):
                raise TypeError(f"patches() gave {patch!r}, not a Patch")
        return patches
    except Exception as exc:
        _report(plugin.name, "could not list its patches", exc)
        return []


def _on_import(module: Any) -> None:
    with _lock:
        if not _active:
            return
        for plugin in list(_registry.values()):
            for patch in _patches(plugin):
                if patch.module == module.__name__:
                    _apply_one(plugin, module, patch)


def _apply_plugin(plugin: ProviderPlugin) -> None:
    for patch in _patches(plugin):
        module = sys.modules.get(patch.module)
        if module is not None:
            _apply_one(plugin, module, patch)
        elif patch.module not in _hooked_modules:
            wrapt.register_post_import_hook(_on_import, patch.module)
            _hooked_modules.add(patch.module)


def apply_patches() -> None:
    """Load the plugins and apply every registered plugin's patches (idempotent)."""
    global _active
    with _lock:
        load_plugins()
        _active = True
        for plugin in list(_registry.values()):
            _apply_plugin(plugin)


def remove_patches() -> None:
    """Remove exactly the wrappers ``apply_patches`` added."""
    global _active
    with _lock:
        _active = False
        _unwrap(lambda name: True)


def _unwrap(which: Callable[[str], bool]) -> None:
    """Remove the wrappers applied for the plugins ``which`` names, newest first."""
    for index in reversed(range(len(_applied))):
        name, key, module, handle = _applied[index]
        if not which(name):
            continue
        del _applied[index]
        del _applied_keys[key]
        attribute = key[1]
        try:
            wrapt.unwrap_object(module, attribute, handle)
        except Exception as exc:  # someone replaced it wholesale: nothing of ours left
            log.warning("llmspend: could not unwrap %s.%s: %s",
                        module.__name__, attribute, exc)  # fmt: skip


def is_active() -> bool:
    """Are the patches applied (between ``install()`` and ``uninstall()``)?"""
    return _active
