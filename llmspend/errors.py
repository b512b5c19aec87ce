"""Every error llmspend raises on purpose.

The tree::

    LLMSpendError                      base of everything below
    ├── ConfigError                    bad settings, environment variables or files
    │   ├── PriceFileError             a bad price-override file (names file, entry, field)
    │   └── MissingExtra               a feature's optional extra is not installed (names
    │                                  the feature and the ``pip install`` that fixes it)
    ├── StoreError                     the store cannot be opened, migrated or reached
    │   ├── SchemaTooNewError          the database was migrated by a newer llmspend
    │   ├── StoreCorrupted             the SQLite file is damaged: ``llmspend db recover``
    │   └── StoreUnavailable           the store is down: a call under a hard budget not sent
    ├── ValidationError                bad input to a public function (also a ValueError)
    │   ├── IngestError                a bad row given to ``ingest`` (names row and field)
    │   ├── PricingError               a usage that cannot be priced (e.g. subset > total)
    │   └── BudgetError                a bad budget definition or an unknown budget
    ├── BudgetExceeded                 a call refused by a hard budget before it was sent
    ├── PermissionDenied               team mode: the gateway refused an operation the
    │                                  caller's role does not allow (names the role needed)
    ├── GatewayError                   inside the gateway (never raised to a caller of
    │   │                              llmspend's API: answered over HTTP)
    │   ├── GatewayRefused             an answer of the gateway's own (status, message)
    │   ├── HubDenied                  the hub knows the user, but no org/project applies
    │   └── HubUnavailable             the hub could not be asked
    ├── ReportError                    the spend report could not be made (names the cell)
    ├── WebhookError                   a webhook was not delivered (never raised to a caller:
    │   │                              recorded in ``llmspend_webhook_deliveries``)
    │   ├── DestinationRefused         its destination is not public and not allow-listed
    │   └── DeliveryError              one attempt failed (the message never holds the URL's
    │                                  path, query or userinfo)
    ├── ResponseFailedError            a provider's response said ``status: failed``; never
    │                                  raised to a caller, only named as a call's error_type
    └── ProviderError                  a provider answered with an error status, seen by a
                                       tap with no error type of its own (never raised)

    LLMSpendWarning (a UserWarning)    things worth knowing that do not stop anything
    └── UnknownModelWarning            a model with no price (its cost is recorded unknown)

``ValidationError`` and its children also derive from :class:`ValueError`, so code that
already catches ``ValueError`` keeps working.
"""

from __future__ import annotations

import datetime as _dt
from decimal import Decimal

__all__ = [
    "BudgetError",
    "BudgetExceeded",
    "ConfigError",
    "DeliveryError",
    "DestinationRefused",
    "GatewayError",
    "GatewayRefused",
    "HubDenied",
    "HubUnavailable",
    "IngestError",
    "LLMSpendError",
    "LLMSpendWarning",
    "MissingExtra",
    "PermissionDenied",
    "PriceFileError",
    "PricingError",
    "ProviderError",
    "ReportError",
    "ResponseFailedError",
    "SchemaTooNewError",
    "StoreCorrupted",
    "StoreError",
    "StoreUnavailable",
    "UnknownModelWarning",
    "ValidationError",
    "WebhookError",
]


def _rebuilt(
    cls: type[BaseException], args: tuple[object, ...], state: dict[str, object]
) -> BaseException:
    """An error as pickled by :meth:`LLMSpendError.__reduce__`."""
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class LLMSpendError(Exception):
    """Base of every error llmspend raises on purpose.

    Every one pickles whole (its message and its fields), whatever its ``__init__`` takes: a
    ``BudgetExceeded`` raised in a process-pool worker reaches the parent as itself (pickle's
    default calls ``cls(*args)``, which keyword-only fields refuse: a broken pool, or a
    ``multiprocessing.Pool`` hung for good).
    """

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuilt, (type(self), self.args, dict(self.__dict__)))


class LLMSpendWarning(UserWarning):
    """Base of the warnings llmspend issues (unknown models, records it could not write)."""


class UnknownModelWarning(LLMSpendWarning):
    """A call used a model llmspend has no price for; its cost is recorded as unknown."""


class ConfigError(LLMSpendError):
    """A setting, environment variable or configuration file is invalid."""


class PriceFileError(ConfigError):
    """A price-override file is invalid; the message names the file, entry and field."""

    def __init__(self, path: str, entry: str | None, field: str | None, problem: str) -> None:
        self.path = path
        self.entry = entry
        self.field = field
        self.problem = problem
        where = path
        if entry:
            where += f", entry {entry!r}"
        if field:
            where += f", field {field!r}"
        super().__init__(f"{where}: {problem}")


class MissingExtra(ConfigError):
    """A feature needs an optional extra that is not installed.

    One line: ``llmspend report needs the notebook extra: pip install 'llmspend[notebook]'``.
    ``feature``, ``extra`` and ``modules`` (the modules found missing) are kept.
    """

    def __init__(self, feature: str, extra: str, modules: tuple[str, ...] = ()) -> None:
        super().__init__(f"{feature} needs the {extra} extra: pip install 'llmspend[{extra}]'")
        self.feature = feature
        self.extra = extra
        self.modules = modules


class StoreError(LLMSpendError):
    """The store cannot be opened, migrated or reached."""


class SchemaTooNewError(StoreError):
    """The database schema was written by a newer version of llmspend."""


class StoreCorrupted(StoreError):
    """The SQLite store file is damaged (``PRAGMA quick_check`` fails, or SQLite said
    "malformed" or "not a database"). The message names the file and the fix: ``llmspend
    db recover`` copies what is readable into a fresh store and keeps the old file. Until
    then nothing more is written into it: calls are journaled in the spool.
    """

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(
            f"the store file {path} is corrupted: run `llmspend db recover` (it copies what "
            "is readable into a fresh store and keeps the old file); calls are journaled in "
            f"the spool meanwhile. SQLite found: {detail}"
        )


class StoreUnavailable(StoreError):
    """The store could not be reached before a call, and the policy fails closed.

    Calls under hard budgets are not sent while budgets cannot be checked
    (``LLMSPEND_STORE_DOWN=closed``, or ``auto`` — the default — when this process last
    saw a hard budget for the caller, or never reached the store). Nothing was sent.
    """


class ValidationError(LLMSpendError, ValueError):
    """Bad input to a public function; nothing was changed."""


class IngestError(ValidationError):
    """A row given to ``ingest`` is invalid; nothing was written."""

    def __init__(self, row: int, field: str | None, problem: str) -> None:
        self.row = row
        self.field = field
        self.problem = problem
        where = f"row {row}" + (f", field {field!r}" if field else "")
        super().__init__(f"ingest rejected {where}: {problem} (nothing was written)")


class PricingError(ValidationError):
    """A usage cannot be priced as given (for example a subset larger than its total)."""


class BudgetError(ValidationError):
    """A budget definition is invalid, or a named budget does not exist."""


class BudgetExceeded(LLMSpendError):
    """A call was refused by a hard budget before any request was sent.

    Carries the budget's name (``budget``), ``scope``, ``period``, ``limit``, ``spent``,
    ``reserved`` and the call's ``estimate`` (all Decimal USD) and ``resets_at`` (an aware
    datetime, or ``None`` for a ``total`` budget).
    """

    def __init__(
        self,
        *,
        budget: str,
        scope: str,
        period: str,
        limit: Decimal,
        spent: Decimal,
        reserved: Decimal,
        estimate: Decimal | None,
        resets_at: _dt.datetime | None,
        reason: str | None = None,
    ) -> None:
        self.budget = budget
        self.scope = scope
        self.period = period
        self.limit = limit
        self.spent = spent
        self.reserved = reserved
        self.estimate = estimate
        self.resets_at = resets_at
        self.reason = reason
        super().__init__(self._message())

    def _render_traceback_(self) -> list[str]:
        """IPython shows this one line instead of dozens of SDK frames."""
        return [f"BudgetExceeded: {self}"]

    def _message(self) -> str:
        def usd(x: Decimal) -> str:  # money.format_usd's rule (this layer cannot import it)
            if x and x.copy_abs() < Decimal("0.000001"):  # two significant digits, not $0
                return f"${Decimal(format(x, '.2g')):f}"
            return f"${x:,.6f}".rstrip("0").rstrip(".") if x != x.to_integral() else f"${x:,.2f}"

        est = "an unknown cost (unpriced model)" if self.estimate is None else usd(self.estimate)
        reset = (
            "it never resets (total budget)"
            if self.resets_at is None
            else f"it resets at {self.resets_at.isoformat()}"
        )
        msg = (
            f"hard {self.scope} budget {self.budget!r} ({self.period}) would be exceeded: "
            f"limit {usd(self.limit)}, spent {usd(self.spent)}, reserved {usd(self.reserved)}, "
            f"this call's estimate {est}; {reset}. Nothing was sent."
        )
        if self.reason:
            msg += f" ({self.reason})"
        return msg


class PermissionDenied(LLMSpendError):
    """Team mode: the gateway refused an operation the caller's role does not allow.

    ``missing_role`` names what it needs (``"owner of acme/churn or admin"``), when the
    gateway said; nothing was changed.
    """

    def __init__(self, message: str, missing_role: str | None = None) -> None:
        self.missing_role = missing_role
        super().__init__(message)


class GatewayError(LLMSpendError):
    """Inside the gateway: answered to its client over HTTP, never raised to a caller of
    llmspend's own API."""


class GatewayRefused(GatewayError):
    """An answer of the gateway's own: ``status``, ``message``, extra response ``headers``
    and, for the data API, the ``role`` the caller lacks."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        role: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.role = role


class HubDenied(GatewayError):
    """The hub knows the user, but no org/project applies to them."""


class HubUnavailable(GatewayError):
    """The hub could not be asked (down, or it refused the service's own token)."""


class ReportError(LLMSpendError):
    """The report could not be made (the notebook failed, a tool is missing, ...)."""


class ResponseFailedError(LLMSpendError):
    """A Responses API result whose status is ``failed``.

    Never raised to a caller (the provider's answer is returned unchanged): it names the
    failure in the call's record (``error_type``).
    """


class ProviderError(LLMSpendError):
    """A provider answered with an error status to a request a tap saw, where the HTTP
    client has no error type of its own to name it. Never raised to a caller (the
    client's own answer is returned unchanged): it names the call's ``error_type``."""


class WebhookError(LLMSpendError):
    """A webhook was not delivered; recorded with the delivery, never raised to a caller."""


class DestinationRefused(WebhookError):
    """A webhook destination that is not public and not allow-listed (or does not resolve)."""


class DeliveryError(WebhookError):
    """One failed delivery attempt; the message never holds the URL's path, query or
    userinfo."""
