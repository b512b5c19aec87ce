"""One pipeline per provider call, in one place.

    attribution → pre-call estimate → budget check → the call → usage → price → record
    (with budget settlement and alert decisions in the same transaction) → listeners

Provider hooks only translate: they call :func:`begin_call` with what the request says
(before anything is sent), make the call, and hand the usage they read back to
:meth:`Call.finish`. Everything else — estimates, budgets, pricing, the row, alerts —
happens here, the same way for every provider.
"""

from __future__ import annotations

from typing import Any

from .call import Call
from .tracker import installed_tracker

__all__ = ["begin_call"]


def begin_call(
    provider: str,
    api: str,
    model: str,
    *,
    payload: Any = None,
    input_tokens: int | None = None,
    max_output_tokens: int | None = None,
    streamed: bool = False,
) -> Call | None:
    """Start a call: attribution, estimate and budget check, before anything is sent.

    Returns ``None`` when llmspend is not installed (the hook then stays out of the way).
    Raises :class:`~llmspend.BudgetExceeded` when a hard budget refuses the call; the
    refusal is recorded.
    """
    tracker = installed_tracker()
    if tracker is None:
        return None
    call = Call(
        tracker,
        provider,
        api,
        model,
        streamed=streamed,
        input_upper=input_tokens,
        output_cap=max_output_tokens,
        payload=payload,
    )
    tracker.before_call(call)
    return call
