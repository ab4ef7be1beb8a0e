"""The typed messages between the app and an engine process (pickled over a multiprocessing pipe)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from app.runtime.gguf_header import GGUFHeader
from app.settings import DEFAULT_CONTEXT

# A token is rarely more than 16 characters: turns longer than the context by their length alone are left
# out before any rendering or tokenizing (in the app before they cross the pipe, in the engine before the
# template renders), so a long chat costs what its sendable part costs.
CHARS_PER_TOKEN_MAX = 16
SENT_CHARS_MAX = 1 << 19  # half of what a template may render (templates.MAX_OUTPUT): room for its markup


def sendable_chars(n_ctx: int) -> int:
    """The most characters of turns worth sending for a context of `n_ctx` tokens."""
    return min(SENT_CHARS_MAX, n_ctx * CHARS_PER_TOKEN_MAX)


TURN_OVERHEAD_CHARS = 64


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system", "user" or "assistant"
    content: str
    reasoning: str = ""  # a reasoning model's thinking before this reply (templates decide if it is sent)


@dataclass(frozen=True)
class LoadParams:
    """Every knob passed to llama.cpp explicitly; None means 'decide from the model and machine'."""

    model_path: Path
    n_ctx: int | None = None  # None: min(trained context, DEFAULT_CONTEXT)
    n_threads: int | None = None  # None: physical cores
    n_batch: int = 512
    n_gpu_layers: int | None = 0  # None: auto from the memory estimate when a GPU backend is present
    flash_attn: bool = True
    type_k: str = "f16"
    type_v: str = "f16"
    max_auto_ctx: int = DEFAULT_CONTEXT  # the most an automatic context length may be (a setting)
    use_mmap: bool = True
    use_mlock: bool = False
    seed: int = 0xFFFFFFFF  # llama.cpp's "random"
    n_parallel: int = 1  # sequences decoded together in one batch (the server's --parallel), n_ctx each

    def context_for(self, header: GGUFHeader) -> int:
        """The context length to load with: the one asked for, else the model's, at most `max_auto_ctx`."""
        return self.n_ctx or min(header.context_length or self.max_auto_ctx, self.max_auto_ctx)


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0  # OpenAI's: subtracted once from a token already in the reply
    frequency_penalty: float = 0.0  # OpenAI's: subtracted per occurrence in the reply
    seed: int | None = None  # None: a new random seed per reply


@dataclass(frozen=True)
class GenerateRequest:
    """One reply. Exactly one of `messages` (chat), `prompt` (raw text) or `prompt_tokens` is given."""

    request_id: int
    messages: tuple[ChatMessage, ...] = ()
    prompt: str | None = None
    prompt_tokens: tuple[int, ...] = ()
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = 512  # None: until the context is full
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # benchmarks generate a fixed number of tokens
    reuse_cache: bool = True  # keep the KV cache of a shared prompt prefix from the previous reply
    enable_thinking: bool | None = None  # the template's switch (Qwen3); None: the template's default
    omitted_messages: int = 0  # older messages the app left out before sending (counted in the notice)
    grammar: str | None = None  # GBNF the reply must match (llama.cpp's grammar sampler): JSON output


@dataclass(frozen=True)
class LoadedModel:
    path: Path
    name: str
    arch: str
    quant: str
    n_params: int
    n_ctx: int
    n_ctx_train: int
    n_vocab: int
    n_threads: int
    n_gpu_layers: int
    flash_attn: bool
    has_chat_template: bool
    load_ms: float
    thinking_switch: bool = False  # the template takes `enable_thinking` (Qwen3 and others)
    n_parallel: int = 1  # sequences the engine decodes together


@dataclass(frozen=True)
class ReplyStats:
    finish_reason: str  # "stop" (end token or stop string), "length", "stopped"
    prompt_tokens: int
    prompt_eval_tokens: int  # prompt tokens computed (the rest came from the cache)
    completion_tokens: int
    ttft_ms: float
    prompt_tokens_per_s: float
    tokens_per_s: float
    trimmed_messages: int = 0  # oldest messages dropped to fit the context
    notices: tuple[str, ...] = ()
    reasoning_ms: float = 0.0  # from the first reasoning text to the first text of the answer
    prepare_ms: float = 0.0  # from the request to the prompt's first decode (render, tokenize, cache)
    widest_batch: int = 1  # the most replies (this one included) that one of this reply's decodes carried


@dataclass(frozen=True)
class EngineStats:
    pid: int
    rss_bytes: int
    peak_rss_bytes: int
    model: LoadedModel | None


# --- app -> engine ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    params: LoadParams
    force: bool = False  # load even if the memory estimate says it will not fit


@dataclass(frozen=True)
class Generate:
    request: GenerateRequest


@dataclass(frozen=True)
class Embed:
    """One embedding vector per text (OpenAI's /v1/embeddings)."""

    request_id: int
    texts: tuple[str, ...]


@dataclass(frozen=True)
class Stop:
    request_id: int


@dataclass(frozen=True)
class Unload:
    pass


@dataclass(frozen=True)
class GetStats:
    pass


@dataclass(frozen=True)
class Shutdown:
    pass


Command = Load | Generate | Embed | Stop | Unload | GetStats | Shutdown

# --- engine -> app ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    model: LoadedModel


@dataclass(frozen=True)
class Unloaded:
    pass


@dataclass(frozen=True)
class Notice:
    request_id: int
    text: str


@dataclass(frozen=True)
class Piece:
    request_id: int
    text: str
    tokens: int  # completion tokens generated so far, this piece's included
    reasoning: bool = False  # the model's thinking, shown apart from the answer


@dataclass(frozen=True)
class Finished:
    request_id: int
    stats: ReplyStats


@dataclass(frozen=True)
class Embedded:
    request_id: int
    vectors: tuple[tuple[float, ...], ...]  # one per text, in order, normalised (length 1)
    prompt_tokens: int


@dataclass(frozen=True)
class Failed:
    """A command failed inside the engine; the engine itself is still usable."""

    kind: str  # an ErrorKind value
    message: str
    detail: str
    request_id: int | None = None


@dataclass(frozen=True)
class StatsReply:
    stats: EngineStats


Event = Loaded | Unloaded | Notice | Piece | Finished | Embedded | Failed | StatsReply
