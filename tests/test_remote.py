"""Models served elsewhere, against real servers on loopback: `hubside serve` in this process (a real
engine process and llama.cpp behind it) and llama.cpp's own llama-server; and the failures a network has
(refused, TLS, wrong key, unknown model, a server that accepts and never answers, a stream cut off)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.compare.runner import CompareSettings, Comparison
from app.errors import AppError, ErrorKind
from app.paths import AppPaths
from app.remote.client import offered_models
from app.remote.endpoints import Endpoint, RemoteModel, split_remote
from app.remote.engine import CUT, RemoteEngine
from app.runtime.protocol import (
    ChatMessage,
    Event,
    Finished,
    GenerateRequest,
    LoadParams,
    Notice,
    Piece,
    SamplingParams,
)
from app.server.models import Catalog, HostOptions
from app.server.service import Address, Server
from tests.llama_server import llama_server
from tests.test_server import _record
from tests.tls_helpers import TLSHubStub, make_ca

KEY = "remote-test-key-0123456789"
QUESTION = (ChatMessage("user", "Tell me a long story about a cat."),)


@contextmanager
def serving(model: Path) -> Iterator[Server]:
    """`hubside serve` of `model` on a free loopback port (its model id is the file's path)."""
    paths = AppPaths.from_env().ensure()
    options = HostOptions(parallel=1, queue=8, n_ctx=1024, n_threads=2)
    server = Server(paths, Catalog(lambda: [], [model]), Address("127.0.0.1", 0), options, KEY)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def hubside(tiny_model: Path) -> Iterator[Server]:
    with serving(tiny_model) as server:
        yield server


def remote(url: str, model_id: str, key: str | None = KEY, first_token_s: float = 60) -> RemoteModel:
    return RemoteModel(Endpoint("box", url, None, first_token_s), model_id, key)


def request(engine: RemoteEngine, max_tokens: int = 16) -> GenerateRequest:
    greedy = SamplingParams(temperature=0.0, seed=1)
    return GenerateRequest(engine.new_request_id(), QUESTION, sampling=greedy, max_tokens=max_tokens)


def reply(events: Iterator[Event]) -> tuple[str, Finished, list[str]]:
    text, notices = [], []
    for event in events:
        if isinstance(event, Piece):
            text.append(event.text)
        elif isinstance(event, Notice):
            notices.append(event.text)
        elif isinstance(event, Finished):
            return "".join(text), event, notices
    raise AssertionError("no Finished event")


def test_remote_names_split_at_the_first_slash() -> None:
    assert split_remote("remote:box/Qwen/Qwen3-8B") == ("box", "Qwen/Qwen3-8B")
    assert split_remote("/models/x.gguf") is None
    with pytest.raises(AppError):
        split_remote("remote:box")


def test_a_reply_streamed_from_hubside_serve(hubside: Server, tiny_model: Path) -> None:
    engine = RemoteEngine(remote(hubside.base_url, str(tiny_model)))  # the id holds slashes
    model = engine.load()
    assert model.name == str(tiny_model) and model.arch == "remote"
    text, done, _ = reply(engine.generate(request(engine, 12)))
    stats = done.stats
    assert text and stats.finish_reason == "length"
    assert stats.completion_tokens == 12 and stats.prompt_tokens > 5  # from the usage chunk
    assert stats.ttft_ms > 0 and stats.tokens_per_s > 0
    print(f"hubside serve: ttft {stats.ttft_ms:.1f} ms, {stats.tokens_per_s:.0f} tok/s over loopback")


@pytest.mark.real_model
def test_stop_closes_the_stream_and_the_server_stops_generating(smollm2_path: Path) -> None:
    with serving(smollm2_path) as server:  # a real model: slow enough to stop mid-reply
        engine = RemoteEngine(remote(server.base_url, str(smollm2_path)))
        pieces = 0
        for event in engine.generate(request(engine, 900)):
            if isinstance(event, Piece):
                pieces += 1
                if pieces == 3:
                    stopped_at = time.monotonic()
                    engine.stop()
            if isinstance(event, Finished):
                break
        assert isinstance(event, Finished) and event.stats.finish_reason == "stopped"
        assert pieces <= 4 and time.monotonic() - stopped_at < 0.5  # nothing after the stop
        record = _record(server, lambda r: r.finish_reason != "" or r.status != 200)
        assert record.finish_reason == "stopped" and record.completion_tokens < 200, record
        print(f"the server stopped after {record.completion_tokens} tokens")


def test_a_wrong_key_is_one_clear_refusal(hubside: Server, tiny_model: Path) -> None:
    engine = RemoteEngine(remote(hubside.base_url, str(tiny_model), key="wrong-key-abcdef"))
    with pytest.raises(AppError) as refused:
        engine.load()
    assert refused.value.kind is ErrorKind.PERMISSION and "401" in refused.value.user_message
    assert "wrong-key-abcdef" not in str(refused.value)


def test_an_unknown_model_is_named_with_the_ones_offered(hubside: Server, tiny_model: Path) -> None:
    engine = RemoteEngine(remote(hubside.base_url, "no/such-model"))
    with pytest.raises(AppError) as missing:
        engine.load()
    assert missing.value.kind is ErrorKind.NOT_FOUND and str(tiny_model) in missing.value.user_message
    with pytest.raises(AppError) as asked:  # asked without the check: the server's 404
        reply(engine.generate(request(engine)))
    assert asked.value.kind is ErrorKind.NOT_FOUND and "404" in asked.value.user_message


def test_a_server_that_accepts_and_never_answers_times_out() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens; the kernel accepts; nobody answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        engine = RemoteEngine(remote(url, "m", first_token_s=1.0))
        for call in (engine.load, lambda: reply(engine.generate(request(engine)))):
            started = time.monotonic()
            with pytest.raises(AppError) as silence:
                call()
            waited = time.monotonic() - started
            assert (
                silence.value.kind is ErrorKind.NETWORK
                and "sent nothing for 1 s" in silence.value.user_message
            )
            assert 0.9 < waited < 5, waited


def test_nothing_listening_is_unreachable_at_once() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(AppError) as unreachable:
        RemoteEngine(remote(f"http://127.0.0.1:{port}", "m")).load()
    assert unreachable.value.kind is ErrorKind.NETWORK and "Can't reach box" in unreachable.value.user_message
    assert time.monotonic() - started < 5


def test_a_certificate_nobody_trusts_is_refused(tmp_path: Path) -> None:
    with TLSHubStub(make_ca(tmp_path / "ca").server_context()) as stub:
        engine = RemoteEngine(remote(stub.endpoint, "m"))
        with pytest.raises(AppError) as refused:
            engine.load()
    assert refused.value.kind is ErrorKind.TLS and "could not be verified" in refused.value.user_message
    assert KEY not in str(refused.value)


def test_compare_a_local_model_with_a_remote_one(hubside: Server, tiny_model: Path) -> None:
    columns = [LoadParams(tiny_model, n_ctx=1024, n_threads=2), remote(hubside.base_url, str(tiny_model))]
    comparison = Comparison(AppPaths.from_env().ensure(), columns, CompareSettings(max_tokens=8))
    local, far = comparison.turn("Say hello.")
    assert local.state == far.state == "done", (local.error, far.error)
    assert local.text and far.text and far.completion_tokens == 8 and far.ttft_ms > 0
    saved = comparison.data()["columns"]
    assert saved[1]["path"] == f"remote:box/{tiny_model}" and saved[1]["sha256"] == ""
    assert KEY not in str(comparison.data())


@pytest.mark.real_model
def test_llama_server_streams_and_its_death_mid_reply_keeps_the_text(smollm2_path: Path) -> None:
    with llama_server(smollm2_path, api_key=KEY) as server:
        model_id = offered_models(remote(server.base_url, ""))[0]  # llama-server's name for its model
        engine = RemoteEngine(remote(server.base_url, model_id))
        assert engine.load().name == model_id
        text, done, _ = reply(engine.generate(request(engine, 24)))
        assert text and done.stats.finish_reason in ("stop", "length") and done.stats.completion_tokens > 0
        print(f"llama-server: ttft {done.stats.ttft_ms:.1f} ms, {done.stats.tokens_per_s:.0f} tok/s")

        for event in engine.generate(request(engine, 1500)):  # stop: the stream closes, the slot frees
            if isinstance(event, Piece) and event.tokens == 3:
                engine.stop()
        assert isinstance(event, Finished) and event.stats.finish_reason == "stopped"
        started = time.monotonic()
        _, after, _ = reply(engine.generate(request(engine, 2)))  # one slot: it waits if the first goes on
        assert after.stats.completion_tokens == 2 and time.monotonic() - started < 30
        print(f"after a stop the next reply took {time.monotonic() - started:.1f} s")

        pieces: list[str] = []
        events = engine.generate(request(engine, 1500))
        for event in events:
            if isinstance(event, Piece):
                pieces.append(event.text)
                if len(pieces) == 5:
                    server.process.kill()
            elif isinstance(event, Notice):
                notice = event.text
            elif isinstance(event, Finished):
                break
        assert isinstance(event, Finished) and event.stats.finish_reason == CUT
        assert len(pieces) >= 5 and "broke off" in notice
        print(f"cut after {len(pieces)} pieces")


def test_stop_while_waiting_for_the_first_token_ends_the_reply_at_once() -> None:
    """The stop of a reply waiting for its first token ends it at once (the read is interrupted)."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        engine = RemoteEngine(remote(f"http://127.0.0.1:{silent.getsockname()[1]}", "m", first_token_s=30))
        threading.Timer(0.5, engine.stop).start()
        started = time.monotonic()
        text, done, _ = reply(engine.generate(request(engine)))
        waited = time.monotonic() - started
        assert text == "" and done.stats.finish_reason == "stopped" and waited < 1.5, waited


def test_a_host_that_never_completes_the_handshake_fails_after_10_s() -> None:
    with socket.socket() as full:  # a backlog of 0 already taken: the kernel drops the next SYNs
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            started = time.monotonic()
            with pytest.raises(AppError) as silent:
                RemoteEngine(remote(f"http://127.0.0.1:{port}", "m")).load()
            waited = time.monotonic() - started
    assert silent.value.kind is ErrorKind.NETWORK
    assert "did not accept a connection within 10 s" in silent.value.user_message
    assert 9.5 < waited < 13, waited


@pytest.mark.real_model
def test_hubside_serve_losing_its_engine_mid_reply_keeps_the_text_marked(smollm2_path: Path) -> None:
    """The server's own error event mid-stream (its engine killed) ends the reply as cut, text kept."""
    with serving(smollm2_path) as server:
        engine = RemoteEngine(remote(server.base_url, str(smollm2_path)))
        pieces: list[str] = []
        notices: list[str] = []
        for event in engine.generate(request(engine, 900)):
            if isinstance(event, Piece):
                pieces.append(event.text)
                if len(pieces) == 3:
                    slot = server.host._slots[smollm2_path.absolute()]  # the server's engine process
                    assert slot.engine is not None and slot.engine.pid is not None
                    os.kill(slot.engine.pid, signal.SIGKILL)
            elif isinstance(event, Notice):
                notices.append(event.text)
            elif isinstance(event, Finished):
                break
        assert isinstance(event, Finished) and event.stats.finish_reason == CUT
        assert len(pieces) >= 3 and "broke off" in notices[0] and "engine" in notices[0], notices


def test_a_server_that_sends_headers_and_then_nothing_times_out_the_same_way() -> None:
    """llama-server sends its stream's headers at once: the first token's wait is then a read, not the
    answer's headers; the message is the same."""
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def headers_only() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
                time.sleep(3)

        threading.Thread(target=headers_only, daemon=True).start()
        engine = RemoteEngine(remote(f"http://127.0.0.1:{listener.getsockname()[1]}", "m", first_token_s=1))
        started = time.monotonic()
        with pytest.raises(AppError) as silence:
            reply(engine.generate(request(engine)))
    assert "sent nothing for 1 s" in silence.value.user_message and time.monotonic() - started < 2.5
