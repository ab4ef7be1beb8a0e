"""`hubside serve`: the library's models over a local OpenAI-compatible API."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from app.cli_models import library
from app.errors import AppError, ErrorKind
from app.paths import AppPaths
from app.settings import DEFAULT_CONTEXT, DEFAULT_SERVER_PORT, SettingsStore


def add_serve_command(commands: Any) -> None:
    serve = commands.add_parser("serve", help="serve the library's models over an OpenAI-compatible API")
    serve.add_argument(
        "models",
        nargs="*",
        type=Path,
        metavar="MODEL.gguf",
        help="also offer these files (named by their path); the library's are always offered",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: this machine only)"
    )
    serve.add_argument(
        "--port", type=int, default=DEFAULT_SERVER_PORT, help=f"port (default: {DEFAULT_SERVER_PORT})"
    )
    key = serve.add_mutually_exclusive_group()
    key.add_argument("--api-key", metavar="KEY", help="the key clients must send (default: the kept one)")
    key.add_argument("--api-key-env", metavar="VAR", help="read the key from this environment variable")
    serve.add_argument("--parallel", type=_positive, default=1, metavar="N",
                       help="requests decoded together per model (default: 1)")  # fmt: skip
    serve.add_argument(
        "--ctx",
        type=_positive,
        metavar="N",
        help=f"context per request (default: the model's, at most {DEFAULT_CONTEXT})",
    )
    serve.add_argument("--threads", type=_positive, metavar="N", help="CPU threads (default: physical cores)")
    serve.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                       help="a web origin allowed to call the API (repeatable; default: none)")  # fmt: skip


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"at least 1, not {number}")
    return number


def _api_key(args: argparse.Namespace, paths: AppPaths) -> tuple[str, bool]:
    """The key and whether to show it (a key given on the command line is not echoed)."""
    if args.api_key:
        return args.api_key, False
    if args.api_key_env:
        key = os.environ.get(args.api_key_env, "")
        if not key:
            raise AppError(
                ErrorKind.BAD_INPUT, f"The environment variable {args.api_key_env} is empty or unset."
            )
        return key, False
    from app.server.keys import server_key

    return server_key(paths.config_dir / "server-key")[0], True


def serve_command(args: argparse.Namespace, paths: AppPaths) -> int:
    # Here, not at the top: uvicorn and Starlette cost every other command 0.1-0.2 s of start-up.
    from app.server.models import Catalog, HostOptions
    from app.server.service import Address, Server

    for model in args.models:
        if not model.is_file():
            raise AppError(ErrorKind.NOT_FOUND, f"No such model file: {model}")
    settings = SettingsStore(paths.settings_file).load()
    key, show_key = _api_key(args, paths)
    options = HostOptions(
        parallel=args.parallel,
        n_ctx=args.ctx,
        n_threads=args.threads or settings.threads,
        idle_s=settings.server_idle_unload_minutes * 60,
    )
    cors = tuple(args.cors or settings.server_cors_origins)
    catalog = Catalog(lambda: library(paths), args.models)
    server = Server(paths, catalog, Address(args.host, args.port), options, key, cors)
    if not server.address.loopback:
        print(
            f"hubside: warning: listening on {args.host}: other machines can reach this server.",
            file=sys.stderr,
        )
    print(f"Serving on {server.base_url}", flush=True)
    if show_key:
        print(f"API key: {key}", flush=True)
    print("Ctrl-C stops.", file=sys.stderr, flush=True)
    server.run()
    return 0
