"""The server extension's settings (``c.LLMSpendLab.*`` in ``jupyter_server_config.py``,
or ``--LLMSpendLab.read_only=True`` on the command line)."""

from __future__ import annotations

from traitlets import Bool
from traitlets.config import Configurable

__all__ = ["LLMSpendLab"]


class LLMSpendLab(Configurable):
    """Settings of the ``/llmspend/`` routes."""

    read_only = Bool(
        False,
        help=(
            "Show budgets but never change them: the budget routes answer 403 to POST, "
            "PATCH and DELETE, and the panel shows no form, edit or delete buttons. "
            "Acknowledging the alerts of one's own budgets stays allowed."
        ),
    ).tag(config=True)
