"""`hubside run` and `hubside bench` as a user runs them: real processes, real models."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TinyModelFactory
from tests.tinymodel import corrupt, truncate

ROOT = Path(__file__).resolve().parent.parent


def hubside(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.mark.real_model
def test_run_json_answers_once(smollm2_path: Path) -> None:
    result = hubside(
        "run", str(smollm2_path), "--prompt", "What is the capital of France?",
        "--system", "You are a helpful assistant.", "--temperature", "0", "--max-tokens", "32",
        "--ctx", "2048", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert "Paris" in reply["text"]
    assert reply["arch"] == "llama" and reply["quant"] == "Q4_1" and reply["ctx"] == 2048
    assert reply["n_params"] == 134_515_008
    for key in (
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms",
        "prompt_tokens_per_s",
        "tokens_per_s",
        "load_ms",
    ):
        assert reply[key] > 0, key
    assert reply["finish_reason"] in ("stop", "length")
    assert reply["reasoning"] == ""  # SmolLM2 does not think


def test_run_json_gives_reasoning_apart_from_the_text(tiny_model_factory: TinyModelFactory) -> None:
    template = (
        ROOT / "tests" / "chat_templates" / "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja"
    ).read_text()
    model = tiny_model_factory(chat_template=template)  # its prompt opens the thinking block
    result = hubside("run", str(model), "--prompt", "Hi", "--max-tokens", "8", "--ctx", "256", "--json")
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["reasoning"] and reply["text"] == ""  # cut at 8 tokens while still thinking
    assert reply["reasoning_ms"] > 0 and reply["completion_tokens"] == 8
    plain = hubside("run", str(model), "--prompt", "Hi", "--max-tokens", "8", "--ctx", "256")
    assert plain.returncode == 0 and plain.stdout.strip() == ""  # the thinking goes to stderr
    assert plain.stderr.strip()


def test_run_streams_plain_text(tiny_model: Path) -> None:
    result = hubside("run", str(tiny_model), "--prompt", "Hi", "--max-tokens", "5", "--ctx", "256")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert result.stderr == ""  # llama.cpp's log goes to the log files, not the terminal


def test_bad_inputs_are_one_clear_line(tiny_model_factory: TinyModelFactory, tmp_path: Path) -> None:
    tiny = tiny_model_factory()
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("just some text, not a model\n" * 10)
    cases = {
        "missing": (tmp_path / "nope.gguf", "No such model file"),
        "not_gguf": (not_gguf, "does not start with the GGUF magic bytes"),
        "truncated": (truncate(tiny, tiny.stat().st_size // 2, tmp_path / "half.gguf"), "runs past the end"),
        "bad_version": (corrupt(tiny, "version_max", tmp_path / "v.gguf"), "version 4294967295"),
        "too_big": (tiny_model_factory(context_length=2**27), "Not enough memory: needs about"),
    }
    for name, (path, message) in cases.items():
        extra = ["--ctx", str(2**27)] if name == "too_big" else []
        result = hubside("run", str(path), "--prompt", "hi", *extra)
        assert result.returncode == 1, name
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (name, result.stderr)
        assert lines[0].startswith("hubside: ") and message in lines[0], (name, lines[0])
        assert result.stdout == ""


def _read_until(stream: int, wanted: str, timeout: float, at_least: int = 0) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while (wanted not in seen or len(seen) < at_least) and time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.2)
        if ready:
            chunk = os.read(stream, 4096).decode(errors="replace")
            if not chunk:
                break
            seen += chunk
    return seen


def test_interactive_chat_ctrl_c_stops_the_reply_and_ctrl_d_quits(tiny_model: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "run", str(tiny_model), "--ctx", "512", "--max-tokens", "400"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdin and process.stdout and process.stderr
    try:
        assert "Ctrl-D quits" in _read_until(process.stderr.fileno(), "Ctrl-D quits", 60)
        process.stdin.write(b"Tell me a very long story.\n")
        process.stdin.flush()
        assert _read_until(process.stdout.fileno(), " ", 30, at_least=40)  # "> " and the reply streaming
        process.send_signal(signal.SIGINT)
        summary = _read_until(process.stderr.fileno(), "]", 30)
        assert "stopped]" in summary, summary
        process.stdin.close()  # Ctrl-D
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()


def test_bench_reports_speeds(tiny_model: Path) -> None:
    result = hubside("bench", str(tiny_model), "-p", "64", "-n", "16", "--reps", "2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("pp64_tokens_per_s", "tg16_tokens_per_s", "ttft20_ms"):
        mean, sd = report[key]
        assert mean > 0 and sd >= 0, key
    assert report["arch"] == "llama" and report["threads"] >= 1
