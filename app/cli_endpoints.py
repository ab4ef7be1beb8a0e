"""`hubside endpoints`: the OpenAI-compatible servers whose models `run` and `compare` may use, written
remote:NAME/MODEL_ID. A key is an environment variable's NAME (--api-key-env) or typed on stdin and kept
in the keyring (--api-key-stdin); no output of these commands shows it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from app.errors import AppError, ErrorKind
from app.paths import AppPaths
from app.remote.endpoints import DEFAULT_FIRST_TOKEN_S, Endpoint, endpoint_store


def add_endpoints_commands(commands: Any) -> None:
    endpoints = commands.add_parser("endpoints", help="OpenAI-compatible servers to use models from")
    actions = endpoints.add_subparsers(dest="endpoints_command", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add (or replace) an endpoint")
    add.add_argument("name", help="a short name: models are then remote:NAME/MODEL_ID")
    add.add_argument("url", help="its base URL, e.g. http://gpu-box:8080/v1")
    key = add.add_mutually_exclusive_group()
    key.add_argument("--api-key-env", metavar="VAR", help="read the key from this environment variable")
    key.add_argument(
        "--api-key-stdin", action="store_true", help="read the key from stdin; keep it in the keyring"
    )
    add.add_argument(
        "--first-token-timeout",
        type=float,
        default=DEFAULT_FIRST_TOKEN_S,
        metavar="S",
        help=f"seconds to wait for a reply's first token (default {DEFAULT_FIRST_TOKEN_S:g})",
    )
    ls = actions.add_parser("ls", help="list the endpoints (never their keys)")
    ls.add_argument("--json", action="store_true")
    rm = actions.add_parser("rm", help="remove an endpoint and forget its kept key")
    rm.add_argument("name")


def endpoints_command(args: argparse.Namespace, paths: AppPaths) -> int:
    store = endpoint_store(paths)
    if args.endpoints_command == "add":
        key = sys.stdin.readline().strip() if args.api_key_stdin else None
        if args.api_key_stdin and not key:
            raise AppError(ErrorKind.BAD_INPUT, "No key on stdin.")
        if not args.first_token_timeout > 0:
            raise AppError(ErrorKind.BAD_INPUT, "--first-token-timeout takes a number of seconds above 0.")
        added = store.add(Endpoint(args.name, args.url, args.api_key_env, args.first_token_timeout), key)
        print(f"added {added.name}: {added.url} (key: {store.key_source(added)})")
        return 0
    if args.endpoints_command == "rm":
        store.remove(args.name)
        print(f"removed {args.name}")
        return 0
    rows = [
        {
            "name": e.name,
            "url": e.url,
            "key": store.key_source(e),
            "first_token_timeout_s": e.first_token_timeout_s,
        }
        for e in store.all()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("No endpoints yet: hubside endpoints add NAME URL [--api-key-env VAR]", file=sys.stderr)
    for row in [] if args.json else rows:
        print(f"{row['name']:<16} {row['url']:<40} key: {row['key']}")
    return 0
