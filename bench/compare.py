"""Compare adds no overhead: in Fair mode each model's generation speed against `hubside bench` for the
same model alone (target: within 5 %). The comparison answers a chat prompt at temperature 0
(greedy, with the default repetition penalty); the reference is `hubside bench`'s greedy tg128.

Run with `make bench` (or `python -m bench.compare`); prints a table and writes JSON to bench/results/.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from app.compare.runner import FAIR, CompareSettings, Comparison
from app.paths import AppPaths
from app.runtime.protocol import LoadParams, SamplingParams
from bench import save_results
from tests import models

ROUNDS = 3
TOKENS = 128
TARGET = 0.05
PROMPT = "List the numbers from 1 to 100, separated by commas."  # long answers from both models


def bench_alone(model: Path) -> float:
    command = [sys.executable, "-m", "app", "bench", str(model), "-p", "64", "-n", str(TOKENS), "--json"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out)["tg128_tokens_per_s"][0])


def compare_fair(paths: AppPaths, model_paths: list[Path]) -> list[tuple[float, int]]:
    settings = CompareSettings(sampling=SamplingParams(temperature=0.0, seed=1), max_tokens=TOKENS, mode=FAIR)
    comparison = Comparison(paths, [LoadParams(m, n_ctx=1024) for m in model_paths], settings)
    columns = comparison.turn(PROMPT)
    return [(c.tokens_per_s, c.completion_tokens) for c in columns]


def main() -> int:
    model_paths = [models.fetch(models.SMOLLM2), models.fetch(models.GEMMA3)]
    alone: dict[Path, list[float]] = {m: [] for m in model_paths}
    compared: dict[Path, list[float]] = {m: [] for m in model_paths}
    tokens: dict[Path, int] = {}
    with tempfile.TemporaryDirectory() as home:
        paths = AppPaths.under(Path(home)).ensure()
        for _ in range(ROUNDS):  # alternated, so that the machine's drift hits both
            for model in model_paths:
                alone[model].append(bench_alone(model))
            for model, (speed, count) in zip(model_paths, compare_fair(paths, model_paths), strict=True):
                compared[model].append(speed)
                tokens[model] = count
    rows: list[dict[str, Any]] = []
    for model in model_paths:
        a, c = statistics.median(alone[model]), statistics.median(compared[model])
        rows.append({"model": model.name, "bench_tg_tokens_per_s": round(a, 2),
                     "compare_tokens_per_s": round(c, 2), "compare_tokens": tokens[model],
                     "difference": round(c / a - 1, 4), "met": abs(c / a - 1) <= TARGET})  # fmt: skip
    print("| model | hubside bench tg128 tok/s | compare (fair) tok/s | tokens | difference | within 5% |")
    print("|---|---:|---:|---:|---:|---|")
    for row in rows:
        met = "yes" if row["met"] else "NO"
        print(f"| {row['model']} | {row['bench_tg_tokens_per_s']} | {row['compare_tokens_per_s']} | "
              f"{row['compare_tokens']} | {100 * row['difference']:+.1f}% | {met} |")  # fmt: skip
    save_results("compare", {"rounds": ROUNDS, "prompt": PROMPT, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
