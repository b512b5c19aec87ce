"""Usage records to and from files: CSV and Parquet, exactly.

Money is written as exact decimal text (CSV) or ``decimal128(38, 9)`` (Parquet), times as
ISO 8601 UTC, tags as JSON. Reading gives rows ``ingest`` accepts, so an export followed by
an import round-trips every column exactly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .errors import ValidationError
from .extras import PARQUET, require_extra

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FORMATS", "detect_format", "read_records", "write_records", "write_to_stream"]

FORMATS = ("csv", "parquet")
_INT = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)
_MONEY = ("cost_usd", "estimate_usd")
_BOOL = ("streamed", "usage_estimated")


def detect_format(path: str | os.PathLike[str], fmt: str | None = None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValidationError(f"unknown format {fmt!r}; use csv or parquet")
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in ("csv", "parquet"):
        return suffix
    if suffix == "pq":
        return "parquet"
    raise ValidationError(
        f"cannot tell the format of {str(path)!r}: use a .csv or .parquet name or --format"
    )


def _require_pyarrow() -> None:
    require_extra("Parquet export and import", *PARQUET)


def write_records(frame: pd.DataFrame, path: str | os.PathLike[str], fmt: str | None = None) -> int:
    """Write a ``records()`` frame to CSV or Parquet; returns the number of rows.

    A file appears whole or not at all (written to a temporary name, then renamed); a
    symlink is written through to its target (``latest.csv -> 2026-12.csv`` stays a link);
    a target that is not a regular file (``/dev/stdout``, a named pipe) is written into,
    never replaced.
    """
    fmt = detect_format(path, fmt)
    fd = _own_fd(str(Path(path).expanduser()))
    if fd is not None:  # /dev/stdout behind `>> log`: resolved, it would replace log
        try:
            with os.fdopen(os.dup(fd), "wb") as stream:
                return write_to_stream(frame, stream, fmt)
        except OSError as exc:
            raise ValidationError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    target = Path(os.path.realpath(Path(path).expanduser()))
    if not target.parent.is_dir():
        raise ValidationError(f"no such directory: {str(target.parent)!r}")
    try:
        special = not stat.S_ISREG(target.stat().st_mode)
    except OSError:  # not there yet
        special = False
    if special:
        return _write_into(frame, target, fmt)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        n = _write(frame, tmp, fmt)
        if target.exists():  # a 0600 report stays 0600
            shutil.copymode(target, tmp)
        os.replace(tmp, target)
    except OSError as exc:
        raise ValidationError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return n


_FD_PATH = re.compile(r"/(?:dev|proc/(self|\d+))/fd/(\d+)")


def _own_fd(path: str) -> int | None:
    """The descriptor of this process that ``path`` names (``/dev/stdout``, ``/dev/fd/3``,
    ``/proc/self/fd/1``, through symlinks), or ``None``."""
    here = os.path.abspath(path)
    for _ in range(16):
        m = _FD_PATH.fullmatch(here)
        if m is not None:
            pid = m.group(1)
            return int(m.group(2)) if pid in (None, "self") or int(pid) == os.getpid() else None
        if not os.path.islink(here):
            return None
        here = os.path.normpath(os.path.join(os.path.dirname(here), os.readlink(here)))
    return None


def write_to_stream(frame: pd.DataFrame, stream: BinaryIO, fmt: str) -> int:
    """Write a ``records()`` frame to an open binary stream (stdout); returns the rows.
    The bytes are made whole first, so a failure writes nothing."""
    with tempfile.TemporaryDirectory(prefix="llmspend-export-") as tmp:
        made = Path(tmp) / f"records.{fmt}"
        n = _write(frame, made, fmt)
        with open(made, "rb") as src:
            shutil.copyfileobj(src, stream)
    return n


def _write_into(frame: pd.DataFrame, target: Path, fmt: str) -> int:
    try:
        with open(target, "wb") as dst:
            return write_to_stream(frame, dst, fmt)
    except OSError as exc:
        raise ValidationError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None


def _write(frame: pd.DataFrame, path: Path, fmt: str) -> int:
    out = frame.copy()
    if "tags" in out:
        out["tags"] = [json.dumps(t, sort_keys=True) if t else "" for t in out["tags"]]
    if "ts" in out:
        out["ts"] = [t.isoformat() for t in out["ts"]]
    if fmt == "csv":
        for col in _MONEY:
            if col in out:
                out[col] = ["" if v is None else str(v) for v in out[col]]
        out.to_csv(path, index=False)
    else:
        _require_pyarrow()
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(out, preserve_index=False)
        for col in _MONEY:
            if col in out:
                idx = table.schema.get_field_index(col)
                arr = pa.array(list(out[col]), type=pa.decimal128(38, 9))
                table = table.set_column(idx, pa.field(col, pa.decimal128(38, 9)), arr)
        pq.write_table(table, path)
    return len(out)


def _none(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, str) and v == "":
        return None
    return v


def read_records(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    column_map: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Read rows for ``ingest`` from CSV or Parquet (``column_map`` renames columns), as a
    frame: ``ingest`` checks a large one column by column (:mod:`llmspend.bulkload`).

    Empty text and NaN become ``None``; text that spells an integer token count, a
    decimal amount, a boolean or JSON tags becomes that value, and anything else is left
    as it is for ``ingest`` to name the row and field.
    """
    import pandas as pd

    fmt = detect_format(path, fmt)
    if not Path(path).exists():
        raise ValidationError(f"no such file: {str(path)!r}")
    try:
        if fmt == "csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            _require_pyarrow()
            frame = pd.read_parquet(path)
    except (ValueError, OSError) as exc:
        raise ValidationError(f"cannot read {str(path)!r} as {fmt}: {exc}") from None
    if column_map:
        frame = frame.rename(columns=column_map)
    frame.columns = [str(c) for c in frame.columns]
    return pd.DataFrame(
        {name: _column(name, frame[name]) for name in frame.columns}, index=frame.index
    )


def _column(name: str, col: pd.Series) -> Any:
    """One read column with each value as :func:`_value` makes it (times left typed)."""
    import pandas as pd

    if col.dtype.kind == "M":  # a typed time column: the bulk path reads it whole
        return col
    values = [_value(name, _none(v)) for v in col.tolist()]
    return pd.Series(values, dtype=object, index=col.index)


def _value(name: str, v: Any) -> Any:
    if name in _INT and isinstance(v, str):
        return int(v) if v.strip().lstrip("-").isdigit() else v
    if name in _MONEY and isinstance(v, (str, float)):
        return Decimal(str(v)) if _is_number(str(v)) else v
    if name in _BOOL and isinstance(v, str) and v.lower() in ("true", "false", "1", "0"):
        return v.lower() in ("true", "1")
    if name == "latency_ms" and isinstance(v, str):
        with contextlib.suppress(ValueError):
            return float(v)
    if name == "tags" and isinstance(v, str):
        with contextlib.suppress(ValueError):  # if not JSON, ingest names the row/field
            return json.loads(v)
    return v


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return True
