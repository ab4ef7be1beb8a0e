"""`make bench`: llama-bench and `hubside bench` on the same models, threads and flags, side by side.

Prints a table and writes it as JSON to bench/results/. Targets (issue 3): generation >= 0.97 x llama-bench,
prompt processing >= 0.95 x, and time to first token of a 20-token prompt less than 50 ms over
llama-bench's time to process those 20 tokens.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from app.runtime.memory import physical_cores
from bench import save_results
from bench.llama_bench import ensure_llama_bench
from tests import models

N_PROMPT, N_GEN, ROUNDS, REPS = 512, 128, 5, 3


def llama_bench(binary: Path, model: Path, threads: int, n_prompt: int, n_gen: int, reps: int) -> list[Any]:
    out = subprocess.run(
        [str(binary), "-m", str(model), "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
         "-fa", "on", "-r", str(reps), "-o", "json"],
        capture_output=True, text=True, check=True,
        env={**os.environ, "LD_LIBRARY_PATH": str(binary.parent)},
    ).stdout  # fmt: skip
    rows: list[Any] = json.loads(out)
    return rows


def hubside_bench(model: Path, threads: int, n_prompt: int, n_gen: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "app", "bench", str(model), "--threads", str(threads),
         "-p", str(n_prompt), "-n", str(n_gen), "--reps", str(REPS), "--json"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    result: dict[str, Any] = json.loads(out)
    return result


def measure(name: str, model: Path, binary: Path, threads: int) -> dict[str, Any]:
    """Alternate the two tools ROUNDS times (each doing its warm-up and REPS repetitions) and compare
    medians: this machine's speed drifts by several percent from minute to minute, and alternating keeps
    that drift out of the ratios."""
    samples: dict[str, list[float]] = {
        key: [] for key in ("ref_pp", "ref_tg", "ref_pp20", "pp", "tg", "tg_sampled", "ttft")
    }
    for _ in range(ROUNDS):
        reference = llama_bench(binary, model, threads, N_PROMPT, N_GEN, REPS)
        samples["ref_pp"].append(next(r["avg_ts"] for r in reference if r["n_gen"] == 0))
        samples["ref_tg"].append(next(r["avg_ts"] for r in reference if r["n_prompt"] == 0))
        samples["ref_pp20"].append(llama_bench(binary, model, threads, 20, 0, REPS)[0]["avg_ns"] / 1e6)
        ours = hubside_bench(model, threads, N_PROMPT, N_GEN)
        samples["pp"].append(ours[f"pp{N_PROMPT}_tokens_per_s"][0])
        samples["tg"].append(ours[f"tg{N_GEN}_tokens_per_s"][0])
        samples["tg_sampled"].append(ours[f"tg{N_GEN}_sampled_tokens_per_s"][0])
        samples["ttft"].append(ours["ttft20_ms"][0])
    median = {key: statistics.median(values) for key, values in samples.items()}
    return {
        "model": name,
        "threads": threads,
        "rounds": ROUNDS,
        "pp512": {"llama_bench": median["ref_pp"], "hubside": median["pp"]},
        "tg128": {"llama_bench": median["ref_tg"], "hubside": median["tg"]},
        "tg128_sampled": {"llama_bench": median["ref_tg"], "hubside": median["tg_sampled"]},
        "ttft20_ms": {
            "llama_bench_pp20_ms": median["ref_pp20"],
            "hubside": median["ttft"],
            "over_ms": median["ttft"] - median["ref_pp20"],
        },
        "samples": samples,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | test | llama-bench | hubside | ratio | target | met |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for row in rows:
        for test, label, target in (
            ("pp512", "pp512 tok/s", 0.95),
            ("tg128", "tg128 tok/s (greedy)", 0.97),
            ("tg128_sampled", "tg128 tok/s (default sampling)", 0.97),
        ):
            ref, ours = row[test]["llama_bench"], row[test]["hubside"]
            ratio = ours / ref
            lines.append(
                f"| {row['model']} | {label} | {ref:.1f} | {ours:.1f} | {ratio:.3f} | >= {target} | "
                f"{'yes' if ratio >= target else 'NO'} |"
            )
        ttft = row["ttft20_ms"]
        lines.append(
            f"| {row['model']} | first token, 20-token prompt (ms) | {ttft['llama_bench_pp20_ms']:.1f} | "
            f"{ttft['hubside']:.1f} | +{ttft['over_ms']:.1f} ms | < +50 ms | "
            f"{'yes' if ttft['over_ms'] < 50 else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> int:
    binary = ensure_llama_bench()
    threads = physical_cores()
    rows = [
        measure("SmolLM2-135M Q4_1", models.fetch(models.SMOLLM2), binary, threads),
        measure("Gemma-3-270M Q4_K_M", models.fetch(models.GEMMA3), binary, threads),
    ]
    print(table(rows))
    machine = {
        "when": time.strftime("%Y%m%d-%H%M%S"),
        "machine": platform.platform(),
        "cpu": platform.processor(),
    }
    save_results("bench", {**machine, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
