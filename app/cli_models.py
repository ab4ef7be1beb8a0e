"""`hubside pull`, `ls` and `rm`: the downloads and the library from a terminal."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import requests

from app.downloads.jobs import QUEUED, Job, JobFile, JobStore, job_files
from app.downloads.manager import pull
from app.downloads.throttle import Bandwidth, mbps_to_rate
from app.downloads.transfer import Transfer
from app.errors import AppError, ErrorKind
from app.hub.client import HubClient, ModelDetails
from app.hub.fit import Machine, fit_variant, recommended
from app.hub.quants import Variant
from app.hub.token import hub_token
from app.library.scan import LibraryEntry, Scanner, default_roots, delete, find
from app.paths import AppPaths
from app.settings import MAX_CONNECTIONS, SettingsStore
from app.units import gb

PROGRESS_INTERVAL_S = 0.25


def add_model_commands(commands: Any) -> None:
    pull = commands.add_parser("pull", help="download a model variant from the Hub (resumes a partial one)")
    pull.add_argument("spec", metavar="REPO[:VARIANT]", help="e.g. bartowski/Qwen2.5-7B-Instruct-GGUF:Q4_K_M")
    pull.add_argument("--json", action="store_true", help="print the result as JSON")
    pull.add_argument(
        "--connections", type=_connections, metavar="N", help="connections per file, 1-16 (default: settings)"
    )
    pull.add_argument(
        "--limit", type=float, metavar="MBPS", help="bandwidth limit in MB/s, 0 for none (default: settings)"
    )
    ls = commands.add_parser("ls", help="list the models in the library")
    ls.add_argument("--json", action="store_true")
    rm = commands.add_parser("rm", help="delete a model Hubside downloaded (others are only hidden)")
    rm.add_argument("id", help="a library id (see `hubside ls`)")


def _connections(text: str) -> int:
    number = int(text)
    if not 1 <= number <= MAX_CONNECTIONS:
        raise argparse.ArgumentTypeError(f"between 1 and {MAX_CONNECTIONS}, not {number}")
    return number


def library(paths: AppPaths) -> list[LibraryEntry]:
    settings = SettingsStore(paths.settings_file).load()
    roots = default_roots(settings.models_folder(paths.models_dir), settings.extra_model_dirs)
    # the header cache the window keeps: `hubside serve` reads the library again every few seconds
    return Scanner(paths.library_cache_file).scan(roots, settings.hidden_models)


def resolve_model(model: Path, paths: AppPaths) -> Path:
    """A path to a .gguf file, or a library id."""
    if model.is_file():
        return model
    if model.suffix.lower() == ".gguf" or model.is_absolute():  # meant as a file
        raise AppError(ErrorKind.NOT_FOUND, f"No such model file: {model}")
    entry = find(library(paths), str(model))
    if entry.problem:
        raise AppError(ErrorKind.BAD_MODEL, f"{entry.id}: {entry.problem}")
    return entry.path


def choose_variant(details: ModelDetails, wanted: str | None) -> Variant:
    if not details.variants:
        raise AppError(ErrorKind.NOT_FOUND, f"{details.id} has no GGUF model files.")
    if wanted:
        for variant in details.variants:
            if wanted.upper() in (variant.label.upper(), variant.title.upper()):
                return variant
        labels = ", ".join(v.title for v in details.variants)
        raise AppError(ErrorKind.NOT_FOUND, f"{details.id} has no variant {wanted} (it has: {labels}).")
    machine = Machine.now()
    best = recommended(
        list(details.variants), [fit_variant(v, None, 4096, machine) for v in details.variants]
    )
    if best is None:
        raise AppError(
            ErrorKind.OUT_OF_MEMORY, f"No variant of {details.id} fits this machine; name one to force."
        )
    return best


def pull_command(args: argparse.Namespace, paths: AppPaths) -> int:
    repo, _, wanted = args.spec.partition(":")
    token = hub_token()
    settings = SettingsStore(paths.settings_file).load()
    client = HubClient(paths.hub_cache_dir, token, mirror=settings.hub_mirror)
    details: ModelDetails = client.details(repo).value
    variant = choose_variant(details, wanted or None)
    files: tuple[JobFile, ...] = job_files(details, variant, client.api.endpoint)
    job = Job(0, details.id, details.sha, variant.label, files, QUEUED)
    models_dir = settings.models_folder(paths.models_dir)
    limit = settings.download_limit_mbps if args.limit is None else args.limit
    total = job.total_bytes
    started = time.monotonic()
    last = 0.0
    shown = False  # a progress line is on stderr (an error then starts on a line of its own)

    def progress(done: int) -> None:
        nonlocal last, shown
        now = time.monotonic()
        if done and (now - last >= PROGRESS_INTERVAL_S or done == total):  # nothing before the first byte
            last, shown = now, True
            speed = done / max(now - started, 1e-3)
            print(f"\r{variant.label}: {gb(done)} / {gb(total)} ({100 * done / max(total, 1):.0f}%)  "
                  f"{gb(speed)}/s   ", end="", file=sys.stderr, flush=True)  # fmt: skip

    try:
        store = JobStore(paths.downloads_file)  # the window's Downloads page lists this pull too
        try:
            with requests.Session() as session:
                transfer = Transfer(
                    session,
                    token,
                    stall_s=float(settings.download_stall_seconds),
                    connections=args.connections or settings.download_connections,
                    limiter=Bandwidth(mbps_to_rate(limit)),  # this pull's own: one per process
                )
                began = time.monotonic()
                targets = pull(store, models_dir, job, transfer, progress)
                download_s = time.monotonic() - began  # the Hub's answer in hand to the files renamed
        finally:
            store.close()
    finally:
        if shown:
            print(file=sys.stderr)
    if args.json:
        result = {"repo": details.id, "revision": details.sha, "variant": variant.label, "size": total,
                  "download_s": round(download_s, 3)}  # fmt: skip
        print(json.dumps(result | {"path": str(targets[0]), "files": [str(t) for t in targets]}))
    else:
        print(targets[0])
    return 0


def ls_command(args: argparse.Namespace, paths: AppPaths) -> int:
    entries = library(paths)
    if args.json:
        rows = [{**asdict(e), "path": str(e.path), "files": [str(f) for f in e.files]} for e in entries]
        print(json.dumps(rows, indent=2))
        return 0
    if not entries:
        print("No models yet: `hubside pull REPO` downloads one.")
    for e in entries:
        facts = f"{e.architecture or '?'}  {gb(e.size):>8}  {e.source}"
        print(f"{e.id:<60} {facts}  {e.path}" + (f"  [{e.problem}]" if e.problem else ""))
    return 0


def rm_command(args: argparse.Namespace, paths: AppPaths) -> int:
    entry = find(library(paths), args.id)
    models_dir = SettingsStore(paths.settings_file).load().models_folder(paths.models_dir)
    if entry.source == "hubside":
        delete(entry, models_dir)
        print(f"deleted {entry.id} ({gb(entry.size)})")
    else:  # found in place: never deleted, only hidden from the library (added to the file as it is now)
        store = SettingsStore(paths.settings_file)
        store.update(lambda settings: settings.hidden_models.append(str(entry.path)))
        if store.read_only:
            raise AppError(
                ErrorKind.SETTINGS,
                f"{entry.id} was not hidden: the settings file belongs to a newer Hubside, which this one "
                "never overwrites.",
            )
        print(f"hidden {entry.id} (its file stays at {entry.path})")
    return 0
