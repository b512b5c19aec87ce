"""Team mode in the kernel: the public reads and budget changes go through the gateway.

With ``LLMSPEND_GATEWAY_URL`` set and a gateway credential in the kernel
(``LLMSPEND_GATEWAY_KEY``, else the JupyterHub token ``JUPYTERHUB_API_TOKEN``),
``llmspend.records()``, the budget functions, ``budget_status()``, ``budget_history()``,
``alerts()``, ``acknowledge_alerts()`` and every :mod:`llmspend.analytics` function called
without ``store=`` go to the gateway's data API (``/llmspend/api/v1``, see
:mod:`llmspend.gateway.api` and :mod:`llmspend.gateway.analytics_api`) instead of a store:
same signatures, same results, scoped by the caller's role. The kernel opens no store and
holds no database credentials for them.

The gateway's refusals come back as llmspend errors: a 403 as :class:`PermissionDenied`
(naming the role needed), a 400 as :class:`ValidationError` (:class:`BudgetError` for the
budget routes, or the subclass the gateway names) with the gateway's message, a 401 as
:class:`ConfigError` (a bad credential), and an unreachable or failing gateway as
:class:`StoreError`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from . import errors, teamwire
from .alerting.query import ALERT_COLUMNS
from .budgets.spec import Budget, BudgetStatus, parse_key
from .dialects.hosts import gateway
from .errors import (
    BudgetError,
    ConfigError,
    PermissionDenied,
    StoreError,
    ValidationError,
)
from .store import arrowio

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "API_PATH",
    "ARROW_STREAM",
    "GatewayClient",
    "active",
    "client",
    "credential",
    "not_served",
]

API_PATH = "/llmspend/api/v1"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
KEY_ENV = "LLMSPEND_GATEWAY_KEY"
HUB_TOKEN_ENV = "JUPYTERHUB_API_TOKEN"
TIMEOUT_S = 60.0


def credential() -> str | None:
    """The kernel's gateway credential: ``LLMSPEND_GATEWAY_KEY``, else the hub token."""
    for var in (KEY_ENV, HUB_TOKEN_ENV):
        value = os.environ.get(var, "").strip()
        if value:
            return value
    return None


def active() -> bool:
    """Whether the public reads go through the gateway: team mode with a credential."""
    return gateway() is not None and credential() is not None


def client() -> GatewayClient | None:
    """A client of the gateway's data API when :func:`active`, else ``None``."""
    ep = gateway()
    key = credential()
    if ep is None or key is None:
        return None
    port = f":{ep.port}" if ep.port else ""
    return GatewayClient(f"{ep.scheme}://{ep.host}{port}{ep.prefix}", key)


def not_served(what: str, instead: str | None = None) -> ConfigError:
    """The error for a function the gateway's data API does not serve (yet): ``instead``
    says what to do, by default compute over the frames it does serve."""
    return ConfigError(
        f"{what} is not served in team mode: the kernel reads through the gateway "
        "(LLMSPEND_GATEWAY_URL), which does not offer it; "
        + (instead or "use llmspend.records(), budget_status() or alerts() (scoped by your "
           "role) and compute over those frames")
    )  # fmt: skip


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """The credential goes to the gateway only: a redirect is an error, not followed."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> None:  # fmt: skip
        raise urllib.error.HTTPError(req.full_url, code, f"redirect refused: {msg}", headers, fp)


_OPENER = urllib.request.build_opener(_NoRedirect)


def _when(value: Any) -> Any:
    """A since/until as the API takes it: text (spans and ISO strings as given)."""
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return value


def _datetime(value: Any) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _budget(d: Mapping[str, Any]) -> Budget:
    return Budget(
        id=int(d["id"]), scope=d["scope"], name=d["name"], limit_usd=Decimal(d["limit_usd"]),
        period=d["period"], mode=d["mode"],
        thresholds=tuple(Decimal(str(t)) for t in d["thresholds"]), timezone=d["timezone"],
        week_start=int(d["week_start"]), is_default=bool(d["is_default"]),
        inherited=bool(d["inherited"]), unpriced_policy=d["unpriced_policy"],
        webhook_url=d["webhook_url"], created_at=dt.datetime.fromisoformat(d["created_at"]),
        updated_at=dt.datetime.fromisoformat(d["updated_at"]),
    )  # fmt: skip


def _status(d: Mapping[str, Any]) -> BudgetStatus:
    return BudgetStatus(
        budget=d["budget"], scope=d["scope"], mode=d["mode"], period=d["period"],
        period_start=dt.datetime.fromisoformat(d["period_start"]),
        period_end=_datetime(d["period_end"]), limit_usd=Decimal(d["limit_usd"]),
        spent_usd=Decimal(d["spent_usd"]), reserved_usd=Decimal(d["reserved_usd"]),
        remaining_usd=Decimal(d["remaining_usd"]), percent_used=float(d["percent_used"]),
        state=d["state"], projected_usd=_decimal(d["projected_usd"]), calls=int(d["calls"]),
        inherited=bool(d["inherited"]), timezone=d["timezone"],
    )  # fmt: skip


def _need_arrow(what: str) -> None:
    if not arrowio.have_pyarrow():
        raise ValidationError(f"{what} in team mode needs pyarrow: pip install pyarrow")


class GatewayClient:
    """The gateway's data API at ``base`` (the gateway's URL), as ``key``."""

    def __init__(self, base: str, key: str) -> None:
        self.base, self._key = base.rstrip("/"), key

    def __repr__(self) -> str:  # never the key
        return f"GatewayClient({self.base!r})"

    # -- HTTP -------------------------------------------------------------------------------
    def _send(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, Any]] = (),
        body: Any = None,
        accept: str = "application/json",
        bad_input: type[ValidationError] = ValidationError,
    ) -> tuple[str, bytes]:
        url = f"{self.base}{API_PATH}{path}" + (f"?{urlencode(list(query))}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._key}")
        request.add_header("Accept", accept)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with _OPENER.open(request, timeout=TIMEOUT_S) as response:
                return response.headers.get("content-type", ""), response.read()
        except urllib.error.HTTPError as exc:
            raise self._error(exc, bad_input) from None
        except (OSError, urllib.error.URLError) as exc:
            raise StoreError(
                f"the llmspend gateway at {self.base} cannot be reached: {exc}"
            ) from None

    def _error(self, exc: urllib.error.HTTPError, bad_input: type[ValidationError]) -> Exception:
        try:
            error = json.loads(exc.read() or b"{}").get("error") or {}
        except (ValueError, AttributeError, OSError):
            error = {}
        message = error.get("message") if isinstance(error, dict) else None
        message = message or f"the llmspend gateway answered {exc.code} {exc.reason}"
        if exc.code == 403:
            return PermissionDenied(message, error.get("missing_role"))
        if exc.code == 400:
            named = getattr(errors, str(error.get("type")), None)
            if (
                isinstance(named, type)
                and issubclass(named, bad_input)
                and named.__init__ is Exception.__init__  # takes the message alone
            ):
                return named(message)
            return bad_input(message)
        if exc.code == 401:
            return ConfigError(f"{message} (set {KEY_ENV} to a live gateway key)")
        return StoreError(message)

    def _json(self, method: str, path: str, **options: Any) -> Any:
        _, content = self._send(method, path, **options)
        return json.loads(content)

    def whoami(self) -> dict[str, Any]:
        """``GET whoami``: the caller's org, project, user, ``admin`` and what it ``owns``."""
        found: dict[str, Any] = self._json("GET", "/whoami")
        return found

    # -- budgets ----------------------------------------------------------------------------
    @staticmethod
    def _path(scope: str, name: str, root: str = "/budgets") -> str:
        key = parse_key(scope, name)
        return f"{root}/{quote(key.scope, safe='')}/{quote(key.name, safe='/')}"

    def list_budgets(self, scope: str | None = None) -> list[Budget]:
        query = [] if scope is None else [("scope", scope)]
        found = self._json("GET", "/budgets", query=query, bad_input=BudgetError)
        return [_budget(b) for b in found]

    def set_budget(self, scope: str, name: str, limit: Any, period: str, **fields: Any) -> Budget:
        body = {"scope": scope, "name": name, "limit": str(limit), "period": period}
        for field, value in fields.items():
            if field == "thresholds" and value is not None and not isinstance(value, str):
                value = [str(t) for t in value]
            body[field] = value
        return _budget(self._json("POST", "/budgets", body=body, bad_input=BudgetError))

    def update_budget(self, scope: str, name: str, **changes: Any) -> Budget:
        body = {k: (str(v) if isinstance(v, Decimal) else v) for k, v in changes.items()}
        if isinstance(body.get("thresholds"), (list, tuple)):
            body["thresholds"] = [str(t) for t in body["thresholds"]]
        return _budget(
            self._json("PATCH", self._path(scope, name), body=body, bad_input=BudgetError)
        )

    def delete_budget(self, scope: str, name: str) -> None:
        self._send("DELETE", self._path(scope, name), bad_input=BudgetError)

    def budget_status(
        self, scope: str | None = None, name: str | None = None
    ) -> list[BudgetStatus]:
        if name is not None and scope is None:
            raise BudgetError("budget_status(name=...) needs a scope too")
        wanted = None if name is None else parse_key(scope, name).name
        query = [] if scope is None else [("scope", scope)]
        found = [
            _status(s)
            for s in self._json("GET", "/status", query=query, bad_input=BudgetError)
            if wanted is None or s["budget"] == wanted
        ]
        if wanted is not None and not found:
            raise BudgetError(f"no {scope} budget {name!r} (that you may see)")
        return found

    def budget_history(self, scope: str, name: str) -> pd.DataFrame:
        """``GET history/{scope}/{name}``: :func:`llmspend.budget_history` of a budget the
        caller may see."""
        path = self._path(scope, name, "/history")
        _need_arrow("budget_history()")
        _, content = self._send("GET", path, accept=ARROW_STREAM, bad_input=BudgetError)
        frame: pd.DataFrame = teamwire.unpack(content)
        return frame

    # -- analytics ----------------------------------------------------------------------------
    def analytics(self, function: str, arguments: Mapping[str, Any]) -> Any:
        """``POST analytics/{function}``: an :mod:`llmspend.analytics` function run on the
        gateway's store over what the caller may read; its frame (or dict of frames)."""
        _need_arrow(f"llmspend.analytics.{function}()")
        body = {name: teamwire.encode(value, name) for name, value in arguments.items()}
        path = f"/analytics/{quote(function, safe='')}"
        _, content = self._send("POST", path, body=body, accept=ARROW_STREAM)
        return teamwire.unpack(content)

    def names(self) -> tuple[list[str], list[str], list[str]]:
        """``GET names``: the org, project and user names the caller may see, sorted."""
        found = self._json("GET", "/names")
        return list(found["orgs"]), list(found["projects"]), list(found["users"])

    # -- records ----------------------------------------------------------------------------
    def records(
        self,
        since: Any = None,
        until: Any = None,
        *,
        columns: Sequence[str] | None = None,
        as_: str = "pandas",
        **filters: Any,
    ) -> Any:
        arrowio.check_as(as_)
        _need_arrow("records()")
        query: list[tuple[str, Any]] = []
        for name, value in (("since", since), ("until", until)):
            if value is not None:
                query.append((name, _when(value)))
        for col in [columns] if isinstance(columns, str) else columns or ():
            query.append(("columns", col))
        for name, value in filters.items():
            if value is None:
                continue
            for item in [value] if isinstance(value, str) else value:
                query.append((name, item))
        _, content = self._send("GET", "/records", query=query, accept=ARROW_STREAM)
        import pyarrow as pa

        return arrowio.shaped(pa.ipc.open_stream(content).read_all(), as_)

    # -- alerts -----------------------------------------------------------------------------
    def alerts(self, since: Any = None, until: Any = None, **filters: Any) -> pd.DataFrame:
        import pandas as pd

        query: list[tuple[str, Any]] = [
            (n, _when(v)) for n, v in (("since", since), ("until", until)) if v is not None
        ]
        for name, value in filters.items():
            if value is None:
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            for item in [value] if isinstance(value, str) else value:
                query.append((name, item))
        rows = self._json("GET", "/alerts", query=query)
        for row in rows:
            for col in ("ts", "period_start"):
                row[col] = dt.datetime.fromisoformat(row[col])
            for col in ("threshold", "spent_usd", "limit_usd", "call_cost_usd"):
                row[col] = _decimal(row[col])
        frame = pd.DataFrame(rows, columns=list(ALERT_COLUMNS))
        if not len(frame):
            frame = frame.astype({"id": "int64", "acknowledged": bool})
        for col in ("threshold", "spent_usd", "limit_usd", "call_cost_usd"):
            frame[col] = frame[col].astype(object)
        return frame

    def acknowledge_alerts(self, ids: int | list[int] | None = None) -> int:
        body: dict[str, Any] = {}
        if ids is not None:
            wanted = [ids] if isinstance(ids, int) else list(ids)
            if not wanted or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in wanted
            ):
                raise ValidationError(f"alert ids must be integers, got {ids!r}")
            body["ids"] = wanted
        return int(self._json("POST", "/alerts/acknowledge", body=body)["acknowledged"])
