"""Usage records to and from files: CSV and Parquet, exactly.

Money is written as exact decimal text (CSV) or ``decimal128(38, 9)`` (Parquet), times as
ISO 8601 UTC, tags as JSON. Reading gives rows ``ingest`` accepts, so an export followed by
an import round-trips every column exactly.
"""

from __future__ import annotations

import contextlib
import json
import os
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ValidationError
from .extras import PARQUET, require_extra

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FORMATS", "detect_format", "read_records", "write_records"]

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

    The file appears whole or not at all (written to a temporary name, then renamed).
    """
    fmt = detect_format(path, fmt)
    target = Path(path).expanduser()
    if not target.parent.is_dir():
        raise ValidationError(f"no such directory: {str(target.parent)!r}")
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        n = _write(frame, tmp, fmt)
        os.replace(tmp, target)
    except OSError as exc:
        raise ValidationError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return n


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
) -> list[dict[str, Any]]:
    """Read rows for ``ingest`` from CSV or Parquet (``column_map`` renames columns)."""
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
    rows = []
    for raw in frame.to_dict("records"):
        row = {str(k): _none(v) for k, v in raw.items()}
        for col in _INT:
            v = row.get(col)
            if isinstance(v, str):
                row[col] = int(v) if v.strip().lstrip("-").isdigit() else v
        for col in _MONEY:
            v = row.get(col)
            if isinstance(v, (str, float)):
                row[col] = Decimal(str(v)) if _is_number(str(v)) else v
        for col in _BOOL:
            v = row.get(col)
            if isinstance(v, str) and v.lower() in ("true", "false", "1", "0"):
                row[col] = v.lower() in ("true", "1")
        if isinstance(row.get("latency_ms"), str):
            with contextlib.suppress(ValueError):
                row["latency_ms"] = float(row["latency_ms"])
        if isinstance(row.get("tags"), str):
            with contextlib.suppress(ValueError):  # if not JSON, ingest names the row/field
                row["tags"] = json.loads(row["tags"])
        rows.append(row)
    return rows


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return True
