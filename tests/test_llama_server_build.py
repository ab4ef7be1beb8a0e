"""llama.cpp's llama-server, the reference for `hubside serve`: its cached build beside llama-bench's, and the
helper that starts it for tests (tests/llama_server.py)."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from pathlib import Path

import llama_cpp
import pytest

from bench import llama_bench
from tests import llama_server


def test_server_is_cached_apart_from_llama_bench_whose_folder_stays_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLAMA_FLAGS", "-mno-amx-tile")
    version = llama_cpp.__version__
    # llama-bench's folder as it always was: a cache built before llama-server existed is still found
    key = hashlib.sha256(f"{version}|-mno-amx-tile|shared".encode()).hexdigest()[:12]
    bench = llama_bench.cached_binary("llama-bench")
    assert bench == llama_bench.CACHE / f"llama-bench-{version}-{key}" / "llama-bench"
    server = llama_bench.cached_binary("llama-server")
    assert server.name == "llama-server"
    assert server.parent.name.startswith(f"llama-server-{version}-")
    assert server.parent != bench.parent
    assert "llama-server" in (llama_bench.ensure_llama_server.__doc__ or "")


def test_a_build_with_other_flags_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llama_bench, "CACHE", tmp_path)
    monkeypatch.delenv("LLAMA_FLAGS", raising=False)
    assert llama_server.find_binary() is None
    other = tmp_path / f"llama-server-{llama_cpp.__version__}-0123456789ab" / "llama-server"
    other.parent.mkdir()
    other.touch()
    assert llama_server.find_binary() == other


def test_the_helper_skips_with_how_to_build_when_not_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path
) -> None:
    monkeypatch.setattr(llama_bench, "CACHE", tmp_path)
    not_built = pytest.raises(pytest.skip.Exception, match=r"llama-server not built yet.*build\(\)")
    with not_built, llama_server.llama_server(tiny_model):
        pass


def test_a_real_llama_server_answers_with_its_key_and_stops(tiny_model: Path) -> None:
    with llama_server.llama_server(tiny_model, ctx=256, api_key="k3y") as server:
        url = f"{server.base_url}/v1/completions"
        body = json.dumps({"prompt": "Hello", "max_tokens": 3, "ignore_eos": True}).encode()
        request = urllib.request.Request(url, body, {**server.headers(), "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert json.load(answer)["usage"]["completion_tokens"] == 3
        wrong = urllib.request.Request(url, body, {"Authorization": "Bearer no"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(wrong, timeout=60)
        assert refused.value.code == 401
        assert server.base_url.startswith("http://127.0.0.1:")
    assert server.process.poll() is not None  # stopped: no llama-server outlives the test
    assert not server.log.exists()
