"""Starter models for the first run: the instruct GGUF repos of well-known quantizers that are downloaded most
and fit this machine, asked of the Hub; a built-in list (with the size of each Q4_K_M file) when the Hub has
never answered."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil

from app.errors import AppError
from app.runtime.memory import CPU_MARGIN, physical_cores
from app.units import GIB

if TYPE_CHECKING:
    from app.hub.client import HubClient, ModelSummary

log = logging.getLogger(__name__)

KV_ALLOWANCE = GIB // 2  # a few thousand tokens of context for models of this size
Q4_K_M_BITS = 4.85  # mean bits per weight of a Q4_K_M file (its Q6_K tensors lift Q4_K's 4.5)
QUANTIZERS = ("bartowski", "unsloth", "lmstudio-community", "ggml-org")  # whose repos are suggested
ROWS_PER_QUANTIZER = 20
SIZED_CANDIDATES = 12  # the most downloaded few whose parameter count is asked (model info, cached)
SAVED_KEY = "welcome-suggestions"  # the Hub's last answer, for a first run offline
MIN_PARAMETERS = 10**8  # a smaller chat model is not worth suggesting


@dataclass(frozen=True)
class Starter:
    repo: str
    label: str
    q4_bytes: int  # the Q4_K_M file

    def fits(self, free_bytes: int) -> bool:
        return self.q4_bytes + KV_ALLOWANCE + CPU_MARGIN <= free_bytes


STARTERS = (
    Starter(
        "bartowski/SmolLM2-1.7B-Instruct-GGUF", "SmolLM2 1.7B: small, quick, for any machine", 1_060_000_000
    ),
    Starter("bartowski/Llama-3.2-3B-Instruct-GGUF", "Llama 3.2 3B: a good all-rounder", 2_020_000_000),
    Starter("bartowski/Qwen_Qwen3-8B-GGUF", "Qwen3 8B: strong at code and languages, thinks", 5_030_000_000),
    Starter("bartowski/google_gemma-3-12b-it-GGUF", "Gemma 3 12B: careful writing", 7_300_000_000),
    Starter(
        "bartowski/mistralai_Mistral-Small-3.2-24B-Instruct-2506-GGUF",
        "Mistral Small 3.2 24B: for 24 GB and up",
        14_330_000_000,
    ),
)


def suggestions(free_bytes: int, count: int = 3) -> list[Starter]:
    """The largest built-in starters that fit, smallest first (the first one always fits if any does)."""
    fitting = [s for s in STARTERS if s.fits(free_bytes)]
    return fitting[-count:]


@dataclass(frozen=True)
class Suggestions:
    starters: list[Starter]
    # "hub", "saved" (the Hub's last answer, offline), "built-in" (offline and the Hub never answered),
    # "well-known" (the built-in list: the Hub had none that fit) or "little-memory" (no chat model worth
    # suggesting fits the memory free: the Hub was not asked)
    source: str


def largest_fitting_parameters(free_bytes: int) -> int:
    """The most parameters whose Q4_K_M file, with room for a context, fits in `free_bytes`."""
    return max(0, int((free_bytes - KV_ALLOWANCE - CPU_MARGIN) * 8 / Q4_K_M_BITS))


def little_memory(free_bytes: int) -> bool:
    """Whether no chat model worth suggesting (10^8 parameters at Q4_K_M, with a context) fits."""
    return largest_fitting_parameters(free_bytes) < MIN_PARAMETERS


def built_in_suggestions(free_bytes: int, count: int = 3) -> Suggestions:
    """The shipped list, without asking the Hub."""
    if little_memory(free_bytes):
        return Suggestions([], "little-memory")
    return Suggestions(suggestions(free_bytes, count), "built-in")


def hub_suggestions(client: HubClient, free_bytes: int, count: int = 3) -> Suggestions:
    """The `count` most downloaded chat GGUF repos of the well-known quantizers that fit, one per model (a
    model several of them quantized is suggested once). Offline: the Hub's last answer, else the built-in
    list. Blocking: run it off the GUI thread."""
    if little_memory(free_bytes):  # nothing worth asking the Hub about
        return Suggestions([], "little-memory")
    most = largest_fitting_parameters(free_bytes)
    source = "hub"
    try:
        popular, stale = _popular(client, most // MIN_PARAMETERS * MIN_PARAMETERS)
        if popular:  # an empty answer never replaces the last good one
            client.cache.put(SAVED_KEY, [vars(starter) for starter in popular])
        elif stale:  # the listings saved held nothing: the suggestions saved may
            popular = _saved(client)
        source = "saved" if stale else source
    except AppError as exc:
        log.info("welcome: the Hub's suggestions from last time: %s", exc.user_message)
        popular, source = _saved(client), "saved"
    picks = [starter for starter in popular if starter.fits(free_bytes)][:count]
    if not picks:  # never answered, or had none for us: better the list we ship than nothing
        return Suggestions(suggestions(free_bytes, count), "built-in" if source == "saved" else "well-known")
    return Suggestions(picks, source)


def _popular(client: HubClient, max_params: int) -> tuple[list[Starter], bool]:
    """The quantizers' chat repos up to `max_params`, most downloaded first, with their sizes; and whether
    the listings came from the cache (the Hub could not be reached)."""
    from app.hub.client import SearchQuery

    queries = [
        SearchQuery(
            author=author,
            sort="downloads",
            tags=("conversational",),  # the Hub's tag for a repo with a chat template
            max_params=max_params,
            limit=ROWS_PER_QUANTIZER,  # a page of what is used, not the Discover list's 100
        )
        for author in QUANTIZERS
    ]

    def first_rows(query: SearchQuery) -> tuple[list[ModelSummary], bool]:
        pages = client.search(query)
        return pages.next(ROWS_PER_QUANTIZER), pages.stale

    with ThreadPoolExecutor(len(queries), thread_name_prefix="hub-welcome") as pool:
        answers = list(pool.map(first_rows, queries))
        rows: list[ModelSummary] = []
        names: set[str] = set()
        for row in sorted((row for found, _ in answers for row in found), key=lambda r: -r.downloads):
            if _model_name(row.id) not in names:
                names.add(_model_name(row.id))
                rows.append(row)
        rows = rows[:SIZED_CANDIDATES]
        facts = list(pool.map(client.facts, [row.id for row in rows]))  # parameters: cached per repo
    popular = [
        Starter(row.id, _label(row, known["parameters"]), int(known["parameters"] * Q4_K_M_BITS / 8))
        for row, known in zip(rows, facts, strict=True)
        if known.get("parameters")
    ]
    return popular, any(stale for _, stale in answers)


def _saved(client: HubClient) -> list[Starter]:
    try:
        return [Starter(**row) for row in client.cache.get(SAVED_KEY) or []]
    except TypeError:  # a cache file from another version: as if there were none
        return []


def _model_name(repo: str) -> str:
    """The model a GGUF repo quantizes: bartowski/Qwen_Qwen3-8B-GGUF and unsloth/Qwen3-8B-GGUF are one."""
    name = repo.split("/", 1)[-1].lower().removesuffix("-gguf")
    return name.split("_", 1)[1] if "_" in name else name  # bartowski prefixes the original owner


def _label(row: ModelSummary, parameters: int) -> str:
    name = row.id.split("/", 1)[-1].removesuffix("-GGUF").removesuffix("-gguf")
    return f"{name} ({parameters / 1e9:.1f}B parameters, {row.downloads:,} downloads last month)"


def cpu_name() -> str:
    """The CPU as its cores (psutil, on every system; the model name is in no portable place)."""
    threads = psutil.cpu_count() or 0
    return f"{physical_cores()} cores ({threads} threads)" if threads else f"{physical_cores()} cores"
