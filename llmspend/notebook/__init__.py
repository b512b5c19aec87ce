"""The notebook experience: ``%load_ext llmspend``, the magics, the per-cell cost line,
the live dashboard and offline Altair charts.

Modules (each imports IPython, ipywidgets or Altair only when it is used, so that
``import llmspend`` stays light):

``extension``  ``load(ipython)`` / ``unload(ipython)``: install, magics, cell hooks
``magics``     ``%budget`` and ``%spend``: argument parsing only
``commands``   the plain functions the magics call (usable from Python too)
``cellcost``   the quiet "this cell cost ..." line after each cell that made calls
``render``     HTML + text tables for status, budgets, history, alerts and calls
``charts``     Altair charts that render offline (vl-convert SVG), and SVG/PNG export
``widgets``    ``llmspend.dashboard()``: an ipywidgets dashboard that refreshes live
"""

from __future__ import annotations

__all__: list[str] = []
