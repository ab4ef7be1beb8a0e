"""The Hub, through huggingface_hub's HfApi: search GGUF repos, a repo's details and variants, its card and a
variant's header, with a disk cache so that what was seen once can be shown offline.

Everything returned is our own frozen dataclasses; every failure is an AppError whose message can be shown
as it is (offline, rate limited, unknown repo, gated, an answer that makes no sense).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from app.errors import AppError, ErrorKind, RateLimited, hub_error
from app.errors import retry_after_s as retry_after_s  # the downloads import it from here
from app.files import write_atomic
from app.hub.quants import RepoFile, Variant, group_variants
from app.runtime.gguf_header import BadModelFile, GGUFHeader, HeaderIncomplete, parse_header_bytes

if TYPE_CHECKING:
    from huggingface_hub import HfApi

log = logging.getLogger(__name__)

SORTS = {  # what the user picks -> the Hub's sort key
    "trending": "trendingScore",
    "downloads": "downloads",
    "likes": "likes",
    "updated": "lastModified",
    "created": "createdAt",
}
DEFAULT_ENDPOINT = "https://huggingface.co"  # huggingface_hub's, without HF_ENDPOINT
PAGE_SIZE = 100
TIMEOUT_S = 30.0
MAX_RETRY_AFTER_S = 5
HEADER_FIRST_READ = 2 * 1024 * 1024  # most headers fit; a big tokenizer needs a second, larger read
HEADER_MAX_READ = 64 * 1024 * 1024
MAX_CARD_BYTES = 5 * 1024 * 1024
REACHABLE_TIMEOUT_S = 5.0
# A listing row has only a few fields unless asked; these are the ones the Discover list shows. Never `gguf`
# here: it carries every row's chat template (pages ~15x larger).
LISTING_EXPAND = ("downloads", "likes", "lastModified", "createdAt", "gated")
ARCHITECTURE_WORKERS = 8  # model-info requests in flight at once while filtering a page by architecture
# The most one next() does before it answers with what it found (a rare architecture would otherwise walk the
# whole listing, a model info per row): listing pages followed, and model infos asked (cached ones are free).
MAX_PAGES_PER_CALL = 3
MAX_INFOS_PER_CALL = 300
STOP_POLL_S = 0.1  # how soon a cancelled next() notices while model infos are in flight
# The Hub keeps every file over 10 MiB in LFS: only a smaller file without `lfs` is a plain git blob, which
# its blobId (sha1 of b"blob <size>\0" + content) verifies. A larger one's blobId is its LFS pointer's.
GIT_FILE_MAX_BYTES = 10 * 1024 * 1024
# Failures for which the last answer saved is shown instead (marked stale, with the failure's message)
SAVED_ANSWER_STANDS_IN = (ErrorKind.NETWORK, ErrorKind.TLS, ErrorKind.HUB)


@dataclass(frozen=True)
class SearchQuery:
    text: str = ""
    sort: str = "trending"
    min_params: int | None = None
    max_params: int | None = None
    architecture: str = ""  # GGUF's general.architecture, e.g. "llama" (model info's gguf, never a tag)
    gated: bool | None = None  # None: both
    author: str = ""  # one user's or organization's repos
    tags: tuple[str, ...] = ()  # more tags every row must carry, e.g. "conversational" (has a chat template)
    limit: int = PAGE_SIZE  # rows per listing page

    def hub_params(self) -> dict[str, Any]:
        """The query of `GET /api/models`."""
        params: dict[str, Any] = {
            "filter": ["gguf", *self.tags],
            "sort": SORTS.get(self.sort, "trendingScore"),
            "limit": self.limit,
            "expand[]": list(LISTING_EXPAND),
        }
        if self.text.strip():
            params["search"] = self.text.strip()
        if self.author:
            params["author"] = self.author
        if self.gated is not None:
            params["gated"] = "true" if self.gated else "false"
        bounds = [f"min:{_billions(self.min_params)}"] if self.min_params else []
        bounds += [f"max:{_billions(self.max_params)}"] if self.max_params else []
        if bounds:
            params["num_parameters"] = ",".join(bounds)
        return params


def _billions(count: int) -> str:
    """A parameter count as the Hub's num_parameters takes it: 6000000000 -> "6B", 1500000000 -> "1.5B"."""
    return f"{count / 1e9:g}B"


@dataclass(frozen=True)
class ModelSummary:
    id: str
    author: str
    downloads: int
    likes: int
    updated: str  # ISO date
    created: str
    gated: bool
    parameters: int | None = None  # where known (the listing has no gguf field; a cached detail may)
    architecture: str | None = None


@dataclass(frozen=True)
class ModelDetails:
    id: str
    sha: str
    author: str
    license: str
    gated: bool
    downloads: int
    likes: int
    updated: str
    parameters: int | None
    architecture: str | None
    context_length: int | None
    chat_template: str | None
    files: tuple[RepoFile, ...]
    variants: tuple[Variant, ...] = field(default=())


@dataclass(frozen=True)
class Fetched:
    """An answer, fresh from the Hub or, when the Hub could not be reached, the last one saved."""

    value: Any
    stale: bool = False
    problem: str = ""  # why it is stale, in the user's words


def _int(value: Any) -> int | None:
    """A number the Hub sent as a number or a string; None for anything else."""
    if isinstance(value, bool):
        return None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a URL, the port filled in for http(s); None for a URL without them."""
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:  # a port that is not a number
        return None
    if not parts.hostname or port is None:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), port


def same_origin(url: str, other: str) -> bool:
    """Whether both URLs have the same scheme, host and port: who may be sent the Hub token.

    The token goes to the endpoint's own origin only: never to another host or port (a CDN), never from
    https to http (a redirect to plain http on the same host gets none). An http endpoint gets it only
    because the user set it so (HF_ENDPOINT, as the tests' loopback stand-in is): that is their choice."""
    mine = origin(url)
    return mine is not None and mine == origin(other)


def _date(value: Any) -> str:
    if value is None:
        return ""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


class HubCache:
    """Answers saved on disk as JSON (or bytes), one file per key; written atomically, read leniently."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _file(self, key: str, suffix: str) -> Path:
        return self.root / (hashlib.sha256(key.encode()).hexdigest()[:32] + suffix)

    def get(self, key: str) -> Any:
        try:
            return json.loads(self._file(key, ".json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, key: str, value: Any, durable: bool = True) -> None:
        """Save `value`; `durable=False` skips the fsyncs (a per-repo fact, cheap to ask again: a crash may
        leave it unreadable, which get() takes for missing)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            data = json.dumps(value).encode()
            write_atomic(self._file(key, ".json"), data, durable)
        except OSError as exc:  # a cache that cannot be written only costs a refetch
            log.warning("hub cache: cannot write %s: %s", key, exc)

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self._file(key, ".bin").read_bytes()
        except OSError:
            return None

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            write_atomic(self._file(key, ".bin"), data)
        except OSError as exc:
            log.warning("hub cache: cannot write %s: %s", key, exc)


@dataclass
class _Budget:
    """What one next() may still spend."""

    pages: int = MAX_PAGES_PER_CALL
    infos: int = MAX_INFOS_PER_CALL


class SearchPages:
    """A search's results, a page at a time as they are asked for, following the Hub's `Link: rel="next"`.

    Our own paging over huggingface_hub's session: its list_models retries with backoff (a 429 with
    Retry-After 30 would keep the user waiting minutes for a message); here a short Retry-After is waited
    for once, anything else is an answer at once. A 429 stops the search: it asks nothing more.

    With an architecture filter each row's model info is asked (the listing does not say it). One next()
    spends at most MAX_PAGES_PER_CALL listing pages and MAX_INFOS_PER_CALL model infos, then answers with what
    it found, maybe fewer rows than asked or none (`capped`): the caller asks again for more.
    """

    def __init__(self, client: HubClient, query: SearchQuery) -> None:
        self.client = client
        self.query = query
        self._buffer: list[ModelSummary] = []
        self._unchecked: list[Any] = []  # listing rows whose architecture is still to be asked
        self._next_url: str | None = None
        self._visited: set[str] = set()
        self._seen: set[str] = set()
        self._started = False
        self._stop = threading.Event()
        self._halted: AppError | None = None  # the Hub's rate limit: nothing more is asked
        self.done = False
        self.stale = False  # the rows came from the cache
        self.capped = False  # the last next() spent its budget before it found the rows asked for

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()

    def cancel(self) -> None:
        """Ask the Hub nothing more (a newer search replaced this one, or the app is quitting): a next() under
        way returns soon, without waiting for the model infos in flight (they end on daemon threads)."""
        self._stop.set()

    def next(self, count: int) -> list[ModelSummary]:
        """Up to `count` more results: [] with `done` when there are no more; fewer with `capped` when this
        call's budget ran out first (or none, after cancel()). Raises AppError."""
        if self._halted is not None:
            raise self._halted
        self.capped = False
        budget = _Budget()
        if not self._started:
            cached = self.client.cache.get(self._cache_key())
            if cached is not None and not self.client.reachable():  # without waiting for a timeout
                return self._from_cache(cached)
            try:
                self._started = True
                self._fetch(f"{self.client.api.endpoint}/api/models", self.query.hub_params(), budget)
                self._check(budget)
                self.client.cache.put(self._cache_key(), [vars(row) for row in self._buffer])
            except Exception as exc:
                error = self._failed(exc)
                if error.kind in SAVED_ANSWER_STANDS_IN and cached is not None:
                    return self._from_cache(cached)
                raise error from exc
        try:
            while len(self._buffer) < count and not self._stop.is_set():
                if self._unchecked and budget.infos > 0:
                    self._check(budget)
                elif not self._unchecked and self._next_url is not None and budget.pages > 0:
                    self._fetch(self._next_url, None, budget)
                else:
                    break
        except Exception as exc:
            raise self._failed(exc) from exc
        batch, self._buffer = self._buffer[:count], self._buffer[count:]
        self.done = not self._buffer and not self._unchecked and self._next_url is None
        self.capped = len(batch) < count and not self.done and not self._stop.is_set()
        return batch

    def _failed(self, exc: BaseException) -> AppError:
        error = hub_error(exc)
        if isinstance(error, RateLimited):
            self._halted = error
        return error

    def _from_cache(self, rows: list[dict[str, Any]]) -> list[ModelSummary]:
        self.done, self.stale, self._started = True, True, True  # the saved first page, nothing after it
        return [self.client.with_known_facts(ModelSummary(**row)) for row in rows]

    def _fetch(self, url: str, params: dict[str, Any] | None, budget: _Budget) -> None:
        from huggingface_hub import ModelInfo, get_session, hf_raise_for_status

        budget.pages -= 1
        self._visited.add(url)
        response = get_session().get(
            url, params=params, headers=self.client.auth_headers(), timeout=TIMEOUT_S
        )
        wait = retry_after_s(response) if response.status_code in (429, 503) else None
        if wait is not None and wait <= MAX_RETRY_AFTER_S:  # a short wait is worth it, once
            if self._stop.wait(wait):
                return
            response = get_session().get(
                url, params=params, headers=self.client.auth_headers(), timeout=TIMEOUT_S
            )
        hf_raise_for_status(response)
        rows = response.json()
        if not isinstance(rows, list):
            raise ValueError(f"a listing that is not a list: {type(rows).__name__}")
        infos = []
        for row in rows:
            info = ModelInfo(**row)  # type: ignore[no-untyped-call]  # huggingface_hub's own parser
            if info.id not in self._seen:
                self._seen.add(info.id)
                infos.append(info)
        if self.query.architecture.strip():
            self._unchecked.extend(infos)  # GGUF repos are not tagged with it: each row's model info says
        else:
            self._buffer.extend(self.client.summary(info) for info in infos)
        following = response.links.get("next", {}).get("url")
        following = urljoin(str(response.url), following) if following else None
        if following and not same_origin(following, self.client.api.endpoint):
            log.warning("search: not following a next page on another host: %s", following)
            following = None  # the token goes to the Hub only
        self._next_url = following if following and following not in self._visited else None  # no loops

    def _check(self, budget: _Budget) -> None:
        """Keep the unchecked rows of the wanted architecture, in order, as far as the budget goes: a row
        whose facts are cached costs nothing, any other one model info."""
        wanted = self.query.architecture.strip().lower()
        known: dict[str, dict[str, Any]] = {}
        ask: list[str] = []
        taken = 0
        for info in self._unchecked:
            repo = str(info.id)
            facts = self.client.known_facts(repo)
            if facts is not None:
                known[repo] = facts
            elif len(ask) < budget.infos:
                ask.append(repo)
            else:
                break
            taken += 1
        answers = _in_parallel(self.client.facts, ask, ARCHITECTURE_WORKERS, self._stop)
        if answers is None:  # cancelled: the rows stay unchecked
            return
        budget.infos -= len(ask)
        known.update(zip(ask, answers, strict=True))
        rows, self._unchecked = self._unchecked[:taken], self._unchecked[taken:]
        self._buffer.extend(
            self.client.summary(info)
            for info in rows
            if str(known[str(info.id)].get("architecture") or "").lower() == wanted
        )

    def _cache_key(self) -> str:
        params = self.query.hub_params()
        if self.query.architecture.strip():  # not a Hub parameter, yet another page of results
            params["architecture"] = self.query.architecture.strip().lower()
        return "search:" + json.dumps(params, sort_keys=True)


def _in_parallel(
    call: Callable[[str], dict[str, Any]], items: list[str], workers: int, stop: threading.Event
) -> list[dict[str, Any]] | None:
    """call(item) for each item, `workers` at a time, the answers in order; None once `stop` is set. The
    first exception a call raises is raised here, and no other item is started after it. The threads are
    daemons: a request in flight never holds up quitting, nor a cancelled caller."""
    if not items:
        return []
    todo = iter(enumerate(items))
    lock = threading.Lock()
    halt = threading.Event()
    answers: queue.SimpleQueue[tuple[int, Any, BaseException | None]] = queue.SimpleQueue()

    def work() -> None:
        while not halt.is_set() and not stop.is_set():
            with lock:
                item = next(todo, None)
            if item is None:
                return
            try:
                answers.put((item[0], call(item[1]), None))
            except BaseException as exc:  # handed to the caller, who raises it
                halt.set()
                answers.put((item[0], None, exc))

    for n in range(min(workers, len(items))):
        threading.Thread(target=work, name=f"hub-arch-{n}", daemon=True).start()
    results: dict[int, dict[str, Any]] = {}
    try:
        while len(results) < len(items):
            if stop.is_set():
                return None
            try:
                index, result, error = answers.get(timeout=STOP_POLL_S)
            except queue.Empty:
                continue
            if error is not None:
                raise error
            results[index] = result
    finally:
        halt.set()
    return [results[i] for i in range(len(items))]


def hub_endpoint(mirror: str = "") -> str:
    """Where the Hub is: HF_ENDPOINT if set, else the mirror setting, else huggingface.co. Read now, not
    from huggingface_hub's constants, which keep what HF_ENDPOINT was when it was first imported. The
    files' URLs are built from the API's endpoint, so they come from the same place."""
    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or mirror or DEFAULT_ENDPOINT


class HubClient:
    """The one way Hubside talks to the Hub's API (downloads have their own transfer code)."""

    def __init__(
        self,
        cache_dir: Path,
        token: str | None = None,
        endpoint: str | None = None,
        token_source: Callable[[], str | None] | None = None,
        mirror: str = "",
    ) -> None:
        self.endpoint_override = endpoint
        self.mirror = mirror  # the setting (already checked); HF_ENDPOINT wins over it
        self.given_token = token
        self.token_source = token_source  # asked on first use, off the GUI thread (keyring, hf login)
        self.cache = HubCache(cache_dir)

    @cached_property
    def token(self) -> str | None:
        if self.given_token is not None or self.token_source is None:
            return self.given_token
        return self.token_source()

    @cached_property
    def api(self) -> HfApi:
        # huggingface_hub is imported on first use: a fifth of a second the window need not wait for
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.endpoint_override or hub_endpoint(self.mirror), token=self.token or None)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def reachable(self) -> bool:
        """Whether the Hub answers at all (any HTTP status); quick, where a listing retries for long."""
        import httpx2
        from huggingface_hub import get_session

        try:
            get_session().head(self.api.endpoint, timeout=REACHABLE_TIMEOUT_S)
        except (httpx2.TransportError, OSError):
            return False
        return True

    def search(self, query: SearchQuery) -> SearchPages:
        return SearchPages(self, query)

    def summary(self, info: Any) -> ModelSummary:
        return self.with_known_facts(
            ModelSummary(
                id=str(info.id),
                author=str(info.author or str(info.id).split("/")[0]),
                downloads=_int(info.downloads) or 0,
                likes=_int(info.likes) or 0,
                updated=_date(info.last_modified),
                created=_date(info.created_at),
                gated=bool(info.gated),
            )
        )

    def known_facts(self, repo: str) -> dict[str, Any] | None:
        """What facts() found for the repo before, or None."""
        known = self.cache.get(f"facts:{repo}")
        return known if isinstance(known, dict) else None

    def facts(self, repo: str) -> dict[str, Any]:
        """A repo's parameters and architecture (model info's gguf), cached; {} when the Hub can't say.
        Raises RateLimited on a 429: asking on would only prolong the limit."""
        known = self.known_facts(repo)
        if known is not None:
            return known
        from huggingface_hub import get_session, hf_raise_for_status

        url = f"{self.api.endpoint}/api/models/{repo}"
        try:
            response = get_session().get(
                url, params={"expand[]": "gguf"}, headers=self.auth_headers(), timeout=TIMEOUT_S
            )
            hf_raise_for_status(response)
            gguf = response.json().get("gguf")
        except Exception as exc:  # one row the Hub won't describe is left out of the filter, not the page
            error = hub_error(exc, repo)
            if isinstance(error, RateLimited):
                raise error from exc
            log.info("no architecture for %s: %s", repo, error.user_message)
            return {}
        gguf = gguf if isinstance(gguf, dict) else {}
        arch = gguf.get("architecture")
        found = {"parameters": _int(gguf.get("total")), "architecture": str(arch).lower() if arch else None}
        self._remember_facts(repo, found)
        return found

    def _remember_facts(self, repo: str, found: dict[str, Any]) -> None:
        """Cache what the Hub said, unless it said nothing (no gguf yet: a repo still being uploaded)."""
        if found.get("parameters") is not None or found.get("architecture") is not None:
            self.cache.put(f"facts:{repo}", found, durable=False)

    def with_known_facts(self, row: ModelSummary) -> ModelSummary:
        """Parameters and architecture, which listings lack, from the repo's details seen before."""
        known = self.known_facts(row.id) or {}
        return replace(row, parameters=_int(known.get("parameters")), architecture=known.get("architecture"))

    def details(self, repo: str) -> Fetched:
        """The repo's facts and files at its current commit, with its variants."""
        try:
            info = self.api.model_info(repo, files_metadata=True)
            details = self._details(info)
        except Exception as exc:
            error = hub_error(exc, repo)
            cached = self.cache.get(f"details:{repo}")
            if error.kind in SAVED_ANSWER_STANDS_IN and cached is not None:
                return Fetched(_details_from_json(cached), stale=True, problem=error.user_message)
            raise error from exc
        self.cache.put(f"details:{repo}", _details_to_json(details))
        self._remember_facts(repo, {"parameters": details.parameters, "architecture": details.architecture})
        return Fetched(details)

    def _details(self, info: Any) -> ModelDetails:
        gguf = info.gguf if isinstance(info.gguf, dict) else {}
        card = info.card_data.to_dict() if info.card_data is not None else {}
        files = []
        for sibling in info.siblings or []:
            lfs = sibling.lfs
            sha256 = getattr(lfs, "sha256", None) if lfs is not None else None
            size = _int(sibling.size)
            if size is None and lfs is not None:
                size = _int(getattr(lfs, "size", None))
            # A blobId verifies only a file kept in git: no lfs, and small enough for git on the Hub
            blob_id = getattr(sibling, "blob_id", None) if lfs is None else None
            if size is None or size > GIT_FILE_MAX_BYTES:
                blob_id = None
            files.append(
                RepoFile(str(sibling.rfilename), size or 0, sha256, str(blob_id) if blob_id else None)
            )
        template = gguf.get("chat_template")
        return ModelDetails(
            id=str(info.id),
            sha=str(info.sha or ""),
            author=str(info.author or str(info.id).split("/")[0]),
            license=str(card.get("license") or ""),
            gated=bool(info.gated),
            downloads=_int(info.downloads) or 0,
            likes=_int(info.likes) or 0,
            updated=_date(info.last_modified),
            parameters=_int(gguf.get("total")),
            architecture=str(gguf["architecture"]) if gguf.get("architecture") else None,
            context_length=_int(gguf.get("context_length")),
            chat_template=template if isinstance(template, str) else None,
            files=tuple(files),
            variants=tuple(group_variants(files)),
        )

    def card(self, details: ModelDetails) -> Fetched:
        """The model card (README.md) at the details' commit, as text ("" when the repo has none)."""
        if not any(f.path == "README.md" for f in details.files):
            return Fetched("")
        key = f"card:{details.id}@{details.sha}"
        cached = self.cache.get(key)
        if cached is not None:  # a commit's files never change
            return Fetched(cached)
        text = self._get(details, "README.md", MAX_CARD_BYTES).decode("utf-8", errors="replace")
        self.cache.put(key, text)
        return Fetched(text)

    def header(self, details: ModelDetails, file: RepoFile) -> GGUFHeader:
        """The GGUF header of a remote file, from a ranged read of its start (cached per commit)."""
        key = f"header:{details.id}@{details.sha}/{file.path}"
        data = self.cache.get_bytes(key) or b""
        want = HEADER_FIRST_READ
        while True:
            try:
                return parse_header_bytes(Path(file.path), data, file.size)
            except HeaderIncomplete as more:
                if len(data) >= min(file.size, HEADER_MAX_READ):
                    raise BadModelFile(Path(file.path), "its header is larger than Hubside reads") from None
                want = min(max(want, more.needed * 2), HEADER_MAX_READ, file.size)
                data = self._get(details, file.path, want, ranged=True)
                self.cache.put_bytes(key, data)

    def _get(self, details: ModelDetails, path: str, limit: int, ranged: bool = False) -> bytes:
        """The first `limit` bytes of a file at the details' commit (the token goes to the Hub only)."""
        from huggingface_hub import get_session, hf_hub_url, hf_raise_for_status

        url = hf_hub_url(details.id, path, revision=details.sha, endpoint=self.api.endpoint)
        headers = self.auth_headers()
        if ranged:
            headers["Range"] = f"bytes=0-{limit - 1}"
        try:
            with get_session().stream("GET", url, headers=headers, follow_redirects=True) as response:
                if response.status_code >= 400:
                    response.read()
                    hf_raise_for_status(response)
                chunks, total = [], 0
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
                    total += len(chunk)
                    if total >= limit:
                        break
                return b"".join(chunks)[:limit]
        except Exception as exc:
            raise hub_error(exc, details.id) from exc


def _details_to_json(details: ModelDetails) -> dict[str, Any]:
    data = {k: v for k, v in vars(details).items() if k not in ("files", "variants")}
    data["files"] = [vars(f) for f in details.files]
    return data


def _details_from_json(data: dict[str, Any]) -> ModelDetails:
    files = tuple(RepoFile(**f) for f in data.pop("files"))
    return ModelDetails(**data, files=files, variants=tuple(group_variants(files)))
