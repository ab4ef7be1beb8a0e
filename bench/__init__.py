"""Benchmarks (`make bench`): speeds measured against llama.cpp's own llama-bench."""

import json
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def save_results(name: str, data: Any) -> Path:
    """Write one benchmark's results as bench/results/NAME-YYYYmmdd-HHMMSS.json and say where."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nwritten to {path}")
    return path
