"""The IPython shell the tests run cells in: one per process, as in a kernel."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

__all__ = ["loaded_shell", "plain_shell"]


def plain_shell() -> InteractiveShell:
    """The process's one InteractiveShell, made on first use with no history database and
    no colours; later calls return the same shell, however it was made."""
    if InteractiveShell.initialized():
        return InteractiveShell.instance()
    config = Config()
    config.HistoryAccessor.enabled = False
    config.InteractiveShell.colors = "nocolor"
    return InteractiveShell.instance(config=config)


@contextmanager
def loaded_shell(base_url: str) -> Iterator[InteractiveShell]:
    """:func:`plain_shell` with ``%load_ext llmspend``, the cell-cost line shown for any
    amount, and an openai ``client`` on ``base_url`` in its namespace; unloaded on leaving."""
    import openai

    from llmspend.notebook.cellcost import cell_cost

    shell = plain_shell()
    enabled, minimum = cell_cost.enabled, cell_cost.min_usd
    result = shell.run_cell("%load_ext llmspend", store_history=False)
    assert result.error_before_exec is None and result.error_in_exec is None, result
    cell_cost.enabled, cell_cost.min_usd = True, Decimal(0)
    shell.user_ns["client"] = openai.OpenAI(api_key="x", base_url=base_url, max_retries=0)
    try:
        yield shell
    finally:
        cell_cost.enabled, cell_cost.min_usd = enabled, minimum
        shell.run_cell("%unload_ext llmspend", store_history=False)
