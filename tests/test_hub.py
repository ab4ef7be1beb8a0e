"""The Hub core against the Hub stand-in: search, paging, details, variants, cards, headers, fit verdicts."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from app.errors import AppError, ErrorKind
from app.hub.client import HubClient, SearchQuery
from app.hub.fit import CPU_ONLY, FULL_GPU, PARTIAL_GPU, WONT_FIT, Machine, fit_variant, recommended
from app.hub.quants import RepoFile, Variant, group_variants, quant_label
from app.paths import AppPaths
from app.runtime.gguf_header import read_header
from app.runtime.memory import CPU_MARGIN, GIB, GPU_MARGIN, kv_cache_bytes
from tests.hubstub.faults import Fault
from tests.hubstub.server import HubStub

GB = 10**9


def _client(token: str | None = None) -> HubClient:
    return HubClient(AppPaths.from_env().ensure().cache_dir / "hub", token)


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("Meta-Llama-3-8B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("model.q5_k_s.gguf", "Q5_K_S"),
        ("Llama-3-Q8_0-Q4_K_M.gguf", "Q4_K_M"),  # the last match wins
        ("gemma-3-27b-it-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
        ("Qwen3-30B-A3B-UD-IQ2_XXS.gguf", "UD-IQ2_XXS"),
        ("phi-4-IQ4_NL.gguf", "IQ4_NL"),
        ("x-Q2_K_S.gguf", "Q2_K_S"),
        ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
        ("model-bf16.gguf", "BF16"),
        ("README.md", None),
    ],
)
def test_quant_labels_from_file_names(name: str, label: str | None) -> None:
    assert quant_label(name) == label


def test_variants_group_shards_folders_and_the_projector() -> None:
    tree = [
        RepoFile("README.md", 9_000),
        RepoFile("config.json", 1_000),
        RepoFile("imatrix.dat", 5_000_000),
        RepoFile("gemma-3-27b-it-Q4_K_M.gguf", 16_500_000_000),
        RepoFile("gemma-3-27b-it-UD-Q4_K_XL.gguf", 16_800_000_000),
        RepoFile("gemma-3-27b-it-Q2_K.gguf", 10_500_000_000),
        RepoFile("BF16/gemma-3-27b-it-BF16-00002-of-00002.gguf", 4_000_000_000),
        RepoFile("BF16/gemma-3-27b-it-BF16-00001-of-00002.gguf", 50_000_000_000),
        RepoFile("Q8_0/gemma-3-27b-it-Q8_0-00001-of-00001.gguf", 28_700_000_000),
        RepoFile("mmproj-BF16.gguf", 860_000_000),
        RepoFile("mmproj-F16.gguf", 850_000_000),
    ]
    variants = group_variants(tree)
    assert [(v.label, v.size, len(v.files)) for v in variants] == [
        ("Q2_K", 10_500_000_000, 1),
        ("Q4_K_M", 16_500_000_000, 1),
        ("UD-Q4_K_XL", 16_800_000_000, 1),
        ("Q8_0", 28_700_000_000, 1),
        ("BF16", 54_000_000_000, 2),  # the shards are one variant, sizes summed, in order
    ]
    bf16 = variants[-1]
    assert [f.path for f in bf16.files] == [
        "BF16/gemma-3-27b-it-BF16-00001-of-00002.gguf",
        "BF16/gemma-3-27b-it-BF16-00002-of-00002.gguf",
    ]
    assert all(v.projector == RepoFile("mmproj-F16.gguf", 850_000_000) for v in variants)
    assert variants[1].bits_per_weight(None) == 4.5  # the table, before the parameters are known
    assert variants[1].bits_per_weight(27_000_000_000) == pytest.approx(16.5e9 * 8 / 27e9)
    twice = group_variants([RepoFile("a/x-Q4_0.gguf", 1), RepoFile("b/x-Q4_0.gguf", 2)])
    assert [v.title for v in twice] == ["Q4_0 (a/x-Q4_0.gguf)", "Q4_0 (b/x-Q4_0.gguf)"]


def test_search_sorts_filters_and_pages_lazily(hub: HubStub) -> None:
    hub.page_size = 50
    for n in range(120):
        hub.add_repo(
            f"maker{n % 3}/model-{n:03d}-GGUF",
            {f"model-{n:03d}-Q4_K_M.gguf": 1000 + n},
            downloads=n * 10,
            likes=200 - n,
            gated="auto" if n % 10 == 0 else False,
            gguf={"total": n * 10**8, "architecture": "llama" if n % 2 else "qwen2"},
            lastModified=f"2026-{1 + n % 12:02d}-15T10:00:00.000Z",
        )
    hub.add_repo("someone/not-gguf", {"model.safetensors": b"x"})
    pages = _client().search(SearchQuery(sort="downloads"))
    seen = []
    for _ in range(7):
        seen += pages.next(20)
    assert [m.downloads for m in seen] == sorted((n * 10 for n in range(120)), reverse=True)
    assert pages.done and pages.next(20) == []
    listing = [r for r in hub.log.matching("/api/models") if r.method == "GET"]
    assert len(listing) == 3  # 120 rows in pages of 50, each asked for when needed
    assert all(r.query.get("filter") == ["gguf"] for r in listing)
    # The listing asks for what the list shows (the Hub sends no lastModified or gated unless expanded)
    assert {m.updated[:10] for m in seen} == {f"2026-{month:02d}-15" for month in range(1, 13)}
    assert {m.id for m in seen if m.gated} == {f"maker{n % 3}/model-{n:03d}-GGUF" for n in range(0, 120, 10)}
    assert "gguf" not in listing[0].query["expand[]"]  # every row's chat template: never for a listing

    def ids(query: SearchQuery) -> set[str]:
        return {m.id for m in _client().search(query).next(500)}

    assert ids(SearchQuery(text="model-00")) == {f"maker{n % 3}/model-{n:03d}-GGUF" for n in range(10)}
    assert len(ids(SearchQuery(gated=True))) == 12 and len(ids(SearchQuery(gated=False))) == 108
    hub.log.clear()
    assert ids(SearchQuery(min_params=10**9, max_params=12 * 10**8)) == {
        f"maker{n % 3}/model-{n:03d}-GGUF" for n in (10, 11, 12)
    }
    assert hub.log.matching("/api/models")[0].query["num_parameters"] == ["min:1B,max:1.2B"]
    likes = _client().search(SearchQuery(sort="likes")).next(3)
    assert [m.likes for m in likes] == [200, 199, 198]


def test_details_card_and_remote_header(hub: HubStub, smollm2_path: Path) -> None:
    hub.add_repo(
        "bartowski/SmolLM2-135M-Instruct-GGUF",
        {"SmolLM2-135M-Instruct-Q4_1.gguf": smollm2_path, "README.md": b"# SmolLM2\n\nSmall and fast.\n"},
        cardData={"license": "apache-2.0"},
        downloads=1234,
    )
    client = _client(token="hf_secret")
    details = client.details("bartowski/SmolLM2-135M-Instruct-GGUF").value
    assert (details.architecture, details.parameters, details.context_length) == ("llama", 134515008, 8192)
    assert (
        details.license == "apache-2.0" and details.downloads == 1234 and "im_start" in details.chat_template
    )
    (variant,) = details.variants
    assert variant.label == "Q4_1" and variant.files[0].sha256 == (
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    )
    assert client.card(details).value == "# SmolLM2\n\nSmall and fast.\n"

    header = client.header(details, variant.files[0])
    local = read_header(smollm2_path)
    assert header.metadata == local.metadata and header.tensors == local.tensors
    reads = [r for r in hub.log.all() if r.path.endswith(".gguf")]
    assert reads and all(r.headers.get("range", "").startswith("bytes=0-") for r in reads)
    assert sum(r.body_bytes for r in reads if r.server == "cdn") < 8 * 1024 * 1024  # a header, not the file
    assert all("authorization" not in r.headers for r in reads if r.server == "cdn")  # the token stays home
    assert any(r.headers.get("authorization") == "Bearer hf_secret" for r in reads if r.server == "hub")

    hub.reset()  # offline now: what was seen is still there, marked stale
    hub.add_fault(Fault(status=503, times=None))
    cached = client.details("bartowski/SmolLM2-135M-Instruct-GGUF")
    assert cached.stale and cached.value.variants == details.variants
    assert client.header(details, variant.files[0]).metadata == local.metadata  # cached per commit


def test_offline_search_shows_the_last_results(hub: HubStub) -> None:
    hub.add_repo("a/b-GGUF", {"b-Q8_0.gguf": 10})
    assert [m.id for m in _client().search(SearchQuery(text="b")).next(10)] == ["a/b-GGUF"]
    cache = AppPaths.from_env().cache_dir / "hub"
    nothing_there = "http://127.0.0.1:9"  # the discard port: connection refused
    offline = HubClient(cache, endpoint=nothing_there).search(SearchQuery(text="b"))
    assert [m.id for m in offline.next(10)] == ["a/b-GGUF"] and offline.stale and offline.done
    assert not HubClient(cache, endpoint=nothing_there).reachable()


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (Fault(path="/api/models", body=b"{not json", times=None), "could not read"),
        (
            Fault(path="/api/models", body=b"<html>Hub down</html>", content_type="text/html", times=None),
            "could not read",
        ),
        (Fault(path="/api/models", status=429, retry_after="30", times=None), "limiting requests"),
        (Fault(path="/api/models", status=500, times=None), "HTTP 500"),
    ],
)
def test_odd_hub_answers_are_clear_errors(hub: HubStub, fault: Fault, words: str) -> None:
    hub.add_repo("a/b-GGUF", {"b-Q8_0.gguf": 10})
    hub.add_fault(fault)
    with pytest.raises(AppError) as raised:
        _client().search(SearchQuery(text="zzz-never-cached")).next(10)
    assert words in raised.value.user_message


def test_odd_shapes_in_model_info(hub: HubStub) -> None:
    import json

    hub.add_repo("odd/nulls", {"x-Q4_0.gguf": 10})
    body = {"id": "odd/nulls", "sha": "0" * 40, "siblings": None, "downloads": "12", "likes": None}
    hub.add_fault(Fault(path="/api/models/odd/nulls", body=json.dumps(body).encode(), times=None))
    details = _client().details("odd/nulls").value
    assert details.variants == () and details.downloads == 12 and details.parameters is None
    sizes = {
        "id": "odd/strings",
        "sha": "1" * 40,
        "siblings": [
            {
                "rfilename": "a-Q8_0.gguf",
                "size": "2048",
                "lfs": {"sha256": "ab" * 32, "size": "2048", "pointerSize": 130},
            }
        ],
    }
    hub.add_repo("odd/strings", {"a-Q8_0.gguf": 10})
    hub.add_fault(Fault(path="/api/models/odd/strings", body=json.dumps(sizes).encode(), times=None))
    (variant,) = _client().details("odd/strings").value.variants
    assert variant.size == 2048


def test_a_link_loop_ends(hub: HubStub) -> None:
    import json

    rows = json.dumps([{"id": f"loop/m{n}-GGUF", "downloads": n} for n in range(5)]).encode()
    loop = f'<{hub.endpoint}/api/models?filter=gguf&search=loop>; rel="next"'  # always the same next page
    hub.add_fault(Fault(path="/api/models", body=rows, headers={"Link": loop}, times=None))
    pages = _client().search(SearchQuery(text="loop"))
    found = []
    while not pages.done:
        found += pages.next(50)
    assert sorted(m.id for m in found) == [f"loop/m{n}-GGUF" for n in range(5)]
    assert len(hub.log.matching("/api/models")) == 2  # the first page, its next page once, then it stops


def test_unknown_and_gated_repos(hub: HubStub, smollm2_path: Path) -> None:
    with pytest.raises(AppError) as unknown:
        _client().details("nobody/nothing")
    assert unknown.value.kind is ErrorKind.NOT_FOUND and "nobody/nothing" in unknown.value.user_message
    hub.add_repo("meta/gated-GGUF", {"README.md": b"card", "m-Q4_1.gguf": smollm2_path}, gated="manual")
    details = _client().details("meta/gated-GGUF").value  # the facts are public
    assert details.gated
    with pytest.raises(AppError) as gated:
        _client().card(details)
    assert gated.value.kind is ErrorKind.GATED
    assert "accept its license on the Hub" in gated.value.user_message and "token" in gated.value.user_message
    hub.tokens.add("hf_ok")
    assert _client(token="hf_ok").card(details).value == "card"


def test_fit_verdicts_match_hand_computed_values(smollm2_path: Path, gemma3_path: Path) -> None:
    smol = read_header(smollm2_path)
    smol_variant = Variant("Q4_1", (RepoFile(smollm2_path.name, smollm2_path.stat().st_size),))
    # SmolLM2: 30 layers x 3 KV heads x (64 + 64) dims x 2 bytes (f16) x 8192 tokens
    kv = 30 * 3 * (64 + 64) * 2 * 8192
    assert kv_cache_bytes(smol, 8192) == kv == 188_743_680
    cpu_need = 98_362_432 + kv + CPU_MARGIN
    assert fit_variant(smol_variant, smol, 8192, Machine(cpu_need, None)).verdict == CPU_ONLY
    assert fit_variant(smol_variant, smol, 8192, Machine(cpu_need - 1, None)).verdict == WONT_FIT
    gpu_need = 98_362_432 + kv + GPU_MARGIN
    assert fit_variant(smol_variant, smol, 8192, Machine(cpu_need, gpu_need)).verdict == FULL_GPU
    # 100 MB of VRAM past the margin: per layer 98362432 / 31 + 188743680 / 30 = 9464437.7 bytes -> 10 layers
    partial = fit_variant(smol_variant, smol, 8192, Machine(cpu_need, GPU_MARGIN + 100_000_000))
    assert (partial.verdict, partial.gpu_layers, partial.label) == (
        PARTIAL_GPU,
        10,
        "partial GPU (10 layers)",
    )

    gemma = read_header(gemma3_path)
    # Gemma 3 270M: 18 layers x 1 KV head x (256 + 256) x 2 bytes x 32768 tokens (its whole trained context)
    assert kv_cache_bytes(gemma, 32768) == 18 * 1 * 512 * 2 * 32768 == 603_979_776
    gemma_variant = Variant("Q4_K_M", (RepoFile(gemma3_path.name, gemma3_path.stat().st_size),))
    assert fit_variant(gemma_variant, gemma, 32768, Machine(2 * GIB, None)).verdict == CPU_ONLY
    assert fit_variant(gemma_variant, gemma, 32768, Machine(GIB, None)).verdict == WONT_FIT

    before_header = fit_variant(
        Variant("Q4_K_M", (RepoFile("x.gguf", 4 * GB),)), None, 8192, Machine(8 * GB, None)
    )
    assert before_header.verdict == CPU_ONLY and not before_header.with_header
    assert "context cache is added once the model's header is read" in before_header.explain()


def test_the_recommended_variant_is_the_largest_that_fits() -> None:
    sizes = {"Q2_K": 3, "Q4_K_M": 5, "Q5_K_M": 6, "Q8_0": 9, "F16": 16}
    variants = [Variant(label, (RepoFile(f"m-{label}.gguf", size * GB),)) for label, size in sizes.items()]

    def pick(ram_gb: float) -> str | None:
        machine = Machine(int(ram_gb * GB), None)
        best = recommended(variants, [fit_variant(v, None, 4096, machine) for v in variants])
        return best.label if best else None

    assert pick(7) == "Q5_K_M"
    assert pick(40) == "Q8_0"  # not F16: it would fit, but a quant runs faster for the same answers
    assert pick(2) is None


def test_our_kv_estimate_is_what_llama_cpp_allocates(smollm2_path: Path, gemma3_path: Path) -> None:
    from app.runtime.engine import Engine
    from app.runtime.protocol import LoadParams

    paths = AppPaths.from_env().ensure()
    with Engine(paths) as engine:
        for model in (smollm2_path, gemma3_path):
            engine.load(LoadParams(model, n_ctx=4096))
    log = (paths.logs_dir / "engine.log").read_text()
    reported = [float(mib) for mib in re.findall(r"llama_kv_cache: size = +([\d.]+) MiB", log)]
    # SmolLM2 one cache; Gemma 3 two (its sliding-window layers and the others), full size each
    assert reported[0] * 1024**2 == kv_cache_bytes(read_header(smollm2_path), 4096)
    assert sum(reported[1:]) * 1024**2 == kv_cache_bytes(read_header(gemma3_path), 4096)


def test_cli_search_and_show(hub: HubStub, smollm2_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from app.cli import main

    hub.add_repo("bartowski/SmolLM2-135M-Instruct-GGUF", {"SmolLM2-Q4_1.gguf": smollm2_path}, downloads=7)
    hub.add_repo("other/Big-GGUF", {"big-Q4_K_M.gguf": 40 * GB, "big-Q8_0.gguf": 70 * GB}, downloads=3)
    assert main(["search", "gguf", "--sort", "downloads", "--limit", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["bartowski/SmolLM2-135M-Instruct-GGUF", "other/Big-GGUF"]
    assert main(["search", "smol", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["downloads"] == 7

    assert main(["show", "bartowski/SmolLM2-135M-Instruct-GGUF", "--ctx", "4096", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    (variant,) = shown["variants"]
    assert variant["label"] == "Q4_1" and variant["recommended"] and variant["fit"] in (CPU_ONLY, FULL_GPU)
    assert variant["needs_bytes"] == 98_362_432 + 30 * 3 * 128 * 2 * 4096 + (
        GPU_MARGIN if "GPU" in variant["fit"] else CPU_MARGIN
    )
    assert variant["files"][0]["sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert main(["show", "other/Big-GGUF"]) == 0
    out = capsys.readouterr().out
    assert "won't fit" in out and "needs at least" in out  # no header to read: weights and margin only

    assert main(["show", "nobody/nothing"]) == 1  # without a token the Hub answers 401, no error code
    assert capsys.readouterr().err.splitlines() == [
        "hubside: nobody/nothing: not found, or private: sign in (Hub token… on the Discover page, or "
        "HF_TOKEN)."
    ]
    hub.add_repo("meta/gated-GGUF", {"m-Q4_0.gguf": 10}, gated="manual")
    assert main(["pull", "meta/gated-GGUF:Q4_0"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "hubside: m-Q4_0.gguf: the Hub refused the download. If the model is gated, accept its license on "
        "the Hub, then add your token."
    ]
    hub.fail_with("/api/models", 429, rate_limit_reset=55)  # no Retry-After: only the Hub's RateLimit
    assert main(["search", "anything-new"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "hubside: The Hub is limiting requests; try again in 55 s."
    ]


def test_the_token_comes_from_hf_token_or_the_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    import keyring
    from keyring.backends import fail

    from app.hub.token import hub_token, save_token
    from tests.conftest import InMemoryKeyring

    monkeypatch.delenv("HF_TOKEN", raising=False)
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())  # this machine as it is: no keyring service
    try:
        with pytest.raises(AppError, match="no keyring to keep the token in; set the HF_TOKEN"):
            save_token("hf_abc")  # a clear message, nothing written anywhere
        assert hub_token() is None
        keyring.set_keyring(InMemoryKeyring())
        save_token("hf_abc")
        assert hub_token() == "hf_abc"
        monkeypatch.setenv("HF_TOKEN", "hf_env")
        assert hub_token() == "hf_env"  # the environment wins
        monkeypatch.delenv("HF_TOKEN")
        save_token("")
        assert hub_token() is None
    finally:
        keyring.set_keyring(previous)
    settings_text = AppPaths.from_env().ensure().settings_file
    assert not settings_text.exists() or "hf_abc" not in settings_text.read_text()


def test_the_architecture_filter_finds_repos_by_their_gguf_architecture(hub: HubStub) -> None:
    """GGUF repos are not tagged with their architecture (the real Hub's tags don't name it): the filter asks
    model info's gguf for each row of a page, in parallel, and remembers it."""
    hub.page_size = 50
    for n in range(100):
        hub.add_repo(
            f"q/m{n:03d}-GGUF", {"m-Q4_0.gguf": 10}, gguf={"architecture": "qwen3" if n % 4 else "gemma3"}
        )
    client = _client()
    hub.log.clear()
    started = time.perf_counter()
    found = client.search(SearchQuery(architecture="gemma3", sort="downloads")).next(20)
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert {m.id for m in found} == {f"q/m{n:03d}-GGUF" for n in range(0, 80, 4)}
    assert all(m.architecture == "gemma3" for m in found)
    infos = [r for r in hub.log.matching("/api/models/q/") if r.method == "GET"]
    listings = [r for r in hub.log.matching("/api/models") if r.path == "/api/models"]
    assert all(r.query["expand[]"] == ["gguf"] for r in infos)  # the architecture only, not the files
    print(f"architecture filter: {len(listings)} listings + {len(infos)} model infos, {elapsed_ms:.0f} ms")
    hub.log.clear()
    again = client.search(SearchQuery(architecture="gemma3", sort="downloads")).next(20)
    assert again == found and not hub.log.matching("/api/models/q/")  # cached per repo


def test_nothing_of_ours_asks_huggingface_hubs_agent_harnesses(
    hub: HubStub, smollm2_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """huggingface_hub 2.4 asks /api/agent-harnesses only to decide on progress bars and CLI output
    (utils/_detect_agent.py via _terminal and cli/_output): our search, details, header and pull never do."""
    from app.cli import main

    hub.add_repo("bartowski/SmolLM2-135M-Instruct-GGUF", {"SmolLM2-Q4_1.gguf": smollm2_path})
    assert main(["search", "smol"]) == 0
    assert main(["show", "bartowski/SmolLM2-135M-Instruct-GGUF"]) == 0
    assert main(["pull", "bartowski/SmolLM2-135M-Instruct-GGUF:Q4_1"]) == 0
    capsys.readouterr()
    assert hub.log.matching("/resolve/") and not hub.log.matching("/api/agent-harnesses")


def _quantized(hub: HubStub, repo: str, billions: float, downloads: int, chat: bool = True) -> None:
    tags = ["gguf", "text-generation", "endpoints_compatible", "region:us"] + (
        ["conversational"] if chat else []
    )
    hub.add_repo(
        repo,
        {"m-Q4_K_M.gguf": 10},
        tags=tags,
        downloads=downloads,
        gguf={"total": int(billions * GB), "architecture": "llama"},
    )


def test_the_welcome_suggests_the_most_downloaded_chat_models_that_fit(hub: HubStub) -> None:
    from app.hub.starters import Q4_K_M_BITS, QUANTIZERS, STARTERS, Suggestions, hub_suggestions

    _quantized(hub, "bartowski/Qwen_Qwen3-8B-GGUF", 8.2, 900_000)
    _quantized(hub, "unsloth/Qwen3-8B-GGUF", 8.2, 800_000)  # the same model: suggested once
    _quantized(hub, "lmstudio-community/gemma-3-12b-it-GGUF", 11.8, 500_000)
    _quantized(hub, "ggml-org/SmolLM3-3B-GGUF", 3.1, 100_000)
    _quantized(hub, "ggml-org/gemma-3-1b-it-GGUF", 1.0, 50_000)  # fourth: one too many
    _quantized(hub, "bartowski/Big-Base-7B-GGUF", 7.0, 9_000_000, chat=False)  # no chat template
    _quantized(hub, "unsloth/Llama-3.3-70B-Instruct-GGUF", 70.6, 2_000_000)  # too big for 16 GiB
    _quantized(hub, "someone/Popular-8B-GGUF", 8.0, 5_000_000)  # not a quantizer we know
    client = _client()
    hub.log.clear()
    found = hub_suggestions(client, 16 * GIB)
    assert found.source == "hub"
    assert [s.repo for s in found.starters] == [
        "bartowski/Qwen_Qwen3-8B-GGUF",
        "lmstudio-community/gemma-3-12b-it-GGUF",
        "ggml-org/SmolLM3-3B-GGUF",
    ]
    assert found.starters[0].label == "Qwen_Qwen3-8B (8.2B parameters, 900,000 downloads last month)"
    assert found.starters[0].q4_bytes == int(8.2 * GB * Q4_K_M_BITS / 8)
    listings = [r for r in hub.log.all() if r.path == "/api/models"]
    assert sorted(r.query["author"][0] for r in listings) == sorted(QUANTIZERS)
    for listing in listings:  # asked as the real Hub takes it: the size bound, chat repos, by downloads
        assert listing.status == 200 and listing.query["filter"] == ["gguf", "conversational"]
        assert listing.query["limit"] == ["20"]  # the rows used, not the Discover list's 100
        assert listing.query["sort"] == ["downloads"] and listing.query["num_parameters"] == [
            "max:26.5B"
        ]  # (16 - 1) GiB at 4.85 bits
    assert all(s.fits(16 * GIB) for s in found.starters)

    offline = HubClient(client.cache.root, endpoint="http://127.0.0.1:9")  # nothing listens on port 9
    saved = hub_suggestions(offline, 16 * GIB)
    assert saved.source == "saved" and saved.starters == found.starters
    fewer = hub_suggestions(offline, 4 * GIB)  # less memory: the smaller ones saved
    assert [s.repo for s in fewer.starters] == ["ggml-org/SmolLM3-3B-GGUF", "ggml-org/gemma-3-1b-it-GGUF"]
    never = HubClient(client.cache.root.parent / "fresh-cache", endpoint="http://127.0.0.1:9")
    built_in = hub_suggestions(never, 16 * GIB)
    assert built_in.source == "built-in" and {s.repo for s in built_in.starters} <= {s.repo for s in STARTERS}
    assert built_in.starters

    hub.reset()  # the Hub answers, with nothing for us: the last good answer stays saved
    assert hub_suggestions(client, 16 * GIB).source == "well-known"  # not "the Hub cannot be reached"
    assert hub_suggestions(offline, 16 * GIB) == saved
    hub.log.clear()  # too little memory for any chat model: the Hub is not asked, and the reason is told
    assert hub_suggestions(client, 10**8) == Suggestions([], "little-memory") and not hub.log.all()


def _rare_among_many(hub: HubStub, count: int, rare_at: int, owner: str = "r") -> None:
    for n in range(count):
        hub.add_repo(
            f"{owner}/m{n:03d}-GGUF",
            {"m-Q4_0.gguf": 10},
            downloads=10_000 - n,
            gguf={"total": 10**9, "architecture": "rare" if n == rare_at else "llama"},
        )


def _costs(hub: HubStub, owner: str = "r") -> tuple[int, int]:
    """(listing pages, model infos) asked since the log was cleared."""
    logged = [r for r in hub.log.all() if r.method == "GET"]
    return (
        len([r for r in logged if r.path == "/api/models"]),
        len([r for r in logged if r.path.startswith(f"/api/models/{owner}/")]),
    )


def test_a_rare_architecture_costs_at_most_the_cap_per_call(hub: HubStub) -> None:
    """One next() follows at most 3 listing pages and asks at most 300 model infos, then answers with what it
    found (maybe nothing): not done, so the caller may ask for more."""
    from app.hub.client import MAX_INFOS_PER_CALL, MAX_PAGES_PER_CALL

    assert (MAX_PAGES_PER_CALL, MAX_INFOS_PER_CALL) == (3, 300)
    _rare_among_many(hub, 350, rare_at=340)
    pages = _client().search(SearchQuery(architecture="rare", sort="downloads"))
    costs, found = [], []
    while not pages.done and len(costs) < 10:
        hub.log.clear()
        found += pages.next(20)
        costs.append((_costs(hub), pages.capped))
    assert [m.id for m in found] == ["r/m340-GGUF"]
    assert costs == [((3, 300), True), ((1, 50), False)]  # pages of 100 rows: 3 pages, then the last one

    # A page larger than the budget of model infos (500 rows): 300 of its rows, then the other 200
    fresh = HubClient(AppPaths.from_env().cache_dir / "fresh-hub-cache")
    pages = fresh.search(SearchQuery(architecture="rare", sort="downloads", limit=500))
    costs, found = [], []
    while not pages.done and len(costs) < 10:
        hub.log.clear()
        found += pages.next(20)
        costs.append(_costs(hub))
    assert [m.id for m in found] == ["r/m340-GGUF"] and costs == [(1, 300), (0, 50)]


def test_a_rate_limit_stops_the_architecture_filter(hub: HubStub) -> None:
    _rare_among_many(hub, 100, rare_at=99)
    hub.add_fault(
        Fault(path="/api/models/r/", status=429, headers={"RateLimit": '"api";r=0;t=55'}, times=None)
    )
    pages = _client().search(SearchQuery(architecture="rare"))
    with pytest.raises(AppError, match="limiting requests; try again in 55 s"):
        pages.next(20)
    from app.hub.client import ARCHITECTURE_WORKERS

    assert _costs(hub)[1] <= ARCHITECTURE_WORKERS  # those in flight when the first 429 came, no more
    hub.log.clear()
    with pytest.raises(AppError, match="limiting requests"):
        pages.next(20)  # the search stays stopped: nothing more is asked
    assert _costs(hub) == (0, 0)


def test_a_replaced_search_stops_asking_at_once_and_holds_nothing_up(hub: HubStub) -> None:
    """cancel() (a newer search, or quitting) ends a next() while its model infos are still in flight; those
    run on daemon threads, so they hold up neither the caller nor the interpreter's exit."""
    import threading

    from app.hub.client import ARCHITECTURE_WORKERS

    _rare_among_many(hub, 200, rare_at=199)
    hub.add_fault(Fault(path="/api/models/r/", delay_seconds=2.0, times=None))  # a slow Hub
    pages = _client().search(SearchQuery(architecture="rare"))
    answered: list[object] = []
    caller = threading.Thread(target=lambda: answered.append(pages.next(20)), daemon=True)
    caller.start()
    time.sleep(0.5)  # the listing is in, the first model infos are in flight
    workers = [t for t in threading.enumerate() if t.name.startswith("hub-arch")]
    assert workers and all(t.daemon for t in workers)
    pages.cancel()
    caller.join(timeout=1.0)
    assert not caller.is_alive() and answered == [[]]  # before the 2 s answers
    time.sleep(0.3)
    asked = {r.path for r in hub.log.all() if r.method == "GET" and r.path.startswith("/api/models/r/")}
    # the ones in flight ended and no other repo was asked (a loaded machine may see a transport retry of
    # one in flight: the same repo twice, once seen in a full run)
    assert len(asked) == ARCHITECTURE_WORKERS


def test_a_filtered_search_keeps_its_own_saved_page(hub: HubStub) -> None:
    hub.add_repo("a/llama-one-GGUF", {"m-Q4_0.gguf": 10}, gguf={"architecture": "llama"})
    hub.add_repo("b/qwen-two-GGUF", {"m-Q4_0.gguf": 10}, gguf={"architecture": "qwen3"})
    client = _client()
    everything = {m.id for m in client.search(SearchQuery()).next(10)}
    assert everything == {"a/llama-one-GGUF", "b/qwen-two-GGUF"}
    assert [m.id for m in client.search(SearchQuery(architecture="qwen3")).next(10)] == ["b/qwen-two-GGUF"]
    offline = HubClient(client.cache.root, endpoint="http://127.0.0.1:9")  # nothing listens on port 9
    unfiltered = offline.search(SearchQuery())
    assert {m.id for m in unfiltered.next(10)} == everything and unfiltered.stale
    filtered = offline.search(SearchQuery(architecture="qwen3"))
    assert [m.id for m in filtered.next(10)] == ["b/qwen-two-GGUF"] and filtered.stale


def test_a_repo_without_gguf_yet_is_asked_again(hub: HubStub, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    hub.add_repo("late/m-GGUF", {"m-Q4_0.gguf": 10}, gguf=None)  # still uploading: no gguf in model info
    client = _client()
    assert client.facts("late/m-GGUF") == {"parameters": None, "architecture": None}
    assert client.details("late/m-GGUF").value.architecture is None
    hub.add_repo("late/m-GGUF", {"m-Q4_0.gguf": 10}, gguf={"total": 10**9, "architecture": "llama"})
    hub.log.clear()
    fsyncs: list[int] = []
    monkeypatch.setattr(os, "fsync", fsyncs.append)
    assert client.facts("late/m-GGUF") == {"parameters": 10**9, "architecture": "llama"}
    assert len(hub.log.matching("/api/models/late/")) == 1 and fsyncs == []  # a cache: no fsync
    hub.log.clear()
    assert client.facts("late/m-GGUF")["architecture"] == "llama" and not hub.log.all()  # now remembered


def test_a_next_link_to_another_origin_is_not_followed(hub: HubStub) -> None:
    """The token goes to the endpoint's own scheme, host and port only."""
    import json

    port = hub.endpoint.rsplit(":", 1)[1]
    rows = json.dumps([{"id": "x/m-GGUF"}]).encode()
    for n, elsewhere in enumerate(
        [
            f"{hub.cdn_endpoint}/api/models",
            f"http://localhost:{port}/api/models",
            f"https://127.0.0.1:{port}/",
        ]
    ):
        hub.log.clear()
        link = f'<{elsewhere}?cursor=1&filter=gguf>; rel="next"'
        hub.add_fault(Fault(path="/api/models", body=rows, headers={"Link": link}, times=1))
        pages = _client(token="hf_secret").search(SearchQuery(text=f"elsewhere-{n}"))
        assert [m.id for m in pages.next(50)] == ["x/m-GGUF"] and pages.done
        assert [(r.server, r.path) for r in hub.log.all()] == [("hub", "/api/models")]


def test_a_rate_limit_with_an_http_date_says_how_long_to_wait(hub: HubStub) -> None:
    from datetime import UTC, datetime, timedelta
    from email.utils import format_datetime

    hub.add_repo("a/b-GGUF", {"b-Q8_0.gguf": 10})
    when = datetime.now(UTC) + timedelta(seconds=600)  # past the client's short wait: reported, not waited
    hub.add_fault(Fault(path="/api/models", status=429, retry_after=format_datetime(when, usegmt=True)))
    with pytest.raises(AppError) as raised:
        _client().search(SearchQuery(text="zzz-never-cached")).next(10)
    assert re.search(r"try again in (59\d|600) s\.", raised.value.user_message), raised.value.user_message
