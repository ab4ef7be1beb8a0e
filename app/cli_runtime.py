"""`hubside run` and `hubside bench`: the engine from a terminal."""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

from app.cli_models import resolve_model
from app.errors import AppError, ErrorKind
from app.paths import AppPaths
from app.remote.endpoints import endpoint_store, split_remote
from app.remote.engine import CUT, RemoteEngine
from app.runtime.engine import Engine
from app.runtime.protocol import (
    ChatMessage,
    Finished,
    GenerateRequest,
    LoadedModel,
    LoadParams,
    Notice,
    Piece,
    ReplyStats,
    SamplingParams,
)
from app.settings import DEFAULT_CONTEXT

AnyEngine = Engine | RemoteEngine  # a model of ours, or one served elsewhere


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser("run", help="chat with a GGUF model in the terminal, or answer one prompt")
    _add_model_arguments(run)
    run.add_argument("--prompt", help="answer this once and exit (otherwise: an interactive chat)")
    run.add_argument("--system", help="system prompt")
    run.add_argument("--max-tokens", type=int, default=512)
    run.add_argument("--temperature", type=float, default=0.7)
    run.add_argument("--seed", type=int, help="sampling seed (default: random)")
    run.add_argument("--json", action="store_true", help="print one JSON object with the reply and its stats")

    bench = commands.add_parser("bench", help="measure prompt and generation speed, as llama-bench does")
    _add_model_arguments(bench)
    bench.add_argument("-p", "--n-prompt", type=int, default=512, help="prompt tokens (pp test)")
    bench.add_argument("-n", "--n-gen", type=int, default=128, help="generated tokens (tg test)")
    bench.add_argument("--reps", type=int, default=3)
    bench.add_argument("--json", action="store_true")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", help="a .gguf file, a library id (see `hubside ls`), or remote:NAME/MODEL_ID"
    )
    parser.add_argument(
        "--ctx", type=int, help=f"context length (default: the model's, at most {DEFAULT_CONTEXT})"
    )
    parser.add_argument("--threads", type=int, help="CPU threads (default: physical cores)")
    parser.add_argument("--gpu-layers", default="0", help="layers to offload to the GPU: N or auto")
    parser.add_argument("--no-flash-attn", action="store_true", help="turn flash attention off")
    parser.add_argument("--force", action="store_true", help="load even if the memory estimate says no")


def _load_params(args: argparse.Namespace) -> LoadParams:
    if not args.model.is_file():
        raise AppError(ErrorKind.NOT_FOUND, f"No such model file: {args.model}")
    if args.gpu_layers == "auto":
        gpu_layers: int | None = None
    else:
        try:
            gpu_layers = int(args.gpu_layers)
        except ValueError:
            raise AppError(ErrorKind.BAD_INPUT, "--gpu-layers takes a number or 'auto'.") from None
    return LoadParams(
        model_path=args.model,
        n_ctx=args.ctx,
        n_threads=args.threads,
        n_gpu_layers=gpu_layers,
        flash_attn=not args.no_flash_attn,
    )


@contextmanager
def _ctrl_c_stops(engine: AnyEngine) -> Iterator[None]:
    """From the request on (prompt processing included), Ctrl-C asks the engine to stop the reply, which
    then ends as 'stopped' with what it said so far; no KeyboardInterrupt is raised meanwhile."""

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=engine.stop, daemon=True).start()  # never block inside a handler

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class _Reply:
    text: str
    reasoning: str
    stats: ReplyStats


def _stream(engine: AnyEngine, request: GenerateRequest, echo: bool) -> _Reply:
    """Stream a reply; echoed, the answer goes to stdout and the thinking to stderr (scripts get only
    the answer)."""
    pieces: list[str] = []
    thoughts: list[str] = []
    with _ctrl_c_stops(engine):
        for event in engine.generate(request):
            if isinstance(event, Piece):
                (thoughts if event.reasoning else pieces).append(event.text)
                if echo:
                    out = sys.stderr if event.reasoning else sys.stdout
                    out.write(event.text)
                    out.flush()
            elif isinstance(event, Notice):
                print(f"hubside: note: {event.text}", file=sys.stderr)
            elif isinstance(event, Finished):
                return _Reply("".join(pieces), "".join(thoughts).strip(), event.stats)
    raise AppError(ErrorKind.INTERNAL, "The engine ended the reply without finishing it.")


def run_command(args: argparse.Namespace, paths: AppPaths) -> int:
    if split_remote(args.model) is not None:  # served elsewhere: the endpoint formats and runs it
        with RemoteEngine(endpoint_store(paths).resolve(args.model)) as remote:
            return _run(remote, remote.load(), args)
    args.model = resolve_model(Path(args.model), paths)
    params = _load_params(args)
    with Engine(paths) as engine:
        return _run(engine, engine.load(params, force=args.force), args)


def _run(engine: AnyEngine, model: LoadedModel, args: argparse.Namespace) -> int:
    sampling = SamplingParams(temperature=args.temperature, seed=args.seed)
    history = [ChatMessage("system", args.system)] if args.system else []
    if args.prompt is None:
        return _interactive(engine, model, history, sampling, args.max_tokens)
    history.append(ChatMessage("user", args.prompt))
    request = GenerateRequest(
        engine.new_request_id(), tuple(history), sampling=sampling, max_tokens=args.max_tokens
    )
    reply = _stream(engine, request, echo=not args.json)
    if args.json:
        print(json.dumps(_summary(reply, model)))
    else:
        print()
    if reply.stats.finish_reason == CUT:  # the partial reply is out; say once that it is not whole
        print("hubside: the connection broke off mid-reply; the text above is partial.", file=sys.stderr)
        return 1
    return 0


def _summary(reply: _Reply, model: LoadedModel) -> dict[str, object]:
    stats = reply.stats
    return {
        "text": reply.text,
        "reasoning": reply.reasoning,
        "reasoning_ms": round(stats.reasoning_ms, 2),
        "finish_reason": stats.finish_reason,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "ttft_ms": round(stats.ttft_ms, 2),
        "prompt_tokens_per_s": round(stats.prompt_tokens_per_s, 2),
        "tokens_per_s": round(stats.tokens_per_s, 2),
        "load_ms": round(model.load_ms, 2),
        "arch": model.arch,
        "quant": model.quant,
        "n_params": model.n_params,
        "ctx": model.n_ctx,
        "notices": list(stats.notices),
    }


def _interactive(
    engine: AnyEngine,
    model: LoadedModel,
    history: list[ChatMessage],
    sampling: SamplingParams,
    max_tokens: int,
) -> int:
    about = f"{model.arch}, {model.quant}, context {model.n_ctx}" if model.arch != "remote" else "remote"
    print(
        f"{model.name} ({about}). Ctrl-C stops a reply, Ctrl-D quits.",
        file=sys.stderr,
    )
    while True:
        try:
            line = input("> ")
        except EOFError:
            print(file=sys.stderr)
            return 0
        except KeyboardInterrupt:
            print(file=sys.stderr)
            continue
        if not line.strip():
            continue
        question = ChatMessage("user", line)
        request = GenerateRequest(
            engine.new_request_id(), (*history, question), sampling=sampling, max_tokens=max_tokens
        )
        try:
            reply = _stream(engine, request, echo=True)
        except KeyboardInterrupt:  # Ctrl-C in the instant before the stop handler is in place
            print(file=sys.stderr)
            continue
        stats = reply.stats
        if reply.text or reply.reasoning or stats.finish_reason != "stopped":
            history += [question, ChatMessage("assistant", reply.text, reply.reasoning)]
        # else: stopped before a word (during prompt processing): no empty reply; the question goes too
        print(
            f"\n[{stats.completion_tokens} tokens, {stats.tokens_per_s:.1f} tok/s, {stats.finish_reason}]",
            file=sys.stderr,
        )


def bench_command(args: argparse.Namespace, paths: AppPaths) -> int:
    if split_remote(args.model) is not None:
        raise AppError(ErrorKind.BAD_INPUT, "hubside bench measures local models only.")
    args.model = resolve_model(Path(args.model), paths)
    params = _load_params(args)
    n_ctx = args.ctx or max(512, args.n_prompt + args.n_gen + 16)
    params = LoadParams(**{**asdict(params), "n_ctx": n_ctx})
    rng = random.Random(1234)
    greedy = SamplingParams(temperature=0, repeat_penalty=1.0)
    with Engine(paths) as engine:
        model = engine.load(params, force=args.force)

        def run(tokens: list[int], max_tokens: int, sampling: SamplingParams = greedy) -> ReplyStats:
            request = GenerateRequest(
                engine.new_request_id(),
                prompt_tokens=tuple(tokens),
                sampling=sampling,
                max_tokens=max_tokens,
                ignore_eos=True,
                reuse_cache=False,
            )
            *_, done = engine.generate(request)
            assert isinstance(done, Finished)
            return done.stats

        def random_tokens(n: int) -> list[int]:
            return [rng.randrange(model.n_vocab) for _ in range(n)]

        run(random_tokens(min(args.n_prompt, 32)), 1)  # warm-up, as llama-bench does
        pp = [run(random_tokens(args.n_prompt), 0).prompt_tokens_per_s for _ in range(args.reps)]
        # tg as llama-bench runs it (one token at a time, no sampling choices: greedy), then with the
        # default chain a chat uses (top-k, repeat penalty, top-p, min-p, temperature, random pick).
        tg = [_generation_speed(run(random_tokens(1), args.n_gen)) for _ in range(args.reps)]
        sampled = [
            _generation_speed(run(random_tokens(1), args.n_gen, SamplingParams())) for _ in range(args.reps)
        ]
        ttft20 = [run(random_tokens(20), 1).ttft_ms for _ in range(args.reps)]
    speeds = {
        f"pp{args.n_prompt}_tokens_per_s": _mean_sd(pp),
        f"tg{args.n_gen}_tokens_per_s": _mean_sd(tg),
        f"tg{args.n_gen}_sampled_tokens_per_s": _mean_sd(sampled),
        "ttft20_ms": _mean_sd(ttft20),
    }
    result: dict[str, object] = {
        "model": str(args.model),
        "arch": model.arch,
        "quant": model.quant,
        "n_params": model.n_params,
        "threads": model.n_threads,
        "flash_attn": model.flash_attn,
        "n_gpu_layers": model.n_gpu_layers,
        **speeds,
        "load_ms": round(model.load_ms, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{model.name} ({model.quant}, {model.n_threads} threads, flash attention "
            f"{'on' if model.flash_attn else 'off'})"
        )
        for key, (mean, sd) in speeds.items():
            print(f"  {key:<24} {mean:10.2f} ± {sd:.2f}")
    return 0


def _generation_speed(stats: ReplyStats) -> float:
    """Tokens per second over a whole reply to a one-token prompt: n tokens take that token's decode and
    n - 1 more (the last token is never decoded), as llama-bench's tg times n decodes of one token."""
    prompt_s = stats.prompt_eval_tokens / stats.prompt_tokens_per_s
    return stats.completion_tokens / (prompt_s + stats.completion_tokens / stats.tokens_per_s)


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return round(statistics.fmean(values), 2), round(statistics.stdev(values) if len(values) > 1 else 0.0, 2)
