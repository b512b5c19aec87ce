"""Who a call is charged to: org, project, user and free-form tags.

``attribute()`` overrides the process-wide defaults (``install(org=...)``, ``%spend
context``) for the current thread or asyncio task, through a context variable: nested
blocks merge (the innermost value wins per field; tags merge key by key), a new thread
starts from the defaults, and an asyncio task inherits the context it was created in.
"""

from __future__ import annotations

import contextvars
import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .errors import ValidationError

__all__ = ["Attribution", "attribute", "current_overrides", "validate_name"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+\- ]{0,199}$")


def validate_name(kind: str, value: Any) -> str:
    """A bare org/project/user name: 1-200 characters, no slash."""
    if not isinstance(value, str) or not _NAME.match(value) or value != value.strip():
        raise ValidationError(
            f"{kind} must be a name of ASCII letters, digits, '_', '-', '.', '@', '+' or spaces "
            f"(no '/', at most 200 characters), got {value!r}"
        )
    return value


@dataclass(frozen=True)
class Attribution:
    """Overrides in force; ``None`` means "use the default"."""

    org: str | None = None
    project: str | None = None
    user: str | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)

    def merged(self, inner: Attribution) -> Attribution:
        return Attribution(
            org=inner.org or self.org,
            project=inner.project or self.project,
            user=inner.user or self.user,
            tags={**self.tags, **inner.tags},
        )


_EMPTY = Attribution()
_current: contextvars.ContextVar[Attribution] = contextvars.ContextVar(
    "llmspend_attribution", default=_EMPTY
)


def current_overrides() -> Attribution:
    return _current.get()


def _check_tags(tags: Any) -> dict[str, Any]:
    if tags is None:
        return {}
    if not isinstance(tags, Mapping):
        raise ValidationError(
            f"tags must be a mapping of names to values, got {type(tags).__name__}"
        )
    out: dict[str, Any] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not key:
            raise ValidationError(f"tag names must be non-empty strings, got {key!r}")
        if not isinstance(value, (str, int, float, bool)):
            raise ValidationError(f"tag {key!r} must be a str, int, float or bool, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):  # not JSON (as ingest says)
            raise ValidationError(f"tag {key!r} must be finite, got {value!r}")
        out[key] = value
    return out


@contextmanager
def attribute(
    *,
    org: str | None = None,
    project: str | None = None,
    user: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[Attribution]:
    """Charge calls made inside the block to ``org``/``project``/``user``, with ``tags``.

    Nests (innermost wins per field), and is safe across threads and asyncio tasks.
    """
    inner = Attribution(
        org=None if org is None else validate_name("org", org),
        project=None if project is None else validate_name("project", project),
        user=None if user is None else validate_name("user", user),
        tags=_check_tags(tags),
    )
    token = _current.set(_current.get().merged(inner))
    try:
        yield _current.get()
    finally:
        _current.reset(token)
