"""The OpenAI-compatible server over real HTTP, real engine processes and real llama.cpp, with the real
`openai` client: answers, streams, errors, safety checks and disconnects."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from app.paths import AppPaths
from app.server.app import RequestRecord
from app.server.models import Catalog, HostOptions
from app.server.service import Address, Server
from tests.conftest import TinyModelFactory
from tests.tinymodel import with_uint32_key

KEY = "test-key-0123456789"
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}

Serve = Callable[..., Server]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """`serve(*files, parallel=1, queue=64, cors=())`: a server on a free loopback port, offering `files`."""
    started: list[Server] = []

    def start(
        *files: Path, parallel: int = 1, queue: int = 64, cors: tuple[str, ...] = (), n_ctx: int = 1024
    ) -> Server:
        paths = AppPaths.from_env().ensure()
        options = HostOptions(parallel=parallel, queue=queue, n_ctx=n_ctx, n_threads=2)
        server = Server(paths, Catalog(lambda: [], files), Address("127.0.0.1", 0), options, KEY, cors)
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


def _client(server: Server, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=120)


def _post(server: Server, path: str, body: Any, key: str = KEY, **headers: str) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    all_headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers}
    return requests.post(server.base_url + path, data=data, headers=all_headers, timeout=120)


def _error(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert "Traceback" not in response.text
    return dict(error)


def _record(server: Server, where: Callable[[RequestRecord], bool], timeout_s: float = 10) -> RequestRecord:
    log = server.requests
    deadline = time.monotonic() + timeout_s
    with log.changed:
        while True:
            found = [r for r in log.records if where(r)]
            if found:
                return found[-1]
            left = deadline - time.monotonic()
            assert left > 0, f"no such record in {list(log.records)}"
            log.changed.wait(left)


@pytest.mark.real_model
def test_chat_streamed_and_not_with_the_openai_client(serve: Serve, smollm2_path: Path) -> None:
    server = serve(smollm2_path)
    client = _client(server)
    model = str(smollm2_path)
    assert model in [m.id for m in client.models.list()]
    question = [SYSTEM, {"role": "user", "content": "What is the capital of France?"}]
    whole = client.chat.completions.create(
        model=model, messages=question, temperature=0, max_tokens=48, user="someone", metadata={"a": "b"}
    )
    answer = whole.choices[0].message.content or ""
    assert "Paris" in answer
    assert whole.object == "chat.completion" and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage is not None and whole.usage.completion_tokens > 0 and whole.usage.prompt_tokens > 10

    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=question,
            temperature=0,
            max_completion_tokens=48,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_completions_streamed_and_not(serve: Serve, tiny_model: Path) -> None:
    server = serve(tiny_model)
    client = _client(server)
    done = client.completions.create(model=str(tiny_model), prompt="Once upon a time", max_tokens=5, seed=1)
    assert done.object == "text_completion" and done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.completion_tokens == 5
    pieces = list(
        client.completions.create(model=str(tiny_model), prompt="Once upon a time", max_tokens=5, stream=True)
    )
    assert pieces[-1].choices[0].finish_reason == "length"
    raw = requests.post(
        server.base_url + "/completions",
        json={"model": str(tiny_model), "prompt": "Hi", "max_tokens": 3, "stream": True},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")


def test_eight_clients_at_once_are_all_answered(serve: Serve, tiny_model: Path) -> None:
    server = serve(tiny_model, parallel=4)
    client = _client(server)
    answers: list[int] = []

    def ask(n: int) -> None:
        reply = client.chat.completions.create(
            model=str(tiny_model), messages=[{"role": "user", "content": f"Count to {n}"}], max_tokens=12
        )
        assert reply.usage is not None
        answers.append(reply.usage.completion_tokens)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(answers) == 8 and all(0 < n <= 12 for n in answers)
    widest = max(r.widest_batch for r in server.requests.records)
    print(f"widest batch {widest}")
    assert widest > 1  # replies were decoded together, not one after another


def test_waiting_requests_are_admitted_first_come_first_served(serve: Serve, tiny_model: Path) -> None:
    server = serve(tiny_model)  # one in flight at a time
    model = str(tiny_model)
    holder = requests.post(
        server.base_url + "/completions",
        json={"model": model, "prompt": "A long story", "max_tokens": 400, "stream": True},
        headers={"Authorization": f"Bearer {KEY}"},
        stream=True,
        timeout=60,
    )
    lines = holder.iter_lines()  # kept: urllib3 closes the connection when this iterator is collected
    next(lines)
    finished: list[int] = []

    def ask(n: int) -> None:
        _post(server, "/completions", {"model": model, "prompt": f"Hi {n}", "max_tokens": 2})
        finished.append(n)

    threads = []
    for n in range(4):
        threads.append(threading.Thread(target=ask, args=(n,)))
        threads[-1].start()
        time.sleep(0.3)  # each is queued before the next arrives
    holder.close()
    del lines
    for thread in threads:
        thread.join(60)
    assert finished == [0, 1, 2, 3]


def test_a_client_that_disconnects_mid_stream_stops_its_generation(serve: Serve, tiny_model: Path) -> None:
    server = serve(tiny_model)
    model = str(tiny_model)
    body = {"model": model, "prompt": "Tell me a long story", "max_tokens": 400, "stream": True}
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    connection.request("POST", "/v1/completions", json.dumps(body), headers)
    response = connection.getresponse()
    assert response.status == 200
    response.fp.readline()  # the first event: generation is under way
    left = time.monotonic()
    connection.sock.close()  # type: ignore[union-attr]
    connection.close()
    record = _record(server, lambda r: r.finish_reason != "" or r.status != 200)
    print(f"stopped after {record.completion_tokens} tokens, {time.monotonic() - left:.3f} s after the close")
    assert record.status == 499 and record.finish_reason == "stopped"
    assert record.completion_tokens < 400
    assert time.monotonic() - left < 5
    # The server goes on: the next request is answered in full.
    after = _client(server).completions.create(model=model, prompt="Hi", max_tokens=3)
    assert after.usage is not None and after.usage.completion_tokens == 3


def test_request_errors_are_openai_error_objects(serve: Serve, tiny_model: Path) -> None:
    server = serve(tiny_model)
    model = str(tiny_model)
    chat = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    assert _error(_post(server, "/chat/completions", b"{not json"), 400)["code"] == "invalid_json"
    tools = [{"type": "function", "function": {"name": "f"}}]
    wrong = {"n": 2, "tools": tools, "logit_bias": {"1": 5}, "temperature": 9, "stop": 5, "logprobs": True}
    for name, value in wrong.items():
        assert _error(_post(server, "/chat/completions", {**chat, name: value}), 400)["param"] == name
    unknown = _post(server, "/chat/completions", {**chat, "model": "nope"})
    assert _error(unknown, 404)["code"] == "model_not_found"
    assert _error(_post(server, "/chat/completions", {**chat, "model": "/etc/passwd"}), 404)
    assert _error(_post(server, "/nowhere", chat), 404)
    # Harmless extras and neutral values of unsupported fields pass.
    extras = {"user": "u", "metadata": {"k": "v"}, "n": 1, "tools": [], "logprobs": False, "stop": ["\n\n"]}
    assert _post(server, "/chat/completions", {**chat, **extras}).status_code == 200
    with pytest.raises(openai.BadRequestError, match="'n'"):
        _client(server).chat.completions.create(model=model, messages=chat["messages"], n=3)  # type: ignore[arg-type]


def test_a_body_over_the_cap_is_413_before_it_is_read(serve: Serve, tiny_model: Path) -> None:
    server = serve(tiny_model)
    big = b'{"model": "x", "prompt": "' + b"a" * (20 << 20) + b'"}'
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.putrequest("POST", "/v1/completions")
    for name, value in (("Authorization", f"Bearer {KEY}"), ("Content-Length", str(len(big)))):
        connection.putheader(name, value)
    connection.endheaders()
    connection.send(big[:65536])  # the answer comes without the rest
    response = connection.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["error"]["code"] == "body_too_large"


def test_keys_hosts_and_origins(serve: Serve, tiny_model: Path) -> None:
    server = serve(tiny_model, cors=("https://allowed.example",))
    url = server.base_url + "/models"
    assert _error(requests.get(url, timeout=10), 401)["code"] == "invalid_api_key"
    assert _error(requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=10), 401)
    with pytest.raises(openai.AuthenticationError):
        _client(server, key="wrong").models.list()
    auth = {"Authorization": f"Bearer {KEY}"}
    assert requests.get(url, headers=auth, timeout=10).status_code == 200
    for host in ("localhost", f"localhost:{server.port}", f"[::1]:{server.port}"):
        assert requests.get(url, headers={**auth, "Host": host}, timeout=10).status_code == 200
    for host in ("evil.example", f"evil.example:{server.port}", "localhost:1", "127.0.0.1.evil.example"):
        assert (
            _error(requests.get(url, headers={**auth, "Host": host}, timeout=10), 400)["code"]
            == "invalid_host"
        )
    foreign = requests.get(url, headers={**auth, "Origin": "https://evil.example"}, timeout=10)
    assert _error(foreign, 403)["code"] == "bad_origin"
    assert not [h for h in foreign.headers if h.lower().startswith("access-control")]
    preflight = requests.options(
        url, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, timeout=10
    )
    assert "access-control-allow-origin" not in {h.lower() for h in preflight.headers}
    allowed = requests.get(url, headers={**auth, "Origin": "https://allowed.example"}, timeout=10)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://allowed.example"


def test_no_cors_headers_unless_origins_are_listed(serve: Serve, tiny_model: Path) -> None:
    server = serve(tiny_model)
    preflight = requests.options(
        server.base_url + "/models",
        headers={"Origin": "http://127.0.0.1", "Access-Control-Request-Method": "GET"},
        timeout=10,
    )
    assert preflight.status_code == 403
    assert not [h for h in preflight.headers if h.lower().startswith("access-control")]


def test_a_full_queue_is_429_and_a_model_that_cannot_load_is_503(
    serve: Serve, tiny_model: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    server = serve(tiny_model, broken, queue=0)
    error = _error(_post(server, "/completions", {"model": str(broken), "prompt": "Hi"}), 503)
    assert error["code"] == "model_unavailable" and "broken.gguf" not in error["type"]
    body = {"model": str(tiny_model), "prompt": "A long story", "max_tokens": 300, "stream": True}
    busy = requests.post(server.base_url + "/completions", json=body, stream=True, timeout=60,
                         headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip
    assert busy.status_code == 200
    lines = busy.iter_lines()  # kept: urllib3 closes the connection when this iterator is collected
    next(lines)  # it holds the one place
    assert _error(_post(server, "/completions", {**body, "stream": False}), 429)["code"] == "queue_full"
    busy.close()
    del lines
    _record(server, lambda r: r.finish_reason == "stopped")
    # The server stays up and answers the next request.
    assert _post(server, "/completions", {**body, "stream": False, "max_tokens": 2}).status_code == 200


@pytest.mark.real_model
def test_json_schema_output_parses_and_matches(serve: Serve, smollm2_path: Path) -> None:
    server = serve(smollm2_path)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    reply = _client(server).chat.completions.create(
        model=str(smollm2_path),
        messages=[SYSTEM, {"role": "user", "content": "Describe Paris as JSON."}],
        temperature=0,
        max_tokens=80,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
    )
    value = json.loads(reply.choices[0].message.content or "")
    assert set(value) == {"city", "population"}
    assert isinstance(value["city"], str) and isinstance(value["population"], int)
    loose = _client(server).chat.completions.create(
        model=str(smollm2_path),
        messages=[SYSTEM, {"role": "user", "content": "Give me a JSON object about France."}],
        temperature=0,
        max_tokens=60,
        response_format={"type": "json_object"},
    )
    assert loose.choices[0].finish_reason == "stop"  # a grammar-complete object ends the reply
    assert isinstance(json.loads(loose.choices[0].message.content or ""), dict)


def test_embeddings_float_and_base64(serve: Serve, tiny_model: Path) -> None:
    server = serve(tiny_model)
    client = _client(server)
    done = client.embeddings.create(model=str(tiny_model), input=["hello", "world"])  # the client asks base64
    assert [row.index for row in done.data] == [0, 1]
    for row in done.data:
        assert abs(sum(x * x for x in row.embedding) - 1) < 1e-3
    as_floats = _post(server, "/embeddings", {"model": str(tiny_model), "input": "hello"}).json()
    first = as_floats["data"][0]["embedding"]
    assert max(abs(a - b) for a, b in zip(first, done.data[0].embedding, strict=True)) < 1e-5
    assert as_floats["usage"]["prompt_tokens"] > 0
    assert _error(_post(server, "/embeddings", {"model": str(tiny_model), "input": [1, 2]}), 400)


def test_an_idle_model_is_unloaded_and_loads_again(tiny_model: Path) -> None:
    paths = AppPaths.from_env().ensure()
    options = HostOptions(n_ctx=256, n_threads=2, idle_s=0.5)
    server = Server(paths, Catalog(lambda: [], [tiny_model]), Address("127.0.0.1", 0), options, KEY).start()
    try:
        client = _client(server)
        client.completions.create(model=str(tiny_model), prompt="Hi", max_tokens=2)
        assert server.host.loaded_models() == [tiny_model]
        deadline = time.monotonic() + 10
        while server.host.loaded_models() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.host.loaded_models() == []
        again = client.completions.create(model=str(tiny_model), prompt="Hi", max_tokens=2)
        assert again.usage is not None and again.usage.completion_tokens == 2
    finally:
        server.stop()


def test_an_engine_crash_mid_stream_is_an_error_event_and_the_next_request_reloads(
    serve: Serve, tiny_model: Path
) -> None:
    server = serve(tiny_model)
    model = str(tiny_model)
    body = {"model": model, "prompt": "A long story", "max_tokens": 100000, "stream": True}
    stream = requests.post(server.base_url + "/completions", json=body, stream=True, timeout=60,
                           headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip
    lines = stream.iter_lines()
    next(lines)
    engine = server.host._slots[tiny_model].engine  # the test reaches in to kill it, as an OOM kill would
    assert engine is not None
    engine.kill()
    events = [json.loads(line[6:]) for line in lines if line.startswith(b"data: {")]
    assert events[-1]["error"]["code"] == "model_unavailable"
    assert "stopped unexpectedly" in events[-1]["error"]["message"]
    again = _client(server).completions.create(model=model, prompt="Hi", max_tokens=2)
    assert again.usage is not None and again.usage.completion_tokens == 2


def test_a_client_that_leaves_before_a_whole_answer_stops_it_too(serve: Serve, tiny_model: Path) -> None:
    server = serve(tiny_model)
    body = {"model": str(tiny_model), "prompt": "Tell me a long story", "max_tokens": 100000}
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    connection.request("POST", "/v1/completions", json.dumps(body), headers)
    while not server.host.loaded_models():
        time.sleep(0.02)
    time.sleep(0.1)  # generating now (a whole context takes a few seconds)
    connection.sock.close()  # type: ignore[union-attr]
    connection.close()
    record = _record(server, lambda r: r.status != 200)
    print(f"stopped after {record.completion_tokens} tokens")
    assert record.status == 499 and record.finish_reason == "stopped"


def test_a_queued_client_that_leaves_gives_up_its_place(
    serve: Serve, tiny_model_factory: TinyModelFactory
) -> None:
    tiny_model = tiny_model_factory(context_length=8192)
    server = serve(tiny_model, n_ctx=8192)  # the holder goes on for seconds, whatever the machine
    model = str(tiny_model)
    body = {"model": model, "prompt": "A long story", "max_tokens": 100000, "stream": True}
    holder = requests.post(server.base_url + "/completions", json=body, stream=True, timeout=60,
                           headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip
    lines = holder.iter_lines()  # kept: urllib3 closes the connection when this iterator is collected
    next(lines)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    connection.request("POST", "/v1/completions", json.dumps(body), headers)
    time.sleep(0.3)  # queued behind the holder
    connection.sock.close()  # type: ignore[union-attr]
    connection.close()
    left = _record(server, lambda r: r.status == 499, timeout_s=3)  # while the holder still generates
    assert left.finish_reason == "" and left.completion_tokens == 0  # it never reached the engine
    holder.close()
    del lines


def test_a_model_that_cannot_embed_gets_a_clear_400(serve: Serve, tiny_model: Path, tmp_path: Path) -> None:
    rank_pooling = 4
    reranker = with_uint32_key(tiny_model, tmp_path / "reranker.gguf", "llama.pooling_type", rank_pooling)
    server = serve(reranker)
    error = _error(_post(server, "/embeddings", {"model": str(reranker), "input": "hello"}), 400)
    assert "cannot make embeddings" in error["message"]
    done = _client(server).completions.create(model=str(reranker), prompt="Hi", max_tokens=2)
    assert done.usage is not None and done.usage.completion_tokens == 2  # the model still answers
