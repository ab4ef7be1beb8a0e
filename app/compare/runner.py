"""Compare: one prompt, 2 to 4 models, each in an engine of its own, with honest numbers.

Fair mode runs the models one after another, each alone on the machine (load, answer, unload), so that
models that do not fit together can still be compared and no speed is skewed by another's work. Parallel
mode runs them at once, only when the memory estimate says they fit together. A column whose engine fails
or crashes is marked failed; the others go on. Follow-up turns keep each column's own conversation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.compare.store import file_sha256
from app.errors import AppError, ErrorKind, to_app_error
from app.paths import AppPaths
from app.remote.endpoints import RemoteModel
from app.runtime.engine import Engine
from app.runtime.memory import MemoryEstimate, estimate, free_ram
from app.runtime.preflight import check_load
from app.runtime.protocol import (
    ChatMessage,
    Finished,
    GenerateRequest,
    LoadedModel,
    LoadParams,
    Notice,
    Piece,
    SamplingParams,
)
from app.units import gb

if TYPE_CHECKING:
    from app.remote.engine import RemoteEngine

FAIR, PARALLEL = "fair", "parallel"
MIN_MODELS, MAX_MODELS = 2, 4
KILL_RESERVE_S = 0.5  # of a close's time: what is kept for killing engines that have not stopped
ModelSpec = LoadParams | RemoteModel  # a local file, or a model served elsewhere


@dataclass(frozen=True)
class CompareSettings:
    system: str = ""
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.0, seed=42))
    max_tokens: int = 256
    mode: str = FAIR


@dataclass
class Column:
    """One model's side of the comparison: its conversation so far and the last turn's numbers."""

    params: ModelSpec
    messages: list[ChatMessage] = field(default_factory=list)
    text: str = ""
    reasoning: str = ""  # a reasoning model's thinking, apart from its answer
    reasoning_ms: float = 0.0
    name: str = ""
    quant: str = ""
    load_ms: float = 0.0
    ttft_ms: float = 0.0
    prompt_tokens_per_s: float = 0.0
    tokens_per_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    peak_memory_bytes: int = 0
    finish_reason: str = ""
    error: str = ""
    state: str = "waiting"  # waiting, loading, answering, done, failed
    tokens_over_time: list[tuple[float, int]] = field(default_factory=list)  # (ms since the request, tokens)

    def metrics(self) -> dict[str, Any]:
        return {
            "load_ms": round(self.load_ms, 1),
            "ttft_ms": round(self.ttft_ms, 1),
            "prompt_tokens_per_s": round(self.prompt_tokens_per_s, 1),
            "tokens_per_s": round(self.tokens_per_s, 2),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "peak_memory_bytes": self.peak_memory_bytes,
            "finish_reason": self.finish_reason,
            "reasoning_ms": round(self.reasoning_ms, 1),
        }


Listener = Callable[[int, Column], None]  # column index, its state now (called from runner threads)


class Comparison:
    """Columns that answer the same prompts. `turn()` blocks until every column is done; `listener` sees
    each column change (text arrives, numbers are in, it failed)."""

    def __init__(
        self,
        paths: AppPaths,
        columns: Sequence[ModelSpec],
        settings: CompareSettings,
        sha256: Callable[[Path], str] = file_sha256,  # CompareStore.sha256: hashed once per file version
    ) -> None:
        if not MIN_MODELS <= len(columns) <= MAX_MODELS:
            raise AppError(ErrorKind.BAD_INPUT, f"Compare takes {MIN_MODELS} to {MAX_MODELS} models.")
        self.paths = paths
        self.settings = settings
        self.columns = [Column(params) for params in columns]
        self.stopping = threading.Event()
        self.closed = False  # quitting: no engine starts any more
        self._engines: dict[int, Engine | RemoteEngine] = {}
        self._lock = threading.Lock()
        self._engines_ended = threading.Condition(self._lock)
        self.turns: list[list[dict[str, Any]]] = [[] for _ in columns]  # per column: prompt, text, metrics
        self._sha256: dict[Path, str] = {}
        self._hash = sha256

    def data(self) -> dict[str, Any]:
        """Everything a saved run keeps: settings, and per column the model (with its file's sha256) and
        every turn's prompt, text, metrics and error."""
        for column in self.columns:
            path = column.params.model_path
            if path not in self._sha256:  # a remote model has no file of ours to hash
                is_local = isinstance(column.params, LoadParams)
                self._sha256[path] = self._hash(path) if is_local else ""
        sampling = self.settings.sampling
        return {
            "settings": {
                "mode": self.settings.mode,
                "system": self.settings.system,
                "max_tokens": self.settings.max_tokens,
                "temperature": sampling.temperature,
                "seed": sampling.seed,
                "top_k": sampling.top_k,
                "top_p": sampling.top_p,
            },
            "columns": [
                {
                    "model": column.name or column.params.model_path.name,
                    "quant": column.quant,
                    "path": model_where(column.params),
                    "sha256": self._sha256[column.params.model_path],
                    "turns": turns,
                }
                for column, turns in zip(self.columns, self.turns, strict=True)
            ],
        }

    def check_parallel(self, available: int | None = None) -> None:
        """Refuse a parallel run the memory estimate says cannot fit (all models loaded together)."""
        needs: list[MemoryEstimate] = []
        for column in self.columns:
            if not isinstance(column.params, LoadParams):
                continue  # served elsewhere: takes no memory here
            header, params = check_load(column.params, force=True)
            needs.append(estimate(header, params.n_ctx or 0, params.type_k, params.type_v))
        if not needs:
            return
        total = sum(n.weights + n.kv_cache for n in needs) + max(n.margin for n in needs) * len(needs)
        free = free_ram() if available is None else available
        if total > free:
            raise AppError(
                ErrorKind.OUT_OF_MEMORY,
                f"These models need about {gb(total)} together and {gb(free)} is free: run them in Fair mode "
                "(one after another).",
            )

    def turn(self, prompt: str, listener: Listener = lambda index, column: None) -> list[Column]:
        self.stopping.clear()
        for column in self.columns:
            column.messages.append(ChatMessage("user", prompt))
            column.text, column.error, column.state, column.tokens_over_time = "", "", "waiting", []
            column.reasoning, column.reasoning_ms = "", 0.0
        if self.settings.mode == PARALLEL:
            self.check_parallel()
            threads = [
                threading.Thread(target=self._answer, args=(i, listener), name=f"compare-{i}", daemon=True)
                for i in range(len(self.columns))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            for index in range(len(self.columns)):
                if self.stopping.is_set():
                    break
                self._answer(index, listener)
        for column, turns in zip(self.columns, self.turns, strict=True):
            turns.append(
                {
                    "prompt": prompt,
                    "text": column.text,
                    "reasoning": column.reasoning,
                    "error": column.error,
                    "metrics": column.metrics(),
                }
            )
        return self.columns

    def stop(self) -> None:
        """Stop every answer now (from any thread); what has arrived stays."""
        self.stopping.set()
        with self._lock:
            engines = list(self._engines.values())
        for engine in engines:
            engine.stop()

    def close(self, timeout_s: float) -> bool:
        """Quitting: stop every answer and start no engine; wait up to `timeout_s` for the engines to end,
        killing those still running near the end (a load, a hung engine). True if all have ended."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self.closed = True
        self.stop()
        with self._engines_ended:
            self._engines_ended.wait_for(
                lambda: not self._engines, deadline - KILL_RESERVE_S - time.monotonic()
            )
            running = list(self._engines.values())
        for engine in running:
            engine.kill()  # the call waiting on it fails at once; its thread then closes it
        with self._engines_ended:
            return self._engines_ended.wait_for(lambda: not self._engines, deadline - time.monotonic())

    def _answer(self, index: int, listener: Listener) -> None:
        column = self.columns[index]
        engine = _engine_for(column.params, self.paths)
        with self._lock:
            if self.closed:
                return
            self._engines[index] = engine
        try:
            column.state = "loading"
            listener(index, column)
            model = _load(engine, column.params)
            column.name, column.quant, column.load_ms = model.name, model.quant, model.load_ms
            column.state = "answering"
            listener(index, column)
            system = [ChatMessage("system", self.settings.system)] if self.settings.system.strip() else []
            request = GenerateRequest(
                engine.new_request_id(),
                tuple(system + column.messages),
                sampling=self.settings.sampling,
                max_tokens=self.settings.max_tokens,
            )
            started = time.perf_counter()
            for event in engine.generate(request):
                if isinstance(event, Piece):
                    if event.reasoning:
                        column.reasoning += event.text
                    else:
                        column.text += event.text
                    column.tokens_over_time.append(((time.perf_counter() - started) * 1000, event.tokens))
                    listener(index, column)
                elif isinstance(event, Notice):
                    continue
                elif isinstance(event, Finished):
                    stats = event.stats
                    column.ttft_ms, column.tokens_per_s = stats.ttft_ms, stats.tokens_per_s
                    column.prompt_tokens_per_s = stats.prompt_tokens_per_s
                    column.prompt_tokens, column.completion_tokens = (
                        stats.prompt_tokens,
                        stats.completion_tokens,
                    )
                    column.finish_reason, column.reasoning_ms = stats.finish_reason, stats.reasoning_ms
                    elapsed = (time.perf_counter() - started) * 1000  # the last tokens may have shown no text
                    column.tokens_over_time.append((elapsed, stats.completion_tokens))
                if self.stopping.is_set():
                    engine.stop(request.request_id)
            column.peak_memory_bytes = engine.stats().peak_rss_bytes
            column.messages.append(ChatMessage("assistant", column.text, column.reasoning.strip()))
            column.state = "done"
        except Exception as exc:  # this column failed (a bad file, a crash); the others go on
            error = to_app_error(exc)
            column.error, column.state = error.user_message, "failed"
            if column.messages and column.messages[-1].role == "user":
                column.messages.pop()  # its turn did not happen
        finally:
            engine.close()  # fair: unload before the next model loads; parallel: free it when done
            with self._engines_ended:
                self._engines.pop(index, None)
                self._engines_ended.notify_all()
            listener(index, column)


def _engine_for(spec: ModelSpec, paths: AppPaths) -> Engine | RemoteEngine:
    """The one place a column's model becomes an engine: a process of ours, or a remote endpoint."""
    if isinstance(spec, RemoteModel):
        # here: its client (requests) loads when a remote model runs, not with the window
        from app.remote.engine import RemoteEngine

        return RemoteEngine(spec)
    return Engine(paths)


def _load(engine: Engine | RemoteEngine, spec: ModelSpec) -> LoadedModel:
    if not isinstance(engine, Engine):
        return engine.load()  # checks that the endpoint offers the model
    assert isinstance(spec, LoadParams)
    return engine.load(spec)


def model_where(spec: ModelSpec) -> str:
    """A saved run's path of a model: its file, or `remote:NAME/MODEL_ID` exactly (a Path folds '//')."""
    return spec.label if isinstance(spec, RemoteModel) else str(spec.model_path)
