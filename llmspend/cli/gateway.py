"""``llmspend gateway {serve,keys}``: the team-mode gateway and its keys (docs/team.md)."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigError
from ..extras import GATEWAY, require_extra
from . import ADMIN_NOTE, common_options, database_url
from .admin_store import admin_database_url
from .output import print_json, print_table

__all__ = ["register"]

KEY_COLUMNS = ("id", "prefix", "org", "project", "user", "state", "created_at", "expires_at",
               "note")  # fmt: skip


def register(sub: Any) -> None:
    """Add ``gateway`` and its subcommands."""
    parser = sub.add_parser(
        "gateway", help="the llmspend gateway (team mode): serve, keys" + ADMIN_NOTE
    )
    gsub = parser.add_subparsers(dest="gateway_command", metavar="SUBCOMMAND")
    gsub.required = True

    serve = gsub.add_parser("serve", help="run the gateway until Ctrl-C")
    serve.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8780, help="port (default 8780)")
    serve.add_argument("--config", default=None, help="the gateway's TOML configuration file")
    common_options(serve)
    serve.set_defaults(func=_serve)

    keys = gsub.add_parser("keys", help="create, list and revoke gateway keys")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    ksub.required = True
    create = ksub.add_parser("create", help="make a key (printed once)")
    create.add_argument("--org", required=True)
    create.add_argument("--project", required=True)
    create.add_argument("--user", required=True)
    create.add_argument("--expires", default=None, help="e.g. 90d, 12h, 30m (default: never)")
    create.add_argument("--note", default=None, help="a note shown by keys list")
    common_options(create)
    create.set_defaults(func=_create)
    listing = ksub.add_parser("list", help="every key (never a secret)")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    common_options(listing)
    listing.set_defaults(func=_list)
    revoke = ksub.add_parser(
        "revoke", help="revoke a key by id (refused everywhere within key_cache_seconds)"
    )
    revoke.add_argument("id", type=int)
    common_options(revoke)
    revoke.set_defaults(func=_revoke)


def _gateway_modules() -> tuple[Any, Any]:
    require_extra("llmspend gateway", *GATEWAY)
    try:
        from ..gateway import app, config
    except ImportError as exc:
        raise ConfigError(
            f"the gateway needs the 'gateway' extra: pip install 'llmspend[gateway]' ({exc})"
        ) from None
    return app, config


def _serve(args: argparse.Namespace) -> int:
    app, config = _gateway_modules()
    cfg = config.load_config(args.config)
    app.serve(cfg, args.host, args.port, database_url(args))
    return 0


def _store(args: argparse.Namespace) -> Any:
    from ..store.engine import open_store

    return open_store(admin_database_url(args, "gateway keys"))


def _row(info: Any) -> dict[str, Any]:
    return {
        "id": info.id, "prefix": info.prefix, "org": info.org, "project": info.project,
        "user": info.user, "state": info.state, "created_at": info.created_at,
        "expires_at": info.expires_at, "note": info.note or "",
    }  # fmt: skip


def _create(args: argparse.Namespace) -> int:
    from ..gateway import keys

    expires = keys.parse_expiry(args.expires)
    info, key = keys.create_key(
        _store(args), org=args.org, project=args.project, user=args.user, expires=expires,
        note=args.note,
    )  # fmt: skip
    until = f", expires {info.expires_at:%Y-%m-%d %H:%M} UTC" if info.expires_at else ""
    print(f"gateway key {info.id} for {info.org}/{info.project}/{info.user}{until}")
    print("shown once — store it now:")
    print(key)
    return 0


def _list(args: argparse.Namespace) -> int:
    from ..gateway import keys

    rows = [_row(info) for info in keys.list_keys(_store(args))]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, KEY_COLUMNS)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from ..gateway import keys

    info = keys.revoke_key(_store(args), args.id)
    print(f"gateway key {info.id} ({info.prefix}…) revoked at {info.revoked_at:%Y-%m-%d %H:%M:%S}")
    return 0
