"""The `hubside` command: no arguments opens the window; subcommands run headless."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from app import __version__
from app.cli_compare import add_compare_command, compare_command
from app.cli_endpoints import add_endpoints_commands, endpoints_command
from app.cli_hub import add_hub_commands, search_command, show_command
from app.cli_models import add_model_commands, ls_command, pull_command, rm_command
from app.cli_runtime import add_commands, bench_command, run_command
from app.cli_serve import add_serve_command, serve_command
from app.errors import AppError, ErrorKind, to_app_error
from app.logs import setup_logging
from app.paths import AppPaths

log = logging.getLogger(__name__)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hubside",
        description="Browse the Hugging Face Hub, download GGUF models and chat with them offline. "
        "Without a command, opens the window.",
    )
    parser.add_argument("--version", action="version", version=f"hubside {__version__}")
    parser.add_argument(
        "--self-test", action="store_true", help="check that this build works here, then exit"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("paths", help="print the folders Hubside uses")
    add_commands(commands)
    add_hub_commands(commands)
    add_model_commands(commands)
    add_compare_command(commands)
    add_serve_command(commands)
    add_endpoints_commands(commands)
    return parser


def _print_paths(paths: AppPaths) -> int:
    for name in ("config_dir", "data_dir", "models_dir", "cache_dir", "logs_dir"):
        print(f"{name:<11} {getattr(paths, name)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    link = (
        arguments.pop(0) if arguments and arguments[0].startswith("hubside://") else None
    )  # from the desktop
    args = _build_parser().parse_args(arguments)
    if args.self_test:
        from app.selftest import run_self_test

        return run_self_test()
    try:
        paths = AppPaths.from_env().ensure()
    except OSError as exc:  # before logging exists: say it and stop
        message = f"Hubside cannot create its folders: {to_app_error(exc).user_message}"
        print(f"hubside: {message}", file=sys.stderr)
        if args.command is None:  # the window, perhaps from a menu: no terminal to read the line
            from app.ui.application import show_startup_error

            show_startup_error(AppError(ErrorKind.PERMISSION, message, str(exc)))
        return 1
    setup_logging(paths, to_stderr=args.command is None)
    try:
        if args.command == "paths":
            return _print_paths(paths)
        if args.command == "run":
            return run_command(args, paths)
        if args.command == "bench":
            return bench_command(args, paths)
        if args.command == "search":
            return search_command(args, paths)
        if args.command == "show":
            return show_command(args, paths)
        commands = {"pull": pull_command, "ls": ls_command, "rm": rm_command, "compare": compare_command,
                    "serve": serve_command, "endpoints": endpoints_command}  # fmt: skip
        if args.command in commands:
            return commands[args.command](args, paths)
        from app.ui.application import run_window  # Qt is loaded only when a window is wanted

        return run_window(paths, sys.argv[:1], link)
    except KeyboardInterrupt:
        print("hubside: interrupted", file=sys.stderr)
        return 130
    except AppError as exc:
        print(f"hubside: {exc.user_message}", file=sys.stderr)
        log.error("%s", exc)
        return 1
    except Exception as exc:
        error = to_app_error(exc)
        log.exception("unexpected error")
        print(f"hubside: {error.user_message} ({error.detail})", file=sys.stderr)
        return 1
