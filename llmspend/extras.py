"""Optional extras, checked up front: one helper every feature behind an extra calls.

A feature that needs an extra (``pip install 'llmspend[notebook]'`` and the like) calls
:func:`require_extra` before it imports anything from it, so a missing package is one
:class:`~llmspend.errors.MissingExtra` line naming the extra (the CLI prints it and exits
1), not a ``ModuleNotFoundError`` deep inside. The check finds modules without importing
them (``importlib.util.find_spec``), so it costs next to nothing when they are there.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable

from .errors import MissingExtra

__all__ = [
    "DASHBOARD",
    "GATEWAY",
    "NOTEBOOK_CHARTS",
    "OTEL",
    "PARQUET",
    "POSTGRES",
    "REPORT",
    "missing_modules",
    "require_extra",
]

#: What each feature behind an extra needs: (extra, modules), per pyproject.toml.
REPORT = ("notebook", ("papermill", "nbformat", "nbconvert", "ipykernel", "altair", "vl_convert"))
DASHBOARD = ("notebook", ("ipywidgets", "IPython", "altair", "vl_convert"))
NOTEBOOK_CHARTS = ("notebook", ("IPython", "altair", "vl_convert"))
POSTGRES = ("postgres", ("psycopg",))
PARQUET = ("parquet", ("pyarrow",))
OTEL = ("otel", ("opentelemetry.trace",))
GATEWAY = ("gateway", ("starlette", "uvicorn", "aiohttp"))


def missing_modules(modules: Iterable[str]) -> tuple[str, ...]:
    """The modules of ``modules`` that cannot be imported (found without importing them)."""
    missing = []
    for name in modules:
        if name in sys.modules:
            continue
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent missing, or a broken finder
            found = False
        if not found:
            missing.append(name)
    return tuple(missing)


def require_extra(feature: str, extra: str, modules: Iterable[str]) -> None:
    """Raise :class:`~llmspend.errors.MissingExtra` if any of ``modules`` is missing.

    ``feature`` is how the user asked for it (``"llmspend report"``, ``"dashboard()"``).
    """
    missing = missing_modules(modules)
    if missing:
        raise MissingExtra(feature, extra, missing)
