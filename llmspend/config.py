"""Where things live and how llmspend is configured.

Resolution order for every setting: an explicit argument, then an environment variable,
then a default. Environment variables:

``LLMSPEND_HOME``            data directory (default: the per-user data dir of platformdirs)
``LLMSPEND_DATABASE_URL``    SQLAlchemy URL of the store (default: SQLite in the home)
``LLMSPEND_PRICES``          path of a price-override TOML file
``LLMSPEND_ORG`` / ``LLMSPEND_PROJECT`` / ``LLMSPEND_USER``   default attribution
``LLMSPEND_OTEL``            ``1`` (or ``true``, ``yes``, ``on``): export OpenTelemetry spans
``LLMSPEND_GATEWAY_URL``     the llmspend gateway's URL: team mode (calls to it are the
                             gateway's to record, see :mod:`llmspend.teammode`)
``LLMSPEND_RECORDS_CACHE``   ``0`` (or ``false``, ``no``, ``off``): records() keeps no
                             columnar copy of a store (see :mod:`llmspend.store.segments`)
``LLMSPEND_RECORDS_CACHE_DAYS``  days a columnar copy may go unused before it is removed
                             (default 30; :mod:`llmspend.store.segment_prune`)

What llmspend creates is private whatever the umask: directories 0700
(:func:`private_dir`), files 0600 (:func:`private_file`). A directory or file that
already exists keeps its mode.
"""

from __future__ import annotations

import contextlib
import getpass
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, StoreError

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "Settings",
    "default_attribution",
    "gateway_url_from_env",
    "otel_enabled",
    "private_dir",
    "private_file",
    "private_replacement",
    "resolve_database_url",
    "resolve_home",
    "user_cache_dir",
]

DIR_MODE = 0o700
FILE_MODE = 0o600


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``home``, ``$LLMSPEND_HOME`` or the per-user data directory."""
    if home is None:
        home = os.environ.get("LLMSPEND_HOME") or None
    if home is None:
        import platformdirs

        home = platformdirs.user_data_dir("llmspend", appauthor=False)
    return Path(home).expanduser()


def user_cache_dir() -> Path:
    """llmspend's directory in the user's cache (``$XDG_CACHE_HOME`` or ``~/.cache``,
    ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows): what can be rebuilt
    from installed packages or the store. Not created here."""
    import sys

    if sys.platform == "win32":  # pragma: no cover - not tested here
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
        return Path(base, "llmspend", "Cache")
    if sys.platform == "darwin":  # pragma: no cover - not tested here
        return Path(os.path.expanduser("~/Library/Caches"), "llmspend")
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.expanduser("~/.cache")
    return Path(base, "llmspend")


def private_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as a directory: each missing component is created 0700 (whatever the
    umask); components that exist are left as they are. Raises ``OSError``."""
    path = Path(path)
    missing: list[Path] = []
    for p in (path, *path.parents):
        if p.is_dir():
            break
        missing.append(p)
    for p in reversed(missing):
        try:
            os.mkdir(p, DIR_MODE)
        except FileExistsError:
            if not p.is_dir():
                raise
            continue  # made by someone else meanwhile: theirs, left as it is
        os.chmod(p, DIR_MODE)  # the umask may have taken bits of 0700 away
    return path


def private_file(path: str | os.PathLike[str]) -> bool:
    """Create ``path`` empty and 0600 (whatever the umask) if it does not exist; an
    existing file keeps its mode. True if it was created. Raises ``OSError``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    try:
        if hasattr(os, "fchmod"):  # POSIX; Windows has no such modes
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return True


@contextlib.contextmanager
def private_replacement(path: Path) -> Iterator[Path]:
    """A private (0600) temporary file beside ``path`` (``<name>.<pid>.<thread>.tmp``) to
    write: renamed over ``path`` when the block ends, removed if it raises. Raises
    ``OSError``."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        private_file(tmp)
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _ensure_writable_dir(path: Path) -> None:
    try:
        private_dir(path)
    except OSError as exc:
        raise StoreError(
            f"cannot create the llmspend data directory {str(path)!r}: {exc.strerror or exc}; "
            "set LLMSPEND_HOME to a writable directory or pass database_url"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StoreError(
            f"the llmspend data directory {str(path)!r} is not writable; "
            "set LLMSPEND_HOME to a writable directory or pass database_url"
        )


def resolve_database_url(database_url: str | None = None) -> str:
    """The store's SQLAlchemy URL; creates the data directory for the default SQLite file."""
    url = database_url or os.environ.get("LLMSPEND_DATABASE_URL") or None
    if url is not None:
        if not isinstance(url, str) or not url.strip():
            raise ConfigError(f"database_url must be a non-empty string, got {url!r}")
        return url.strip()
    home = resolve_home()
    _ensure_writable_dir(home)
    return f"sqlite:///{home / 'llmspend.sqlite'}"


def default_attribution() -> tuple[str, str, str]:
    """(org, project, user) defaults: env vars, then JupyterHub/OS user, then "default"."""
    org = os.environ.get("LLMSPEND_ORG") or "default"
    project = os.environ.get("LLMSPEND_PROJECT") or "default"
    user = os.environ.get("LLMSPEND_USER") or os.environ.get("JUPYTERHUB_USER") or ""
    if not user:
        try:
            user = getpass.getuser()
        except Exception:  # no passwd entry (containers)
            user = "default"
    return org, project, user


@dataclass(frozen=True)
class Settings:
    """Resolved settings of one tracker."""

    database_url: str
    prices_path: str | None = None

    @classmethod
    def resolve(cls, database_url: str | None = None, prices_path: str | None = None) -> Settings:
        return cls(
            database_url=resolve_database_url(database_url),
            prices_path=prices_path or os.environ.get("LLMSPEND_PRICES") or None,
        )


def env_number(
    name: str,
    default: float,
    *,
    unit: str,
    whole: bool = False,
    low: float = 0,
    high: float | None = None,
) -> float:
    """A number from the environment variable ``name`` (``default`` when unset or empty).

    ``unit`` names what the number counts (for messages); ``whole`` asks for an integer.
    A value that is not a number, or lies outside ``[low, high]`` (``(low, high]`` for a
    non-integer: a zero duration is no duration), raises
    :class:`~llmspend.errors.ConfigError` naming the variable; ``nan`` and ``inf`` never
    pass.
    """
    raw = os.environ.get(name)
    if not raw:
        return default
    kind = f"{'a whole number' if whole else 'a number'} of {unit}"
    try:
        value: float = int(raw) if whole else float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {kind}, got {raw!r}") from None
    above = value >= low if whole else value > low
    if not (above and math.isfinite(value) and (high is None or value <= high)):
        bounds = f">= {low:g}" if whole else f"> {low:g}"
        if high is not None:
            bounds += f" and <= {high:g}"
        raise ConfigError(f"{name} must be {kind} {bounds}, got {raw!r}")
    return value


def otel_enabled() -> bool:
    """Whether ``LLMSPEND_OTEL`` asks for OpenTelemetry export (``1``, ``true``, ``yes``,
    ``on``)."""
    return os.environ.get("LLMSPEND_OTEL", "").strip().lower() in ("1", "true", "yes", "on")


def gateway_url_from_env() -> str | None:
    """``LLMSPEND_GATEWAY_URL``, stripped (``None`` when unset or empty)."""
    return os.environ.get("LLMSPEND_GATEWAY_URL", "").strip() or None
