"""The built-in provider taps: the openai SDK and both Gemini SDKs.

Each tap is a provider plugin (:class:`~llmspend.plugins.ProviderPlugin`) declared as an
entry point in the ``llmspend.providers`` group, exactly as a third party's is;
:mod:`llmspend.plugins` finds them at ``install()`` and applies their patches. A tap only
finds calls: what a request or response means is its dialect's (:mod:`llmspend.dialects`).
See ``docs/plugins.md``.
"""
