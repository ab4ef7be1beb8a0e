"""Downloads at internet speed: `hubside pull` beside the tools people download models with, all fetching
one GGUF file from the same Hub stand-in over https (a throw-away CA, trusted through SSL_CERT_FILE), the
stand-in in a process of its own. Two lines: unthrottled loopback, and the stand-in capping each
connection at 25 MB/s (as CDNs cap a connection, so that several connections beat one).

Anchors, each into a fresh folder (and a fresh cache or HUBSIDE_HOME), in alternated order each round:
  curl -o             the bytes written, no check
  curl+tee+sha256sum  the same verified work as ours: curl | tee FILE | sha256sum (two processes)
  hf download         huggingface_hub's CLI, fresh HF_HUB_CACHE, HF_HUB_DISABLE_XET; checks the size only
  aria2c -x8          aria2c -x8 -s8 (Debian's aria2; skipped with a note when absent), no check
  hubside pull        `python -m app pull REPO:QUANT`, process start-up and the sha256 check included
Targets (issue 16): unthrottled, hubside >= 1.0 x curl+tee+sha256sum and >= 1.0 x hf download; capped,
hubside >= 0.9 x aria2c -x8 and >= 5 x curl -o.

Run with `python -m bench.downloads [--rounds N] [--quick]` (--quick: SmolLM2, 98 MB, one round); prints a
table of medians and writes JSON to bench/results/downloads-<stamp>.json.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import save_results
from tests import models

CAP_MB_S = 25.0
REPO = "bench/model-GGUF"
ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# (line, anchor, factor): hubside's speed must be at least factor x the anchor's on that line
TARGETS = (
    ("unthrottled", "curl+tee+sha256sum", 1.0),
    ("unthrottled", "hf download", 1.0),
    ("capped", "aria2c -x8", 0.9),
    ("capped", "curl -o", 5.0),
)


@dataclass(frozen=True)
class Served:
    endpoint: str
    ca_file: Path
    model: Path
    sha256: str

    @property
    def url(self) -> str:
        return f"{self.endpoint}/{REPO}/resolve/main/{self.model.name}"

    def env(self, **extra: str) -> dict[str, str]:
        """A process environment that trusts the stand-in's CA and finds the Hub there."""
        trust = str(self.ca_file)
        env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY") and k != "HF_TOKEN"}
        return env | {
            "HF_ENDPOINT": self.endpoint,
            "HF_HOME": str(self.ca_file.parent / "hf-home"),  # no stored login: no token is read or sent
            "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",  # nor one from the keyring
            "SSL_CERT_FILE": trust,
            "REQUESTS_CA_BUNDLE": trust,
            "CURL_CA_BUNDLE": trust,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1",  # the stand-in's CDN speaks plain HTTP ranges, not Xet
            **extra,
        }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _serve(root: Path, ca_dir: Path, rate_mb_s: float) -> tuple[subprocess.Popen[str], str, Path]:
    """The stand-in over https in a process of its own: (process, endpoint, CA file)."""
    command = [sys.executable, "-m", "tests.hubstub", "--port", str(_free_port()), "--tls", str(ca_dir)]
    stub = subprocess.Popen(
        [*command, "--rate", str(rate_mb_s), str(root)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert stub.stdout is not None
    lines = [stub.stdout.readline() for _ in range(3)]  # Serving..., HF_ENDPOINT=..., SSL_CERT_FILE=...
    endpoint = lines[1].split()[0].removeprefix("HF_ENDPOINT=")
    return stub, endpoint, Path(lines[2].strip().removeprefix("SSL_CERT_FILE="))


def _run(command: list[str] | str, env: dict[str, str], **options: Any) -> str:
    done = subprocess.run(
        command, env=env, check=True, capture_output=True, text=True, timeout=600, cwd=ROOT, **options
    )
    return done.stdout


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


# --- the anchors: each downloads into `out` (empty) and returns the file it wrote -------------------------
# (hubside_pull also records in `pull_seconds` the transfer it reports: the Hub's answer to the rename)
def curl_plain(served: Served, out: Path) -> Path:
    target = out / served.model.name
    _run(["curl", "-sSfL", "-o", str(target), served.url], served.env())
    return target


def curl_tee_sha(served: Served, out: Path) -> Path:
    target = out / served.model.name
    pipeline = f"set -o pipefail; curl -sSfL '{served.url}' | tee '{target}' | sha256sum"
    printed = _run(["bash", "-c", pipeline], served.env())
    assert printed.split()[0] == served.sha256, "curl | tee | sha256sum: wrong hash"
    return target


def hf_download(served: Served, out: Path) -> Path:
    env = served.env(HF_HUB_CACHE=str(out / "hf-cache"))
    printed = _run([str(VENV_BIN / "hf"), "download", "--quiet", REPO, served.model.name], env)
    return Path(printed.strip().splitlines()[-1])


def aria2c(served: Served, out: Path) -> Path:
    command = ["aria2c", "-x8", "-s8", f"--ca-certificate={served.ca_file}", "--console-log-level=warn"]
    _run(
        [*command, "--summary-interval=0", "-d", str(out), "-o", served.model.name, served.url], served.env()
    )
    return out / served.model.name


def hubside_pull(served: Served, out: Path) -> Path:
    quant = served.model.stem.replace("-", ".").rsplit(".", 1)[-1].upper()  # ...q4_k_m.gguf: Q4_K_M
    env = served.env(HUBSIDE_HOME=str(out / "home"))
    printed = _run([sys.executable, "-m", "app", "pull", "--json", f"{REPO}:{quant}"], env)
    result = json.loads(printed.strip().splitlines()[-1])
    pull_seconds.append(result["download_s"])
    return Path(result["path"])


pull_seconds: list[float] = []

ANCHORS: dict[str, Callable[[Served, Path], Path]] = {
    "curl -o": curl_plain,
    "curl+tee+sha256sum": curl_tee_sha,
    "hf download": hf_download,
    "aria2c -x8": aria2c,
    "hubside pull": hubside_pull,
}


def measure_line(served: Served, work: Path, rounds: int, anchors: list[str]) -> dict[str, Any]:
    """Each anchor once per round (the order reversed every other round, so a drift of the machine hits
    all alike); the median seconds and MB/s of each."""
    size = served.model.stat().st_size
    times: dict[str, list[float]] = {name: [] for name in anchors}
    for round_number in range(rounds):
        order = anchors if round_number % 2 == 0 else anchors[::-1]
        for name in order:
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            os.sync()  # no write-back of the previous file still going on
            out.mkdir()
            started = time.perf_counter()
            written = ANCHORS[name](served, out)
            times[name].append(time.perf_counter() - started)
            assert written.stat().st_size == size, f"{name}: wrote {written.stat().st_size} bytes"
    rows: dict[str, Any] = {}
    for name, seconds in times.items():
        median = statistics.median(seconds)
        rows[name] = {"median_s": round(median, 3), "mb_s": round(size / median / 1e6, 1), "runs_s": seconds}
    transfer = statistics.median(pull_seconds[-rounds:])  # this line's pulls
    rows["hubside pull"] |= {"transfer_median_s": transfer, "transfer_mb_s": round(size / transfer / 1e6, 1)}
    return rows


def measure(model: Path, sha256: str, rounds: int) -> dict[str, Any]:
    anchors = [name for name in ANCHORS if name != "aria2c -x8" or shutil.which("aria2c")]
    notes = [] if "aria2c -x8" in anchors else ["aria2c not installed (apt-get install aria2): skipped"]
    lines: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as work_name:
        work = Path(work_name)
        (work / "hub" / REPO).mkdir(parents=True)
        (work / "hub" / REPO / model.name).symlink_to(model)
        for line, rate in (("unthrottled", 0.0), ("capped", CAP_MB_S)):
            stub, endpoint, ca_file = _serve(work / "hub", work / f"ca-{line}", rate)
            try:
                served = Served(endpoint, ca_file, model, sha256)
                started = time.perf_counter()
                _run(
                    ["curl", "-sSf", "-o", os.devnull, f"{endpoint}/api/models/{REPO}?blobs=true"],
                    served.env(),
                )
                first_info_s = time.perf_counter() - started
                lines[line] = {"first_model_info_s": round(first_info_s, 3)}
                lines[line] |= measure_line(served, work, rounds, anchors)
            finally:
                stub.terminate()
                stub.wait()
    return {"model": model.name, "bytes": model.stat().st_size, "rounds": rounds, "cap_mb_s": CAP_MB_S,
            "tls": True, "lines": lines, "targets": _verdicts(lines), "notes": notes}  # fmt: skip


def _verdicts(lines: dict[str, Any]) -> list[dict[str, Any]]:
    verdicts = []
    for line, anchor, factor in TARGETS:
        if anchor not in lines[line]:
            continue
        ratio = lines[line]["hubside pull"]["mb_s"] / lines[line][anchor]["mb_s"]
        verdicts.append({"line": line, "anchor": anchor, "target": factor, "ratio": round(ratio, 2),
                         "met": ratio >= factor})  # fmt: skip
    return verdicts


def print_table(results: dict[str, Any]) -> None:
    size_mb = results["bytes"] / 1e6
    print(f"\n{results['model']} ({size_mb:.0f} MB) over TLS, median of {results['rounds']} round(s), MB/s")
    anchors = [name for name in ANCHORS if name in results["lines"]["unthrottled"]]
    print("| line | " + " | ".join(anchors) + " |")
    print("|---|" + "---:|" * len(anchors))
    for line, rows in results["lines"].items():
        label = f"capped {results['cap_mb_s']:.0f} MB/s per connection" if line == "capped" else line
        cells = [f"{rows[name]['mb_s']} ({rows[name]['median_s']:.2f} s)" for name in anchors]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("\n| target | hubside / anchor | met |")
    print("|---|---:|---|")
    for verdict in results["targets"]:
        met = "yes" if verdict["met"] else "NO"
        target = f"{verdict['line']}: >= {verdict['target']} x {verdict['anchor']}"
        print(f"| {target} | {verdict['ratio']} | {met} |")
    for line, rows in results["lines"].items():
        pulled = rows["hubside pull"]
        print(f"{line}: hubside pull's own transfer (the Hub's answer to the verified rename): "
              f"{pulled['transfer_median_s']:.2f} s, {pulled['transfer_mb_s']} MB/s; the rest of its "
              f"{pulled['median_s']:.2f} s is the process start and the Hub's model info")  # fmt: skip
        print(f"stand-in's first model info ({line}): {rows['first_model_info_s']:.2f} s")
    for note in results["notes"]:
        print(f"note: {note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per line (default 3)")
    parser.add_argument("--quick", action="store_true", help="SmolLM2 (98 MB) and one round")
    args = parser.parse_args()
    model = models.SMOLLM2 if args.quick else models.GEMMA3
    # An installed app has its bytecode; this checkout may have none (PYTHONDONTWRITEBYTECODE), and
    # compiling it again at every `hubside pull` cost 0.3 s of each run.
    compileall.compile_dir(ROOT / "app", quiet=1)
    results = measure(models.fetch(model), model.sha256, 1 if args.quick else args.rounds)
    print_table(results)
    save_results("downloads", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
