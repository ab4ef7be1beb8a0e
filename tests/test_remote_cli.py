"""`hubside endpoints`, and `hubside run` / `hubside compare` with remote:NAME/MODEL_ID, in this process
(the keyring is the tests' in-memory one) against a real `hubside serve` on loopback."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cli import main
from app.paths import AppPaths
from app.server.service import Server
from tests.conftest import InMemoryKeyring
from tests.test_remote import KEY, serving

SECRET = "sk-very-secret-0123456789"


@pytest.fixture
def box(tiny_model: Path) -> Iterator[Server]:
    with serving(tiny_model) as server:
        yield server


def _out(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_endpoints_add_ls_rm_never_print_the_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, memory_keyring: InMemoryKeyring
) -> None:
    monkeypatch.setenv("BOX_KEY", SECRET)
    assert main(["endpoints", "add", "box", "http://127.0.0.1:9/", "--api-key-env", "BOX_KEY"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    assert main(["endpoints", "add", "lab", "https://lab.example/v1", "--api-key-stdin"]) == 0
    assert main(["endpoints", "ls", "--json"]) == 0
    out, err = _out(capsys)
    rows = {row["name"]: row for row in json.loads(out[out.index("[") :])}
    assert rows["box"]["url"] == "http://127.0.0.1:9/v1" and rows["box"]["key"] == "env:BOX_KEY"
    assert rows["lab"]["url"] == "https://lab.example/v1" and rows["lab"]["key"] == "keyring"
    assert main(["endpoints", "ls"]) == 0
    out2, err2 = _out(capsys)
    assert "box" in out2 and "lab" in out2
    stored = (AppPaths.from_env().config_dir / "endpoints.json").read_text()
    assert SECRET not in out + err + out2 + err2 + stored
    assert SECRET in memory_keyring.passwords.values()

    assert main(["endpoints", "rm", "lab"]) == 0
    assert SECRET not in memory_keyring.passwords.values()  # its key is forgotten too
    assert main(["endpoints", "rm", "lab"]) == 1
    _, err = _out(capsys)
    assert err.strip().count("\n") == 0 and "No endpoint called 'lab'" in err


def test_run_remote_has_the_keys_of_a_local_run(
    box: Server, tiny_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOX_KEY", KEY)
    assert main(["endpoints", "add", "box", box.base_url, "--api-key-env", "BOX_KEY"]) == 0
    ask = ["--prompt", "Say hi.", "--max-tokens", "6", "--temperature", "0", "--json"]
    _out(capsys)
    assert main(["run", str(tiny_model), "--ctx", "512", *ask]) == 0
    local = json.loads(_out(capsys)[0])
    assert main(["run", f"remote:box/{tiny_model}", *ask]) == 0  # the id holds slashes (and starts with one)
    out, err = _out(capsys)
    far = json.loads(out)
    assert set(far) == set(local)
    assert far["text"] and far["completion_tokens"] == 6 and far["finish_reason"] == "length"
    assert far["ttft_ms"] > 0 and far["arch"] == "remote"
    assert KEY not in out + err


def test_run_remote_failures_are_one_line(
    box: Server, tiny_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRONG", "wrong-key-0123456789")
    assert main(["endpoints", "add", "box", box.base_url, "--api-key-env", "WRONG"]) == 0
    _out(capsys)
    for model, expected in (
        (f"remote:box/{tiny_model}", "refused the key (HTTP 401)"),
        ("remote:nobox/x", "No endpoint called 'nobox'"),
        ("remote:box", "remote:NAME/MODEL_ID"),
    ):
        assert main(["run", model, "--prompt", "hi"]) == 1
        out, err = _out(capsys)
        assert out == "" and err.count("\n") == 1 and expected in err, err
        assert "wrong-key-0123456789" not in err
    logs = AppPaths.from_env().logs_dir
    written = "".join(f.read_text(errors="replace") for f in logs.rglob("*") if f.is_file())
    assert "refused the key" in written and "wrong-key-0123456789" not in written


def test_compare_a_local_model_and_a_remote_one(
    box: Server, tiny_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOX_KEY", KEY)
    assert main(["endpoints", "add", "box", box.base_url, "--api-key-env", "BOX_KEY"]) == 0
    _out(capsys)
    remote = f"remote:box/{tiny_model}"
    assert main(["compare", str(tiny_model), remote, "--prompt", "Hi", "--max-tokens", "5", "--json"]) == 0
    out, err = _out(capsys)
    results = json.loads(out)["results"]
    assert [r["path"] for r in results] == [str(tiny_model), remote]
    assert all(r["text"] and not r["error"] for r in results), results
    assert results[1]["completion_tokens"] == 5 and results[1]["ttft_ms"] > 0
    assert KEY not in out + err


@pytest.mark.usefixtures("no_keyring")
def test_a_typed_key_without_a_keyring_is_refused_with_the_way_out(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET + "\n"))
    assert main(["endpoints", "add", "lab", "https://lab.example/v1", "--api-key-stdin"]) == 1
    out, err = _out(capsys)
    assert "use --api-key-env VAR" in err and "HF_TOKEN" not in err and SECRET not in out + err
    assert main(["endpoints", "ls", "--json"]) == 0 and json.loads(_out(capsys)[0]) == []
