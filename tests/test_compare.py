"""Compare with the real SmolLM2 and Gemma models: fair and parallel runs, failures, votes, reports."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest

from app.compare.elo import Vote, leaderboard
from app.compare.report import to_html, to_json
from app.compare.runner import FAIR, PARALLEL, Column, CompareSettings, Comparison
from app.compare.store import CompareStore
from app.errors import AppError, ErrorKind
from app.paths import AppPaths
from app.runtime.protocol import LoadParams, SamplingParams

pytestmark = pytest.mark.real_model
PROMPT = "What is the capital of France?"
GREEDY = SamplingParams(temperature=0.0, seed=7)
HOSTILE = "Paris. <script>alert(1)</script>"


def _comparison(models: list[Path], mode: str = FAIR, max_tokens: int = 24) -> Comparison:
    settings = CompareSettings(
        system="You are a helpful assistant.", sampling=GREEDY, max_tokens=max_tokens, mode=mode
    )
    return Comparison(AppPaths.from_env().ensure(), [LoadParams(m, n_ctx=1024) for m in models], settings)


def test_a_fair_run_gives_both_outputs_and_numbers_and_repeats_exactly(
    smollm2_path: Path, gemma3_path: Path
) -> None:
    seen: list[tuple[int, str]] = []
    first = _comparison([smollm2_path, gemma3_path])
    columns = first.turn(PROMPT, lambda index, column: seen.append((index, column.state)))
    smol, gemma = columns
    texts = [smol.text, gemma.text]  # (the columns go on changing with the next turn)
    assert "Paris" in smol.text and gemma.text.strip()
    for column in columns:
        assert column.state == "done" and not column.error
        assert column.tokens_per_s > 0 and column.prompt_tokens_per_s > 0 and column.ttft_ms > 0
        assert column.load_ms > 0 and column.peak_memory_bytes > 50 * 1024**2 and column.completion_tokens > 0
        assert column.tokens_over_time[-1][1] == column.completion_tokens
    states = [state for index, state in seen if state in ("loading", "done")]
    assert states == ["loading", "done", "loading", "done"]  # one after another: each alone on the machine
    assert [i for i, state in seen if state == "loading"] == [0, 1]
    again = _comparison([smollm2_path, gemma3_path]).turn(PROMPT)
    assert [c.text for c in again] == texts  # same seed, temperature 0: the same texts

    follow_up = first.turn("And of Germany?")  # each column keeps its own conversation
    assert [len(c.messages) for c in follow_up] == [4, 4]
    assert follow_up[0].messages[1].content == texts[0] and "Berlin" in follow_up[0].text
    data = first.data()
    assert [len(c["turns"]) for c in data["columns"]] == [2, 2]
    assert data["columns"][0]["sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_parallel_runs_only_when_the_models_fit_together(smollm2_path: Path, gemma3_path: Path) -> None:
    comparison = _comparison([smollm2_path, gemma3_path], PARALLEL, max_tokens=8)
    with pytest.raises(AppError) as refused:
        comparison.check_parallel(available=600 * 1024**2)  # a small machine
    assert refused.value.kind is ErrorKind.OUT_OF_MEMORY
    assert "together" in refused.value.user_message and "Fair mode" in refused.value.user_message
    columns = comparison.turn(PROMPT)  # this machine has room for both
    assert all(c.state == "done" and c.text for c in columns)


def test_a_crashed_column_fails_alone(smollm2_path: Path, gemma3_path: Path, tmp_path: Path) -> None:
    comparison = _comparison([smollm2_path, gemma3_path], max_tokens=200)
    killed: list[int] = []

    def kill_the_first(index: int, column: Column) -> None:
        if index == 0 and column.state == "answering" and not killed and column.text:
            pid = comparison._engines[0].pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    first, second = comparison.turn("Write a long story about a dragon.", kill_the_first)
    assert killed and first.state == "failed" and "SIGKILL" in first.error
    assert second.state == "done" and second.text and not second.error
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 64)
    bad, good = _comparison([broken, smollm2_path], max_tokens=8).turn(PROMPT)
    assert bad.state == "failed" and "not a usable GGUF model" in bad.error and good.state == "done"


def test_elo_matches_hand_computed_values() -> None:
    votes = [Vote("A", "B", "a"), Vote("A", "B", "tie"), Vote("C", "A", "both_bad")]
    board = {s.model: s for s in leaderboard(votes)}
    # vote 1: expected 0.5, A wins: A 1016, B 984
    # vote 2: expected for A = 1 / (1 + 10 ** (-32 / 400)) = 0.545922; A += 32 * (0.5 - 0.545922) = -1.469504
    # vote 3: C (1000) vs A (1014.530496), scored 0.5 each: expected for C = 1 / (1 + 10 ** (14.530496 / 400))
    e2 = 1 / (1 + 10 ** (-32 / 400))
    a2, b2 = 1016 + 32 * (0.5 - e2), 984 - 32 * (0.5 - e2)
    e3 = 1 / (1 + 10 ** ((a2 - 1000) / 400))
    c3, a3 = 1000 + 32 * (0.5 - e3), a2 - 32 * (0.5 - e3)
    assert board["A"].rating == pytest.approx(a3) and board["B"].rating == pytest.approx(b2)
    assert board["C"].rating == pytest.approx(c3)
    assert (board["A"].votes, board["B"].votes, board["C"].votes) == (3, 2, 1)
    # A scored 1, 0.5, 0.5 over 3 votes: p = 2/3; interval = 1.96 * 400 / (ln 10 * sqrt(3 * 2/3 * 1/3))
    assert board["A"].interval == pytest.approx(
        1.96 * 400 / (math.log(10) * math.sqrt(3 * (2 / 3) * (1 / 3)))
    )
    assert [s.model for s in leaderboard(votes)] == ["A", "C", "B"]


def test_runs_and_votes_are_kept_and_reports_are_self_contained(tmp_path: Path) -> None:
    store = CompareStore(AppPaths.from_env().ensure().data_dir / "compare.sqlite3")
    metrics = {"tokens_per_s": 90.0, "prompt_tokens_per_s": 300.0, "ttft_ms": 50.0, "load_ms": 120.0,
               "completion_tokens": 7, "finish_reason": "stop", "peak_memory_bytes": 300 << 20}  # fmt: skip
    data = {
        "settings": {"mode": "fair", "seed": 7},
        "columns": [
            {"model": "Small <b>one</b>", "path": "/m/a.gguf", "sha256": "ab" * 32,
             "turns": [{"prompt": PROMPT, "text": HOSTILE, "error": "", "metrics": metrics}]},
            {"model": "Other", "path": "/m/b.gguf", "sha256": "cd" * 32,
             "turns": [{"prompt": PROMPT, "text": "I think it is Paris.", "error": "", "metrics": metrics}]},
        ],
    }  # fmt: skip
    run_id = store.save_run(PROMPT, data)
    vote = Vote("ab" * 32, "cd" * 32, "a", "Small <b>one</b> (a.gguf)", "Other (b.gguf)")
    store.vote(run_id, vote)
    store.close()
    again = CompareStore(AppPaths.from_env().data_dir / "compare.sqlite3")
    (run,) = again.runs()
    assert run.id == run_id and run.data == data and again.votes() == [vote]
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
    page = to_html(run, {"Generation speed": png, "Tokens over time": png})
    assert "Paris. &lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script" not in page
    assert "I think it is Paris." in page and page.count("src='data:image/png;base64,") == 2
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    assert json.loads(to_json(run))["columns"][1]["turns"][0]["text"] == "I think it is Paris."


def test_cli_compare_json(smollm2_path: Path, gemma3_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from app.cli import main

    models = [str(smollm2_path), str(gemma3_path)]
    code = main(
        ["compare", *models, "--prompt", PROMPT, "--max-tokens", "8", "--json", "--system", "Be helpful."]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in result["results"]] == [str(smollm2_path), str(gemma3_path)]
    assert all(r["tokens_per_s"] > 0 and r["text"] for r in result["results"]) and result["mode"] == "fair"
    assert main(["compare", str(smollm2_path), "--prompt", "x"]) == 1
    assert "Compare takes 2 to 4 models." in capsys.readouterr().err
