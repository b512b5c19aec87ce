"""The built-in provider taps: the openai SDK and both Gemini SDKs.

Each tap is a provider plugin (:class:`~llmspend.plugins.ProviderPlugin`) declared as an
entry point in the ``llmspend.providers`` group, exactly as a third party's is;
:mod:`llmspend.plugins` finds them at ``install()`` and applies their patches. The plugin
interface is re-exported here for the taps. See ``docs/plugins.md``.
"""

from __future__ import annotations

from ..plugins import Patch, ProviderPlugin, Wrapper, register_provider

__all__ = ["Patch", "ProviderPlugin", "Wrapper", "register_provider"]
