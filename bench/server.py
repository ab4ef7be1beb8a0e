"""`hubside serve` beside llama.cpp's own `llama-server` (built once from the same llama-cpp-python source,
cached): both OpenAI-compatible servers on the same model, threads, context, batch (512) and flash attention
(on), measured in one run, the order alternated every round, over plain HTTP from one client (http.client,
the same for both, a fresh connection per request as curl makes).

Lines, on SmolLM2 (chat, /v1/chat/completions) and Gemma 3 (a base model, /v1/completions):
  one client     completion tokens/s of one non-streamed request, request to last byte (both servers with
                 one slot)
  4 clients      aggregate completion tokens/s of 4 requests sent at once (llama-server -np 4, hubside
                 --parallel 4), the first request out to the last byte in
  first token    ms from a streamed request to its first chunk with content (one slot)
Both get the same request bodies: greedy sampling and a prompt that counts, so that a reply runs long;
`ignore_eos` only if both servers accept it (llama-server does; hubside refuses fields it does not know), and
tokens are the replies' own `usage.completion_tokens`. Each prompt starts with a fresh number: no server
reuses an earlier prompt's cache.
Targets (issue 17): one client >= 0.95 x llama-server, 4 clients >= 0.9 x llama-server -np 4, first token
within 10 ms of llama-server's. A verdict is the median of the rounds' paired values (hubside / llama-server
within a round, or hubside - llama-server for the first token), which a drift of a busy machine moves less
than a ratio of medians; the table shows the medians.

Run with `python -m bench.server [--rounds N] [--max-tokens N] [--threads N] [--quick]` (--quick: SmolLM2,
2 rounds); prints a table of medians and writes JSON to bench/results/server-<stamp>.json.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.runtime.memory import physical_cores
from bench import save_results
from tests import llama_server, models

ROOT = Path(__file__).resolve().parent.parent
CTX = 1024  # each sequence's context, in both servers
CLIENTS = 4
# (line, factor): hubside / llama-server must be >= factor (tokens/s); first token: at most +10 ms
TARGETS = (("one client", 0.95), ("4 clients", 0.9))
TTFT_MARGIN_MS = 10.0
_nonce = itertools.count(1)


@dataclass(frozen=True)
class BenchModel:
    label: str
    model: models.PyPIModel
    chat: bool  # chat completions; else a base model on /v1/completions


MODELS = (
    BenchModel("SmolLM2-135M-Instruct Q4_1", models.SMOLLM2, chat=True),
    BenchModel("Gemma-3-270M Q4_K_M", models.GEMMA3, chat=False),
)


@dataclass
class Server:
    """A running server: where it listens, its key, and how to stop it."""

    name: str
    port: int
    api_key: str
    stop: Callable[[], None]
    ignore_eos: bool = True  # whether requests carry ignore_eos (cleared when any server refuses it)
    completion_tokens: list[int] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"}


# --- requests --------------------------------------------------------------------------------------------
def _body(
    bench_model: BenchModel, model: Path, server: Server, max_tokens: int, stream: bool
) -> dict[str, Any]:
    nonce = next(_nonce)
    body: dict[str, Any] = {"model": str(model), "max_tokens": max_tokens, "temperature": 0.0, "seed": 1}
    if bench_model.chat:
        body["messages"] = [
            {"role": "system", "content": f"Request {nonce}."},
            {"role": "user", "content": "Count from 1 to 1000, one number per line. Do not stop early."},
        ]
    else:
        body["prompt"] = f"Request {nonce}. Counting: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    if server.ignore_eos:
        body["ignore_eos"] = True
    return body


def _path(bench_model: BenchModel) -> str:
    return "/v1/chat/completions" if bench_model.chat else "/v1/completions"


def _send(server: Server, path: str, body: dict[str, Any]) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    connection.request("POST", path, json.dumps(body).encode(), server.headers())
    return connection.getresponse()


def complete(server: Server, bench_model: BenchModel, model: Path, max_tokens: int) -> tuple[int, float]:
    """One non-streamed request: (completion tokens, seconds from request to last byte)."""
    started = time.perf_counter()
    answer = _send(server, _path(bench_model), _body(bench_model, model, server, max_tokens, stream=False))
    data = answer.read()
    seconds = time.perf_counter() - started
    if answer.status != 200:
        raise RuntimeError(f"{server.name}: {answer.status} {data[:500]!r}")
    tokens = int(json.loads(data)["usage"]["completion_tokens"])
    server.completion_tokens.append(tokens)
    return tokens, seconds


def first_token_s(server: Server, bench_model: BenchModel, model: Path) -> float:
    """Seconds from a streamed request to its first chunk with content (the rest is read to the end)."""
    started = time.perf_counter()
    answer = _send(server, _path(bench_model), _body(bench_model, model, server, 8, stream=True))
    if answer.status != 200:
        raise RuntimeError(f"{server.name}: {answer.status} {answer.read()[:500]!r}")
    first: float | None = None
    while line := answer.readline():
        if first is None and line.startswith(b"data: {") and _has_content(json.loads(line[6:])):
            first = time.perf_counter() - started
    if first is None:
        raise RuntimeError(f"{server.name}: a streamed reply without content")
    return first


def _has_content(chunk: dict[str, Any]) -> bool:
    for choice in chunk.get("choices") or ():
        if (choice.get("delta") or {}).get("content") or choice.get("text"):
            return True
    return False


# --- the three lines -------------------------------------------------------------------------------------
def one_client(server: Server, bench_model: BenchModel, model: Path, max_tokens: int) -> float:
    tokens, seconds = complete(server, bench_model, model, max_tokens)
    return tokens / seconds


def concurrent_clients(server: Server, bench_model: BenchModel, model: Path, max_tokens: int) -> float:
    """Aggregate tokens/s of CLIENTS requests released at once: all their tokens over first out to last in."""
    barrier = threading.Barrier(CLIENTS)
    results: list[tuple[float, float, int]] = []
    errors: list[BaseException] = []

    def client() -> None:
        barrier.wait()
        started = time.perf_counter()
        try:
            tokens, _ = complete(server, bench_model, model, max_tokens)
        except BaseException as error:  # re-raised below, in the main thread
            errors.append(error)
            return
        results.append((started, time.perf_counter(), tokens))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    wall = max(end for _, end, _ in results) - min(start for start, _, _ in results)
    return sum(tokens for _, _, tokens in results) / wall


def warm_up(server: Server, bench_model: BenchModel, model: Path) -> bool:
    """Load the model (hubside loads on the first request); whether the server accepts ignore_eos."""
    for ignore_eos in (True, False):
        server.ignore_eos = ignore_eos
        answer = _send(server, _path(bench_model), _body(bench_model, model, server, 4, stream=False))
        data = answer.read()
        if answer.status == 200:
            return ignore_eos
        if answer.status != 400:
            break
    raise RuntimeError(f"{server.name}: warm-up answered {answer.status} {data[:500]!r}")


# --- the servers -----------------------------------------------------------------------------------------
@contextmanager
def reference_server(model: Path, parallel: int, threads: int) -> Iterator[Server]:
    key = secrets.token_urlsafe(16)
    started = llama_server.start(model, ctx=CTX, parallel=parallel, threads=threads, api_key=key)
    try:
        yield Server("llama-server", started.port, key, started.stop)
    finally:
        started.stop()


def hubside_available() -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--help"], cwd=ROOT, capture_output=True, timeout=60
    )
    return done.returncode == 0


@contextmanager
def hubside_server(model: Path, home: Path, parallel: int, threads: int) -> Iterator[Server]:
    """`hubside serve MODEL` (the request names it by its path) on its own HUBSIDE_HOME; ready once
    /v1/models answers (the model loads on the first request: the warm-up's)."""
    key, port = secrets.token_urlsafe(16), llama_server.free_port()
    command = [sys.executable, "-m", "app", "serve", "--port", str(port), "--api-key", key]
    command += ["--parallel", str(parallel), "--ctx", str(CTX), "--threads", str(threads), str(model)]
    log = home / f"serve-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "HUBSIDE_HOME": str(home)},
        )  # fmt: skip

    def stop() -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # as Ctrl-C: the server stops its engines on the way out
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    server = Server("hubside", port, key, stop)
    try:
        _wait_models(server, process, log)
        yield server
    finally:
        stop()


def _wait_models(server: Server, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/v1/models", headers=server.headers())
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"hubside serve exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(request, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"hubside serve not ready after {timeout_s:.0f} s:\n{log.read_text()[-2000:]}")


# --- one model -------------------------------------------------------------------------------------------
def _alternate(
    servers: list[Server], rounds: int, measure: Callable[[Server], float]
) -> dict[str, list[float]]:
    """Each server once per round, the order reversed every other round (a drift hits both alike)."""
    samples: dict[str, list[float]] = {server.name: [] for server in servers}
    for round_number in range(rounds):
        for server in servers if round_number % 2 == 0 else servers[::-1]:
            samples[server.name].append(measure(server))
    return samples


def measure_model(
    bench_model: BenchModel, with_hubside: bool, rounds: int, max_tokens: int, threads: int
) -> dict[str, Any]:
    model = models.fetch(bench_model.model)
    lines: dict[str, dict[str, list[float]]] = {}
    ignore_eos: dict[str, bool] = {}
    tokens: dict[str, list[int]] = {}
    for parallel in (1, CLIENTS):
        with ExitStack() as stack:
            home = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-serve-"))  # removed last
            servers = [stack.enter_context(reference_server(model, parallel, threads))]
            if with_hubside:
                servers.append(stack.enter_context(hubside_server(model, Path(home), parallel, threads)))
            for server in servers:
                ignore_eos[server.name] = warm_up(server, bench_model, model)
            for server in servers:  # the same bodies to both
                server.ignore_eos = all(ignore_eos.values())
            if parallel == 1:
                lines["one client"] = _alternate(
                    servers, rounds, lambda s: one_client(s, bench_model, model, max_tokens)
                )
                lines["first token"] = _alternate(
                    servers, rounds, lambda s: first_token_s(s, bench_model, model) * 1000
                )
            else:
                lines["4 clients"] = _alternate(
                    servers, rounds, lambda s: concurrent_clients(s, bench_model, model, max_tokens)
                )
            for server in servers:
                tokens.setdefault(server.name, []).extend(server.completion_tokens)
    medians = {
        line: {name: round(statistics.median(runs), 1) for name, runs in by.items()}
        for line, by in lines.items()
    }
    return {
        "model": bench_model.label,
        "endpoint": "/v1/chat/completions" if bench_model.chat else "/v1/completions",
        "medians": medians,
        "runs": lines,
        "ignore_eos": ignore_eos,
        "completion_tokens_median": {name: statistics.median(t) for name, t in tokens.items() if t},
        "targets": _verdicts(lines) if with_hubside else [],
    }


def _verdicts(lines: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """Each target on the median of the rounds' paired values, with their range."""
    verdicts = []
    for line, factor in TARGETS:
        runs = lines[line]
        ratios = [ours / ref for ours, ref in zip(runs["hubside"], runs["llama-server"], strict=True)]
        verdicts.append(_verdict(line, f">= {factor} x", ratios, statistics.median(ratios) >= factor))
    first = lines["first token"]
    over = [ours - ref for ours, ref in zip(first["hubside"], first["llama-server"], strict=True)]
    verdicts.append(
        _verdict(
            "first token", f"<= +{TTFT_MARGIN_MS:.0f} ms", over, statistics.median(over) <= TTFT_MARGIN_MS
        )
    )
    return verdicts


def _verdict(line: str, target: str, paired: list[float], met: bool) -> dict[str, Any]:
    value, low, high = (round(v, 3) for v in (statistics.median(paired), min(paired), max(paired)))
    return {
        "line": line,
        "target": target,
        "value": value,
        "range": [low, high],
        "paired": paired,
        "met": met,
    }


def print_table(results: dict[str, Any]) -> None:
    print(f"\nthreads {results['threads']}, context {results['ctx']} per sequence, max_tokens "
          f"{results['max_tokens']}, greedy; median of {results['rounds']} round(s)")  # fmt: skip
    names = ["llama-server", "hubside"] if results["hubside"] else ["llama-server"]
    units = {"one client": "tokens/s", "4 clients": "tokens/s, aggregate", "first token": "ms"}
    print("| model | line | " + " | ".join(names) + " |")
    print("|---|---|" + "---:|" * len(names))
    for row in results["models"]:
        for line, by in row["medians"].items():
            print(
                f"| {row['model']} | {line} ({units[line]}) | " + " | ".join(str(by[n]) for n in names) + " |"
            )
    if results["hubside"]:
        print("\n| model | target | hubside vs llama-server | met |")
        print("|---|---|---:|---|")
        for row in results["models"]:
            for verdict in row["targets"]:
                met = "yes" if verdict["met"] else "NO"
                low, high = verdict["range"]
                if verdict["line"] == "first token":
                    value = f"{verdict['value']:+.1f} ms ({low:+.1f} to {high:+.1f})"
                else:
                    value = f"{verdict['value']:.3f} x ({low:.2f} to {high:.2f})"
                print(f"| {row['model']} | {verdict['line']}: {verdict['target']} | {value} | {met} |")
    for row in results["models"]:
        print(f"{row['model']}: completion tokens per reply {row['completion_tokens_median']}, "
              f"ignore_eos accepted {row['ignore_eos']} (sent only when all accept it)")  # fmt: skip
    for note in results["notes"]:
        print(f"note: {note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds per line (default 5)")
    parser.add_argument("--max-tokens", type=int, default=128, help="tokens per reply (default 128)")
    parser.add_argument("--threads", type=int, help="threads of both servers (default: physical cores)")
    parser.add_argument("--quick", action="store_true", help="SmolLM2 only, 2 rounds")
    parser.add_argument("--reference-only", action="store_true", help="llama-server alone")
    args = parser.parse_args()
    llama_server.build()
    with_hubside = not args.reference_only and hubside_available()
    notes = (
        [] if with_hubside or args.reference_only else ["`hubside serve` not available: llama-server only"]
    )
    rounds, threads = (2 if args.quick else args.rounds), args.threads or physical_cores()
    chosen = MODELS[:1] if args.quick else MODELS
    rows = [measure_model(m, with_hubside, rounds, args.max_tokens, threads) for m in chosen]
    results = {
        "when": time.strftime("%Y%m%d-%H%M%S"),
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "ctx": CTX,
        "max_tokens": args.max_tokens,
        "rounds": rounds,
        "hubside": with_hubside,
        "models": rows,
        "notes": notes,
    }
    print_table(results)
    save_results("server", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
