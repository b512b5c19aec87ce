"""Batch jobs, whatever the provider: reserved at creation, settled once from their results.

A batch job (OpenAI's Batch API, Gemini Batch Mode, Anthropic Message Batches) is billed
when its results exist, hours after the request that created it. Its call is begun at
creation (:func:`begin_batch`: the worst case of its requests, at the ``batch`` tier) and
parked here under the job's id until a tap reads the finished job's usage and settles it
(:meth:`BatchLedger.settle`). A job is settled once: it is forgotten then, so results read
or listed twice count once. One row per batch job.

A job still parked when the interpreter exits is settled from its reservation's bound
(``partial``, ``usage_estimated``): llmspend would not see it end. Each provider's module
(:mod:`.openai_batches`, :mod:`.genai_batches`, :mod:`.anthropic_batches`) reads its own
wire format and keeps one :class:`BatchLedger`.
"""

from __future__ import annotations

import atexit
import dataclasses
import threading
from collections.abc import Iterable
from typing import Any, NamedTuple

from ..call import DEFAULT_OUTPUT_CAP, Call, Usage, output_cap_for
from ..errors import BudgetExceeded
from ..pipeline import begin_call
from ..pricing.tiers import BATCH

__all__ = [
    "UNBOUNDED",
    "BatchInput",
    "BatchLedger",
    "begin_batch",
    "output_bound",
    "total_usage",
]


#: Why a batch begun for an unknown model is refused (``BudgetExceeded.reason``).
UNBOUNDED = (
    "a batch llmspend cannot bound before it is sent: its requests were not seen in this "
    "process (an input file uploaded elsewhere, a file source), or they name several models "
    "or hold content of unknown size; set the budget's unpriced='allow' to let such batches "
    "through"
)


class BatchInput(NamedTuple):
    """What a batch asks for: its model and worst-case tokens (``model`` ``""``: unknown)."""

    model: str
    input_tokens: int
    output_tokens: int
    lines: int


def output_bound(model: str, cap: int | None) -> int:
    """A request's worst-case output: its own cap, else its model family's published cap,
    else :data:`~llmspend.call.DEFAULT_OUTPUT_CAP`."""
    return cap or output_cap_for(model) or DEFAULT_OUTPUT_CAP


def total_usage(usages: Iterable[Usage]) -> Usage:
    """The sum of several calls' usage, field by field (every field: a 1-hour cache write
    or an audio token in one result is priced at its rate in the batch's total)."""
    sums = [0] * len(_USAGE_FIELDS)
    for u in usages:
        for k, name in enumerate(_USAGE_FIELDS):
            sums[k] += getattr(u, name)
    return Usage(*sums)


_USAGE_FIELDS = tuple(f.name for f in dataclasses.fields(Usage))


def begin_batch(provider: str, summary: BatchInput | None) -> Call | None:
    """Begin a batch's creation as one call (api ``batches``) reserving its worst case at
    the batch price. ``None`` (a batch whose requests cannot be bounded here) is begun for
    an unknown model: a hard budget refuses it by default (``unpriced_policy``)."""
    if summary is None or not summary.model:
        try:
            return begin_call(provider, "batches", "", input_tokens=0, max_output_tokens=0,
                              service_tier=BATCH)  # fmt: skip
        except BudgetExceeded as exc:  # refused for its unknown cost: say why it has none
            if exc.estimate is not None or type(exc) is not BudgetExceeded:
                raise
            raise BudgetExceeded(
                budget=exc.budget, scope=exc.scope, period=exc.period, limit=exc.limit,
                spent=exc.spent, reserved=exc.reserved, estimate=exc.estimate,
                resets_at=exc.resets_at, reason=UNBOUNDED,
            ) from None  # fmt: skip
    return begin_call(provider, "batches", summary.model, input_tokens=summary.input_tokens,
                      max_output_tokens=summary.output_tokens, service_tier=BATCH)  # fmt: skip


class BatchLedger:
    """Parked batch calls by job id, and result files by file id (thread-safe)."""

    def __init__(self) -> None:
        self.parked: dict[str, Call] = {}
        self.files: dict[str, str] = {}  # result file id -> job id
        self._lock = threading.Lock()
        self._hooked = False

    def park(self, job_id: str, call: Call) -> None:
        """Keep ``call`` until job ``job_id`` is settled (or the interpreter exits)."""
        with self._lock:
            self.parked[job_id] = call
            if not self._hooked:
                atexit.register(self.flush)
                self._hooked = True

    def created(self, call: Call, job_id: Any) -> bool:
        """A creation returned job ``job_id``: park its call (``False``, and the call
        recorded as an error, when the provider named no job)."""
        if not isinstance(job_id, str) or not job_id:
            call.finish(None, status="error")
            return False
        self.park(job_id, call)
        return True

    def note_file(self, file_id: str, job_id: str) -> None:
        """Job ``job_id``'s results are in file ``file_id`` (settled when it is read)."""
        with self._lock:
            if job_id in self.parked:
                self.files[file_id] = job_id

    def job_of_file(self, file_id: str) -> str | None:
        """The parked job whose results file ``file_id`` holds, or ``None``."""
        return self.files.get(file_id)

    def settle(
        self, job_id: str, usage: Usage, model: str | None = None, status: str = "ok"
    ) -> None:
        """Record the job's call once, priced at the batch tier; later calls do nothing."""
        with self._lock:
            call = self.parked.pop(job_id, None)
            for fid in [k for k, v in self.files.items() if v == job_id]:
                del self.files[fid]
        if call is not None:
            call.finish(usage, status=status, response_model=model, request_id=job_id,
                        service_tier=BATCH)  # fmt: skip

    def flush(self) -> None:
        """Settle every parked job from its bound (at exit)."""
        with self._lock:
            items = list(self.parked.items())
            self.parked.clear()
            self.files.clear()
        for job_id, call in items:
            usage = Usage(call.input_upper, 0, 0, call.output_cap or 0, 0)
            call.finish(usage, status="partial", request_id=job_id, usage_estimated=True,
                        service_tier=BATCH)  # fmt: skip
