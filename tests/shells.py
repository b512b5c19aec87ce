"""The IPython shell the tests run cells in: one per process, as in a kernel."""

from __future__ import annotations

from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

__all__ = ["plain_shell"]


def plain_shell() -> InteractiveShell:
    """The process's one InteractiveShell, made on first use with no history database and
    no colours; later calls return the same shell, however it was made."""
    if InteractiveShell.initialized():
        return InteractiveShell.instance()
    config = Config()
    config.HistoryAccessor.enabled = False
    config.InteractiveShell.colors = "nocolor"
    return InteractiveShell.instance(config=config)
