"""llmspend's JupyterLab extension: a spend meter, a budget panel and alert notifications.

The Python side is a Jupyter server extension (routes under ``/llmspend/``, see
:mod:`llmspend_jupyterlab.routes`); the prebuilt frontend ships in the wheel.
"""

from __future__ import annotations

from typing import Any

try:
    from ._version import __version__
except ImportError:  # a source tree that was never built
    __version__ = "0.0.0+unbuilt"

from .config import LLMSpendLab

__all__ = ["LLMSpendLab", "__version__"]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "llmspend-jupyterlab"}]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "llmspend_jupyterlab"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    """Register the ``/llmspend/*`` routes with the Jupyter server."""
    from .routes import setup_route_handlers

    settings = LLMSpendLab(parent=server_app)
    setup_route_handlers(server_app.web_app, settings)
    server_app.log.info(
        "llmspend_jupyterlab: registered the /llmspend/ routes%s",
        " (read-only)" if settings.read_only else "",
    )
