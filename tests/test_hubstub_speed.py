"""The stand-in's own costs stay out of what tests and benchmarks measure: a large GGUF's first model info is
fast, each connection can be capped (so that many connections beat one), and it serves https from a
throw-away CA when run by hand."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.hubstub import HubStub, gguf_header
from tests.hubstub.repos import StubFile
from tests.tls_helpers import TLSHubStub, make_ca

ROOT = Path(__file__).resolve().parent.parent


def test_the_first_model_info_of_a_253_mb_gguf_takes_under_a_second(hub: HubStub, gemma3_path: Path) -> None:
    hub.add_repo("google/gemma-3-270m-GGUF", {gemma3_path.name: gemma3_path})
    started = time.perf_counter()
    info = requests.get(f"{hub.endpoint}/api/models/google/gemma-3-270m-GGUF?blobs=true", timeout=60).json()
    elapsed = time.perf_counter() - started
    assert info["gguf"]["architecture"] == "gemma3"
    assert info["siblings"][0]["lfs"]["sha256"] == (
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    )
    assert elapsed < 1.0, f"first model info took {elapsed:.2f} s"


def test_the_summary_is_what_gguf_reader_reads(tiny_model: Path) -> None:
    from gguf import GGUFReader

    reader = GGUFReader(tiny_model)
    summary = gguf_header.gguf_summary(tiny_model)
    assert summary is not None
    arch = reader.fields["general.architecture"].contents()
    assert summary["architecture"] == arch
    assert summary["total"] == sum(int(t.n_elements) for t in reader.tensors)
    assert summary.get("context_length") == reader.fields[f"{arch}.context_length"].contents()
    tokens = reader.fields["tokenizer.ggml.tokens"]
    bos = int(reader.fields["tokenizer.ggml.bos_token_id"].contents())
    assert summary["bos_token"] == tokens.contents(bos)


def test_a_file_served_again_is_not_hashed_again_unless_it_changed(tmp_path: Path, gemma3_path: Path) -> None:
    StubFile(gemma3_path.name, source=gemma3_path).sha256  # noqa: B018 (hashed, if no test did yet)
    started = time.perf_counter()
    StubFile(gemma3_path.name, source=gemma3_path).sha256  # noqa: B018
    again = time.perf_counter() - started
    assert again < 0.02, f"hashing the 253 MB file again took {again:.3f} s"
    path = tmp_path / "model.gguf"
    path.write_bytes(b"a" * 1000)
    first = StubFile("model.gguf", source=path).sha256
    path.write_bytes(b"b" * 1000)
    assert StubFile("model.gguf", source=path).sha256 != first


def _timed_get(url: str, headers: dict[str, str], times: list[float]) -> None:
    started = time.perf_counter()
    with requests.get(url, headers=headers, stream=True, timeout=30) as response:
        for _ in response.iter_content(1 << 16):
            pass
    times.append(time.perf_counter() - started)


@pytest.mark.parametrize("source", ["in memory", "on disk"])
def test_a_per_connection_cap_is_smooth_and_four_connections_are_four_times_faster(
    tmp_path: Path, source: str
) -> None:
    size, rate = 4_000_000, 10e6  # 0.4 s on one connection
    data = bytes(range(256)) * (size // 256)
    path = tmp_path / "blob.gguf"
    path.write_bytes(data)
    with HubStub(per_connection_bps=rate) as stub:
        stub.add_repo("acme/Blob", {"blob.gguf": data if source == "in memory" else path})
        resolve = f"{stub.endpoint}/acme/Blob/resolve/main/blob.gguf"
        url = requests.head(resolve, timeout=10).headers["Location"]
        arrivals: list[tuple[float, int]] = []
        started = time.perf_counter()
        with requests.get(url, stream=True, timeout=30) as response:
            got = 0
            for chunk in response.iter_content(1 << 16):
                got += len(chunk)
                arrivals.append((time.perf_counter() - started, got))
        one = arrivals[-1][0]
        half_at = next(t for t, n in arrivals if n >= size // 2)
        quarter = size // 4
        times: list[float] = []
        ranges = [{"Range": f"bytes={i * quarter}-{(i + 1) * quarter - 1}"} for i in range(4)]
        threads = [threading.Thread(target=_timed_get, args=(url, headers, times)) for headers in ranges]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        four = time.perf_counter() - started
    assert got == size
    assert one >= 0.9 * size / rate, f"one connection: {one:.3f} s"
    assert 0.35 * one <= half_at <= 0.65 * one, f"half the bytes at {half_at:.3f} s of {one:.3f} s"
    assert four <= 0.5 * one, f"four connections: {four:.3f} s, one: {one:.3f} s"


def test_runnable_by_hand_over_https_with_a_cap(tmp_path: Path, tiny_model: Path) -> None:
    repo = tmp_path / "served" / "someone" / "Tiny-GGUF"
    repo.mkdir(parents=True)
    (repo / "tiny-Q4_K_M.gguf").write_bytes(tiny_model.read_bytes())
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.hubstub", "--port", "0", "--tls", str(tmp_path / "ca"), "--rate", "50",
         str(tmp_path / "served")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("Serving 1 repos")
        endpoint = process.stdout.readline().split()[0].removeprefix("HF_ENDPOINT=")
        ca_line = process.stdout.readline().strip()
        assert endpoint.startswith("https://127.0.0.1:")
        assert ca_line == f"SSL_CERT_FILE={tmp_path / 'ca' / 'ca.pem'}"
        ca = ca_line.removeprefix("SSL_CERT_FILE=")
        url = f"{endpoint}/someone/Tiny-GGUF/resolve/main/tiny-Q4_K_M.gguf"
        assert requests.get(url, verify=ca, timeout=10).content == tiny_model.read_bytes()
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url, timeout=10)  # certifi does not know the throw-away CA
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_tls_stub_takes_a_folder_and_a_cap(tmp_path: Path, tiny_model: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    (tmp_path / "served" / "someone" / "Tiny-GGUF").mkdir(parents=True)
    (tmp_path / "served" / "someone" / "Tiny-GGUF" / "tiny.gguf").write_bytes(tiny_model.read_bytes())
    with TLSHubStub(ca.server_context(), tmp_path / "served", per_connection_bps=1e9) as stub:
        info = requests.get(f"{stub.endpoint}/api/models/someone/Tiny-GGUF", verify=ca.ca_file, timeout=10)
        assert info.json()["id"] == "someone/Tiny-GGUF"
        assert stub.per_connection_bps == 1e9
