"""Filters by name: "a name or a list of names", as every public function accepts them.

One validator for ``org=``, ``project=``, ``user=``, ``provider=``, ``model=`` filters:
``records()`` and the store's queries, the analytics functions and the report all use
:func:`name_list`.
"""

from __future__ import annotations

from typing import Any

from .errors import ValidationError

__all__ = ["name_list"]


def name_list(value: Any, what: str, *, text: bool = False) -> list[str] | None:
    """The filter ``what`` as a list of names; ``None`` means no filter and stays ``None``.

    By default (the Python API) ``value`` is a name or a non-empty list of non-empty names,
    kept as given; anything else raises :class:`ValidationError`. With ``text=True`` (report
    parameters from a command line or papermill) a string may hold names separated by
    commas; names are stripped, blanks and repeats dropped, and nothing left (``""``,
    ``[]``) means no filter.
    """
    if value is None:
        return None
    if isinstance(value, str):
        items = value.split(",") if text else [value]
    else:
        try:
            items = list(value)
        except TypeError:
            if text:
                raise ValidationError(f"{what}: expected names, got {value!r}") from None
            raise ValidationError(f"filter {what}: expected a name or a list of names") from None
    if text:
        names: list[str] = []
        for item in items:
            if not isinstance(item, str):
                raise ValidationError(f"{what}: expected names, got {item!r}")
            name = item.strip()
            if name and name not in names:
                names.append(name)
        return names or None
    if not items or not all(isinstance(v, str) and v for v in items):
        raise ValidationError(f"filter {what}: expected a name or a non-empty list of names")
    return items
