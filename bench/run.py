"""`make bench`: llama-bench and `hubside bench` on the same models, threads and flags, side by side.

Prints a table and writes it as JSON to bench/results/. Targets (issue 3): generation >= 0.97 x llama-bench,
prompt processing >= 0.95 x, and time to first token of a 20-token prompt less than 50 ms over
llama-bench's time to process those 20 tokens.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from app.runtime.memory import physical_cores
from bench.llama_bench import ensure_llama_bench
from tests import models

RESULTS = Path(__file__).resolve().parent / "results"
N_PROMPT, N_GEN, REPS = 512, 128, 3


def llama_bench(binary: Path, model: Path, threads: int, n_prompt: int, n_gen: int, reps: int) -> list[Any]:
    out = subprocess.run(
        [str(binary), "-m", str(model), "-t", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
         "-fa", "on", "-r", str(reps), "-o", "json"],
        capture_output=True, text=True, check=True,
        env={**os.environ, "LD_LIBRARY_PATH": str(binary.parent)},
    ).stdout  # fmt: skip
    rows: list[Any] = json.loads(out)
    return rows


def hubside_bench(model: Path, threads: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "app", "bench", str(model), "--threads", str(threads),
         "-p", str(N_PROMPT), "-n", str(N_GEN), "--reps", str(REPS), "--json"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    result: dict[str, Any] = json.loads(out)
    return result


def measure(name: str, model: Path, binary: Path, threads: int) -> dict[str, Any]:
    reference = llama_bench(binary, model, threads, N_PROMPT, N_GEN, REPS)
    pp = next(r for r in reference if r["n_prompt"] == N_PROMPT and r["n_gen"] == 0)
    tg = next(r for r in reference if r["n_gen"] == N_GEN and r["n_prompt"] == 0)
    pp20 = llama_bench(binary, model, threads, 20, 0, 5)[0]
    ours = hubside_bench(model, threads)
    ttft_ms = ours["ttft20_ms"][0]
    pp20_ms = pp20["avg_ns"] / 1e6
    return {
        "model": name,
        "threads": threads,
        "pp512": {"llama_bench": pp["avg_ts"], "hubside": ours[f"pp{N_PROMPT}_tokens_per_s"][0]},
        "tg128": {"llama_bench": tg["avg_ts"], "hubside": ours[f"tg{N_GEN}_tokens_per_s"][0]},
        "ttft20_ms": {"llama_bench_pp20_ms": pp20_ms, "hubside": ttft_ms, "over_ms": ttft_ms - pp20_ms},
        "load_ms": ours["load_ms"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | test | llama-bench | hubside | ratio | target | met |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for row in rows:
        for test, target in (("pp512", 0.95), ("tg128", 0.97)):
            ref, ours = row[test]["llama_bench"], row[test]["hubside"]
            ratio = ours / ref
            lines.append(
                f"| {row['model']} | {test} tok/s | {ref:.1f} | {ours:.1f} | {ratio:.3f} | >= {target} | "
                f"{'yes' if ratio >= target else 'NO'} |"
            )
        ttft = row["ttft20_ms"]
        lines.append(
            f"| {row['model']} | TTFT, 20-token prompt (ms) | {ttft['llama_bench_pp20_ms']:.1f} | "
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
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report = {"when": stamp, "machine": platform.platform(), "cpu": platform.processor(), "rows": rows}
    path = RESULTS / f"bench-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
