"""`hubside search` and `hubside show`: the Discover page's answers, in a terminal or as JSON."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from app.errors import AppError
from app.hub.client import SORTS, HubClient, ModelDetails, SearchQuery
from app.hub.fit import Fit, Machine, fit_variant, recommended
from app.hub.quants import Variant
from app.hub.token import hub_token
from app.paths import AppPaths
from app.runtime.gguf_header import GGUFHeader
from app.settings import DEFAULT_CONTEXT, SettingsStore
from app.units import gb


def add_hub_commands(commands: Any) -> None:
    search = commands.add_parser("search", help="search the Hub's GGUF models")
    search.add_argument("query", nargs="?", default="", help="words in the repo name")
    search.add_argument("--sort", choices=sorted(SORTS), default="trending")
    search.add_argument("--limit", type=int, default=20, help="how many results (default 20)")
    search.add_argument("--json", action="store_true", help="print JSON")
    show = commands.add_parser("show", help="a repo's facts, variants and whether each fits this machine")
    show.add_argument("repo", help="owner/name")
    show.add_argument("--ctx", type=int, default=DEFAULT_CONTEXT, help="context length for the fit verdicts")
    show.add_argument("--json", action="store_true", help="print JSON")


def _client(paths: AppPaths) -> HubClient:
    mirror = SettingsStore(paths.settings_file).load().hub_mirror
    return HubClient(paths.hub_cache_dir, hub_token(), mirror=mirror)


def search_command(args: argparse.Namespace, paths: AppPaths) -> int:
    pages = _client(paths).search(SearchQuery(text=args.query, sort=args.sort))
    rows = pages.next(max(1, args.limit))
    if args.json:
        print(json.dumps([asdict(row) for row in rows], indent=2))
        return 0
    if pages.stale:
        print("(offline: the results saved the last time)")
    if not rows:
        print("No GGUF models found.")
    for row in rows:
        print(f"{row.id:<60} {row.downloads:>10,} downloads {row.likes:>7,} likes  {row.updated[:10]}")
    return 0


def _variant_rows(details: ModelDetails, header: GGUFHeader | None, n_ctx: int) -> list[tuple[Variant, Fit]]:
    machine = Machine.now()
    return [(v, fit_variant(v, header, n_ctx, machine, details.parameters)) for v in details.variants]


def show_command(args: argparse.Namespace, paths: AppPaths) -> int:
    client = _client(paths)
    fetched = client.details(args.repo)
    details: ModelDetails = fetched.value
    header, header_problem = None, ""
    if details.variants:
        try:
            header = client.header(details, details.variants[0].files[0])
        except AppError as exc:  # the verdicts fall back to weights + margin, and say so
            header_problem = exc.user_message
    rows = _variant_rows(details, header, args.ctx)
    best = recommended([v for v, _ in rows], [f for _, f in rows])
    if args.json:
        facts = asdict(details)
        facts.pop("variants")
        facts["context_for_fit"] = args.ctx
        facts["header_problem"] = header_problem
        facts["variants"] = [
            {
                "label": v.title,
                "size": v.size,
                "bits_per_weight": v.bits_per_weight(details.parameters),
                "files": [asdict(f) for f in v.files],
                "projector": asdict(v.projector) if v.projector else None,
                "fit": fit.label,
                "needs_bytes": fit.need.total,
                "estimate": fit.explain(),
                "recommended": v is best,
            }
            for v, fit in rows
        ]
        print(json.dumps(facts, indent=2))
        return 0
    if fetched.stale:
        print(f"(offline: saved the last time; {fetched.problem})")
    params = f"{details.parameters / 1e9:.2f} B" if details.parameters else "?"
    print(f"{details.id}  ({details.architecture or '?'}, {params} parameters)")
    print(f"  context {details.context_length or '?'} · license {details.license or '?'} · "
          f"{'gated · ' if details.gated else ''}{details.downloads:,} downloads · {details.likes:,} likes · "
          f"updated {details.updated[:10]}")  # fmt: skip
    if header_problem:
        print(f"  (the header could not be read: {header_problem})")
    if not rows:
        print("  This repo has no GGUF model files.")
    for v, fit in rows:
        bits = v.bits_per_weight(details.parameters)
        mark = "  <- recommended" if v is best else ""
        print(f"  {v.title:<24} {gb(v.size):>9} {bits or 0:6.2f} bpw  {fit.label:<26} {fit.explain()}{mark}")
        for f in v.files:
            print(f"      {f.path}  {f.size} bytes  sha256 {f.sha256 or '?'}")
        if v.projector:
            print(f"      + vision projector {v.projector.path} ({gb(v.projector.size)})")
    return 0
