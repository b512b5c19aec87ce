"""What team mode sends over the wire for analytics: arguments as tagged JSON, frames as Arrow.

Both ends use this module: the kernel (:mod:`llmspend.teamclient`) encodes an analytics
function's arguments and decodes the answer; the gateway (:mod:`llmspend.gateway.analytics_api`)
does the reverse. The decoded frame equals the one the function returned on the gateway
(``pandas.testing.assert_frame_equal``): dtypes are restored from the sender's, ``Decimal``
columns travel as text and come back as ``Decimal`` objects, other object columns (mixed
values, None) as tagged JSON, and ``frame.attrs`` as tagged JSON in the schema metadata.

Tagged JSON: plain JSON, plus one-key objects for what JSON lacks — ``{"$decimal": "1.5"}``,
``{"$datetime": iso}``, ``{"$timestamp": iso}`` (pandas), ``{"$date": iso}``,
``{"$timedelta": [days, seconds, microseconds]}``, ``{"$tuple": [...]}`` and
``{"$tz": "Europe/Paris"}`` (a time zone by name, or a fixed ``"+02:00"`` offset).
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ValidationError

__all__ = ["decode", "encode", "pack", "unpack"]

_META = b"llmspend"


def encode(value: Any, what: str = "value") -> Any:
    """``value`` as tagged JSON data (a ValidationError for what JSON cannot carry)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, dt.datetime):
        tag = "$datetime" if type(value) is dt.datetime else "$timestamp"
        return {tag: value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {"$timedelta": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, dt.tzinfo):
        return {"$tz": _tz_name(value, what)}
    if isinstance(value, tuple):
        return {"$tuple": [encode(v, what) for v in value]}
    if isinstance(value, list):
        return [encode(v, what) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: encode(v, what) for k, v in value.items()}
    if hasattr(value, "item") and not hasattr(value, "__len__"):  # numpy scalars
        return encode(value.item(), what)
    raise ValidationError(
        f"{what}: a {type(value).__name__} cannot be sent to the llmspend gateway"
    )


def _tz_name(tz: dt.tzinfo, what: str) -> str:
    if isinstance(tz, ZoneInfo):
        return tz.key
    if isinstance(tz, dt.timezone):
        offset = tz.utcoffset(None)
        if not offset:
            return "UTC"
        sign, off = ("-", -offset) if offset < dt.timedelta(0) else ("+", offset)
        hours, rest = divmod(int(off.total_seconds()), 3600)
        return f"{sign}{hours:02d}:{rest // 60:02d}"
    raise ValidationError(f"{what}: give the time zone by name (such as 'Europe/Paris')")


def _tz(name: str) -> dt.tzinfo:
    if name == "UTC":
        return dt.UTC
    if name[:1] in "+-":
        hours, minutes = name[1:].split(":")
        offset = dt.timedelta(hours=int(hours), minutes=int(minutes))
        return dt.timezone(-offset if name[0] == "-" else offset)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown time zone {name!r}") from None


_DECODERS: dict[str, Any] = {
    "$decimal": Decimal,
    "$datetime": dt.datetime.fromisoformat,
    "$date": dt.date.fromisoformat,
    "$timedelta": lambda v: dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "$tz": _tz,
}


def decode(value: Any) -> Any:
    """Tagged JSON data (from :func:`encode`, parsed) back to Python values."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, inner),) = value.items()
        try:
            if tag == "$tuple":
                return tuple(decode(v) for v in inner)
            if tag == "$timestamp":
                import pandas as pd

                return pd.Timestamp(inner)
            if tag in _DECODERS:
                return _DECODERS[tag](inner)
        except (TypeError, ValueError, ArithmeticError, IndexError):
            raise ValidationError(f"a malformed {tag} value: {inner!r}") from None
    return {k: decode(v) for k, v in value.items()}


# -- frames -------------------------------------------------------------------------------
def _column_kind(values: Any) -> str:
    """How an object column travels: ``str`` as is, ``decimal`` as text, else ``json``."""
    present = [v for v in values if v is not None]
    if all(isinstance(v, str) for v in present):
        return "str"
    if all(isinstance(v, Decimal) for v in present):
        return "decimal"
    return "json"


def _frame_table(frame: Any) -> Any:
    import pandas as pd
    import pyarrow as pa

    kinds: dict[str, str] = {}
    data: dict[str, Any] = {}
    for name in frame.columns:
        col = frame[name]
        if col.dtype == object:
            kind = _column_kind(col)
            if kind == "decimal":
                col = pd.Series([None if v is None else str(v) for v in col], dtype=object)
            elif kind == "json":
                col = pd.Series([json.dumps(encode(v, str(name))) for v in col], dtype=object)
            if kind != "str":
                kinds[str(name)] = kind
        data[name] = col.reset_index(drop=True)
    plain = pd.DataFrame(data, columns=list(frame.columns))
    table = pa.Table.from_pandas(plain, preserve_index=False)
    meta = {
        "dtypes": {str(c): str(frame[c].dtype) for c in frame.columns},
        "kinds": kinds,
        "attrs": encode(dict(frame.attrs), "frame.attrs"),
    }
    return table.replace_schema_metadata(
        {**(table.schema.metadata or {}), _META: json.dumps(meta).encode()}
    )


def _table_frame(table: Any) -> Any:
    import pandas as pd

    meta = json.loads(table.schema.metadata[_META])
    frame = table.to_pandas()
    for name, dtype in meta["dtypes"].items():
        kind = meta["kinds"].get(name)
        col = frame[name]
        if kind == "decimal":
            values = table.column(name).to_pylist()
            col = pd.Series([None if v is None else Decimal(v) for v in values], dtype=object)
        elif kind == "json":
            values = table.column(name).to_pylist()
            col = pd.Series([decode(json.loads(v)) for v in values], dtype=object)
        elif dtype == "object":
            col = col.astype(object)
            col = col.where(col.notna(), None)
        elif str(col.dtype) != dtype:
            col = col.astype(dtype)
        frame[name] = col
    frame.attrs.update(decode(meta["attrs"]))
    return frame


def _ipc(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def pack(result: Any) -> bytes:
    """A frame, or a dict of frames, as one Arrow IPC stream."""
    import pyarrow as pa

    if not isinstance(result, dict):
        return _ipc(_frame_table(result))
    keys = list(result)
    table = pa.table(
        {"key": pa.array(keys, pa.string()),
         "frame": pa.array([pack(result[k]) for k in keys], pa.binary())}
    )  # fmt: skip
    return _ipc(table.replace_schema_metadata({_META: b'{"kind": "frames"}'}))


def unpack(content: bytes) -> Any:
    """What :func:`pack` sent: the frame, or the dict of frames."""
    import pyarrow as pa

    table = pa.ipc.open_stream(content).read_all()
    meta = json.loads((table.schema.metadata or {}).get(_META, b"{}"))
    if meta.get("kind") == "frames":
        rows = table.to_pydict()
        return {k: unpack(v) for k, v in zip(rows["key"], rows["frame"], strict=True)}
    return _table_frame(table)
