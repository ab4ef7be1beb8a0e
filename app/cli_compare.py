"""`hubside compare`: the same prompt through 2 to 4 models, with their numbers."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

from app.cli_models import resolve_model
from app.compare.runner import FAIR, PARALLEL, Column, CompareSettings, Comparison, ModelSpec, model_where
from app.compare.store import CompareStore
from app.paths import AppPaths
from app.remote.endpoints import endpoint_store, split_remote
from app.runtime.protocol import LoadParams, SamplingParams
from app.units import gb


def add_compare_command(commands: Any) -> None:
    compare = commands.add_parser("compare", help="the same prompt through 2 to 4 models, side by side")
    compare.add_argument(
        "models", nargs="+", metavar="MODEL", help=".gguf files, library ids or remote:NAME/MODEL_ID"
    )
    compare.add_argument("--prompt", required=True)
    compare.add_argument("--system", default="")
    compare.add_argument("--mode", choices=(FAIR, PARALLEL), default=FAIR)
    compare.add_argument("--seed", type=int, default=42)
    compare.add_argument("--temperature", type=float, default=0.0)
    compare.add_argument("--max-tokens", type=int, default=256)
    compare.add_argument("--ctx", type=int, default=2048, help="context length for every model")
    compare.add_argument("--json", action="store_true")


def compare_command(args: argparse.Namespace, paths: AppPaths) -> int:
    store_of_endpoints = endpoint_store(paths)

    def spec(model: str) -> ModelSpec:
        if split_remote(model) is not None:
            return store_of_endpoints.resolve(model)
        return LoadParams(resolve_model(Path(model), paths), n_ctx=args.ctx)

    models = [spec(model) for model in args.models]
    settings = CompareSettings(
        system=args.system,
        sampling=SamplingParams(temperature=args.temperature, seed=args.seed),
        max_tokens=args.max_tokens,
        mode=args.mode,
    )

    def progress(index: int, column: Column) -> None:
        if column.state in ("loading", "done", "failed"):
            print(
                f"[{index + 1}/{len(models)}] {column.params.model_path.name}: {column.state}",
                file=sys.stderr,
            )

    # Opened first: a locked database, or one from a newer Hubside, stops the command before the models run.
    with closing(CompareStore(paths.compare_file)) as store:
        comparison = Comparison(paths, models, settings, store.sha256)
        comparison.turn(args.prompt, progress)
        run_id = store.save_run(args.prompt, comparison.data())
    _print_results(args, run_id, comparison.columns)
    return 1 if all(c.error for c in comparison.columns) else 0


def _print_results(args: argparse.Namespace, run_id: int, columns: list[Column]) -> None:
    if args.json:
        results = [
            {
                "model": c.name,
                "path": model_where(c.params),
                "text": c.text,
                "error": c.error,
                **c.metrics(),
            }
            for c in columns
        ]
        print(
            json.dumps(
                {"run": run_id, "prompt": args.prompt, "mode": args.mode, "results": results}, indent=2
            )
        )
        return
    for c in columns:
        print(f"=== {c.name or c.params.model_path.name}")
        print(c.text.strip() if not c.error else f"FAILED: {c.error}")
        speeds = f"{c.tokens_per_s:.1f} tok/s · prompt {c.prompt_tokens_per_s:.0f} tok/s"
        rest = f"first token {c.ttft_ms:.0f} ms · {c.completion_tokens} tokens · load {c.load_ms:.0f} ms"
        memory = f"peak memory {gb(c.peak_memory_bytes)}"
        print(f"--- {speeds} · {rest} · {memory} · {c.finish_reason or c.state}\n")
