"""A loopback stand-in for the Hugging Face Hub that speaks the API shapes huggingface_hub expects.

Two listening sockets on 127.0.0.1: the Hub itself (API and `/resolve`) and a "CDN" on another port, so
that LFS files are answered with a 302 to another origin, as on the real Hub (huggingface_hub does not
follow that redirect for metadata, and a client must not send the token there).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from tests.hubstub.faults import Fault, FaultList, LoggedRequest, RequestLog
from tests.hubstub.repos import RepoStore, StubFile, StubRepo

log = logging.getLogger(__name__)

HUB_PAGE_SIZE = 1000  # the real Hub's cap per page
_CHUNK = 64 * 1024
_TLS_BLOCK = 1 << 20
_REPO = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES = {
    "models": re.compile(r"^/api/models/?$"),
    "info": re.compile(rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?/?$"),
    "tree": re.compile(rf"^/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"),
    "paths_info": re.compile(rf"^/api/models/{_REPO}/paths-info/(?P<rev>[^/]+)$"),
    "resolve": re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"),
    "resolve_cache": re.compile(rf"^/api/resolve-cache/models/{_REPO}/(?P<rev>[0-9a-f]{{40}})/(?P<path>.+)$"),
}
_CDN_ROUTE = re.compile(r"^/cdn-lfs/(?P<repo>[^/]+/[^/]+)/(?P<commit>[0-9a-f]{40})/(?P<path>.+)$")
_SORT_KEYS = ("downloads", "likes", "lastModified", "createdAt", "trendingScore")
# The keys `expand[]` takes for models (huggingface_hub 2.4's ExpandModelProperty_T); any other is a 400.
EXPAND_KEYS = frozenset(
    {
        "author", "baseModels", "cardData", "childrenModelCount", "config", "createdAt", "disabled",
        "downloads", "downloadsAllTime", "evalResults", "gated", "gguf", "inference",
        "inferenceProviderMapping", "lastModified", "library_name", "likes", "mask_token", "model-index",
        "pipeline_tag", "private", "resourceGroup", "safetensors", "sha", "siblings", "spaces", "tags",
        "transformersInfo", "trendingScore", "usedStorage", "widgetData",
    }
)  # fmt: skip
# What `/api/agent-harnesses` gives (huggingface_hub 2.4 asks it to tell whether an AI agent runs it).
AGENT_HARNESSES = {"standardEnvVars": [], "harnesses": {}}
_PARAM_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


@dataclass
class Answer:
    """A response that is not file bytes."""

    status: int
    body: bytes = b""
    headers: dict[str, str] | None = None
    content_type: str = "application/json"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, json.dumps(data).encode(), headers)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Answer:
    all_headers = {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})}
    return _json({"error": message}, status, all_headers)


def _expanded(query: dict[str, list[str]]) -> list[str]:
    return query.get("expand[]", []) + query.get("expand", [])


def _expand_refused(query: dict[str, list[str]]) -> Answer | None:
    """The Hub's 400 for an unknown expand key, or expand with full/cardData; None when it is fine."""
    expand = _expanded(query)
    unknown = [key for key in expand if key not in EXPAND_KEYS]
    if unknown:
        return _error(400, "BadRequest", f'"expand" must be one of the allowed values, not {unknown[0]}')
    if expand and ("full" in query or "cardData" in query):
        return _error(400, "BadRequest", '"expand" cannot be combined with "full" or "cardData"')
    return None


def _only(info: dict[str, Any], expand: list[str]) -> dict[str, Any]:
    """An info with only the expanded fields (and its ids), as the Hub answers expand[]."""
    return {"_id": info["_id"], "id": info["id"]} | {key: info[key] for key in expand if key in info}


def _truthy(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true", "yes")


def _parse_param_count(text: str) -> int:
    match = re.fullmatch(r"([\d.]+)([KMBT]?)", text.strip().upper())
    if not match:
        raise ValueError(text)
    return int(float(match.group(1)) * _PARAM_SUFFIX[match.group(2)])


class HubStub:
    """The stand-in. Use as a context manager, or call `start()` and `stop()`."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        per_connection_bps: float | None = None,
    ):
        self.repos = RepoStore()
        if root is not None:
            self.repos.load_folder(root)
        self.faults = FaultList()
        self.log = RequestLog()
        self.tokens: set[str] = set()  # tokens that open gated repos
        self.page_size = HUB_PAGE_SIZE
        self.cdn_url_ttl = 3600.0  # seconds a signed CDN URL stays valid
        # Each connection's file bytes at most this fast (a CDN's per-connection cap, a slow network for
        # demos): many connections are then faster than one.
        self.per_connection_bps = per_connection_bps
        self._secret = secrets.token_bytes(16)
        self._stopping = threading.Event()
        self._generation = 0  # bumped by reset(): a request begun before it is not logged after it
        self._hub = _Server((host, port), self, "hub")
        self._cdn = _Server((host, 0), self, "cdn")
        self._threads: list[threading.Thread] = []

    # --- lifecycle -------------------------------------------------------------------------------
    @property
    def bytes_per_second(self) -> float | None:
        """The per-connection cap's former name."""
        return self.per_connection_bps

    @bytes_per_second.setter
    def bytes_per_second(self, value: float | None) -> None:
        self.per_connection_bps = value

    @property
    def endpoint(self) -> str:
        host, port = self._hub.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def cdn_endpoint(self) -> str:
        host, port = self._cdn.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> HubStub:
        for server in (self._hub, self._cdn):
            thread = threading.Thread(target=server.serve_forever, name=f"hubstub-{server.role}")
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> HubStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every repo, fault, logged request and token (one stand-in serves a whole test run)."""
        self._generation += 1
        self.repos.clear()
        self.faults.clear()
        self.log.clear()
        self.tokens.clear()
        self.page_size = HUB_PAGE_SIZE
        self.cdn_url_ttl = 3600.0

    # --- content and faults ----------------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes | Path | int],
        in_git: tuple[str, ...] = (),
        lfs_unlisted: tuple[str, ...] = (),
        **meta: Any,
    ) -> StubRepo:
        """Serve a repo with these files (bytes, a path on disk, or a size: listed, content all zeros) and
        metadata (downloads, gated...); `in_git`: paths kept in git rather than LFS (no sha256);
        `lfs_unlisted`: LFS files whose model-info sibling lacks its `lfs` field (size and blobId only)."""
        stub_files = {
            path: StubFile(path, source=content)
            if isinstance(content, Path)
            else StubFile(path, listed_size=content)
            if isinstance(content, int)
            else StubFile(path, data=content)
            for path, content in files.items()
        }
        for path in in_git:
            stub_files[path].in_git = True
        for path in lfs_unlisted:
            stub_files[path].lfs_listed = False
        return self.repos.add(StubRepo(repo_id, stub_files, meta))

    def add_fault(self, fault: Fault) -> Fault:
        return self.faults.add(fault)

    def fail_with(
        self, path: str, *statuses: int, retry_after: str | None = None, rate_limit_reset: int | None = None
    ) -> None:
        """Answer the next requests for `path` with these statuses, one each, then normally.
        `rate_limit_reset`: the Hub's `RateLimit: "api";r=0;t=N` header (seconds until the window resets),
        which the real Hub sends with a 429 where Retry-After may be absent."""
        headers = {}
        if rate_limit_reset is not None:
            headers = {
                "RateLimit": f'"api";r=0;t={rate_limit_reset}',
                "RateLimit-Policy": '"fixed window";"api";q=500;w=300',
            }
        for status in statuses:
            self.faults.add(Fault(path=path, status=status, retry_after=retry_after, headers=dict(headers)))

    # --- request handling ------------------------------------------------------------------------
    def handle(self, request: _Handler, role: str) -> None:
        url = urlsplit(request.path)
        query = parse_qs(url.query, keep_blank_values=True)
        if request.command == "POST":
            length = int(request.headers.get("Content-Length") or 0)
            query.update(parse_qs(request.rfile.read(length).decode(), keep_blank_values=True))
        raw_path = url.path
        path = unquote(raw_path)
        sent = 0
        status = 0
        self.log.begin()
        generation = self._generation
        try:
            if role == "cdn":
                status, sent = self._handle_cdn(request, raw_path, query)
            else:
                status, sent = self._handle_hub(request, raw_path, query)
        except (BrokenPipeError, ConnectionResetError):
            request.close_connection = True
        finally:
            headers = {k.lower(): v for k, v in request.headers.items()}
            if generation == self._generation:
                self.log.append(LoggedRequest(role, request.command, path, query, headers, status, sent))
            else:  # a stall from an earlier test ended late: not this test's request
                self.log.end_unlogged()

    def _handle_hub(self, request: _Handler, raw_path: str, query: dict[str, list[str]]) -> tuple[int, int]:
        route, match = None, None
        for name, pattern in _ROUTES.items():
            match = pattern.match(raw_path)
            if match:
                route = name
                break
        groups = {k: unquote(v) for k, v in (match.groupdict() if match else {}).items() if v}
        repo = self.repos.get(groups.get("repo", ""))
        file = None
        if route in ("resolve", "resolve_cache") and repo is not None:
            file = repo.files.get(groups.get("path", ""))
        serving_bytes = file is not None and route == "resolve_cache"
        fault = self.faults.take(unquote(raw_path), request.command, serving_bytes)
        if fault is not None and fault.delay_seconds:
            time.sleep(fault.delay_seconds)
        if fault is not None and fault.replaces_response:
            return self._send_answer(request, self._fault_answer(fault))

        base = f"http://{request.headers.get('Host', '127.0.0.1')}"
        commit = repo.sha if repo is not None else ""
        answer: Answer
        if route == "models" and request.command in ("GET", "HEAD"):
            answer = self._list_models(query, base)
        elif raw_path.rstrip("/") == "/api/agent-harnesses":
            answer = _json(AGENT_HARNESSES)
        elif route is None or route == "models":
            answer = _error(404, "NotFound", f"No route for {request.command} {raw_path}")
        elif repo is None and not request.headers.get("Authorization"):
            # The Hub does not tell a missing repo from a private one to a stranger: 401, no error code.
            answer = _json({"error": "Invalid username or password."}, 401)
        elif repo is None:
            answer = _error(404, "RepoNotFound", "Repository not found")
        elif groups.get("rev", "main") not in ("main", repo.sha):
            answer = _error(404, "RevisionNotFound", f"Invalid rev id: {groups['rev']}")
        elif route == "info":  # with expand[], as in a listing: only the fields asked (or a 400)
            info = repo.info(blobs=_truthy(query.get("blobs")))
            refused = _expand_refused(query)
            answer = refused or _json(_only(info, _expanded(query)) if _expanded(query) else info)
        elif route == "tree":
            answer = self._tree(repo, groups.get("path", ""), query, base)
        elif route == "paths_info":
            answer = self._paths_info(repo, query.get("paths", []))
        elif repo.gated and not self._authorized(request):
            without_token = not request.headers.get("Authorization")
            answer = _error(
                401 if without_token else 403,
                "GatedRepo",
                f"Access to model {repo.repo_id} is restricted. You must have access to it and be "
                + ("authenticated to access it. Please log in." if without_token else "granted access."),
            )
        elif file is None:
            answer = _error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit})
        elif self._redirects(file):
            answer = Answer(302, headers=self._redirect_headers(repo, file))
        elif route == "resolve":
            # A small file: a relative redirect to the commit's cached copy, as the Hub does.
            location = f"/api/resolve-cache/models/{repo.repo_id}/{commit}/{quote(file.path)}"
            answer = Answer(307, headers={"Location": location, "X-Repo-Commit": commit})
        else:
            headers = {"X-Repo-Commit": commit}
            return self._send_file(request, file, f'"{file.git_oid}"', headers, fault)
        return self._send_answer(request, answer)

    def _handle_cdn(self, request: _Handler, raw_path: str, query: dict[str, list[str]]) -> tuple[int, int]:
        match = _CDN_ROUTE.match(raw_path)
        repo = self.repos.get(unquote(match["repo"])) if match else None
        file = repo.files.get(unquote(match["path"])) if repo and match else None
        fault = self.faults.take(unquote(raw_path), request.command, file is not None)
        if fault is not None and fault.replaces_response:
            return self._send_answer(request, self._fault_answer(fault))
        if not match or repo is None or file is None or match["commit"] != repo.sha:
            return self._send_answer(request, Answer(404, b"NoSuchKey", None, "text/plain"))
        if "Authorization" in request.headers:
            # As S3 does: a signed URL plus an Authorization header is two auth mechanisms.
            message = b"InvalidArgument: Only one auth mechanism allowed"
            return self._send_answer(request, Answer(400, message, None, "text/plain"))
        expires = (query.get("Expires") or ["0"])[-1]
        expected = self._signature(raw_path, expires)
        signature = (query.get("Signature") or [""])[-1]
        if not hmac.compare_digest(signature, expected) or float(expires) < time.time():
            message = b"AccessDenied: Request has expired or the signature does not match"
            return self._send_answer(request, Answer(403, message, None, "text/plain"))
        return self._send_file(request, file, f'"{file.xet_hash}"', {}, fault)  # the CDN's own validator

    def _authorized(self, request: _Handler) -> bool:
        auth = request.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.tokens

    def _redirects(self, file: StubFile) -> bool:
        return file.is_lfs  # LFS files are always served by the CDN

    def _signature(self, raw_path: str, expires: str) -> str:
        return hmac.new(self._secret, f"{raw_path}|{expires}".encode(), hashlib.sha256).hexdigest()

    def _redirect_headers(self, repo: StubRepo, file: StubFile) -> dict[str, str]:
        raw_path = f"/cdn-lfs/{repo.repo_id}/{repo.sha}/{quote(file.path)}"
        expires = str(int(time.time() + self.cdn_url_ttl))
        signed = urlencode({"Expires": expires, "Signature": self._signature(raw_path, expires)})
        return {
            "Location": f"{self.cdn_endpoint}{raw_path}?{signed}",
            "X-Repo-Commit": repo.sha,
            "X-Linked-Etag": f'"{file.sha256}"',
            "X-Linked-Size": str(file.size),
            "ETag": f'"{file.git_oid}"',
            "X-Xet-Hash": file.xet_hash,
            "Link": f'<{self.endpoint}/api/models/{repo.repo_id}/xet-read-token/{repo.sha}>; rel="xet-auth", '
            f'<{self.cdn_endpoint}/reconstruction/{file.xet_hash}>; rel="xet-reconstruction-info"',
        }

    @staticmethod
    def _fault_answer(fault: Fault) -> Answer:
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            headers["Retry-After"] = fault.retry_after
        status = fault.status or 200
        body = fault.body
        if body is None:
            body = json.dumps({"error": f"stand-in fault: status {status}"}).encode()
        return Answer(status, body, headers, fault.content_type)

    # --- API answers -----------------------------------------------------------------------------
    def _list_models(self, query: dict[str, list[str]], base: str) -> Answer:
        repos = self.repos.all()
        search = (query.get("search") or [""])[-1].lower()
        if search:
            repos = [r for r in repos if search in r.repo_id.lower()]
        if query.get("author"):
            repos = [r for r in repos if r.author == query["author"][-1]]
        for wanted in query.get("filter", []):
            repos = [r for r in repos if wanted in r.tags() or wanted == r.meta.get("library_name")]
        if query.get("gated"):
            want_gated = _truthy(query["gated"])
            repos = [r for r in repos if bool(r.gated) == want_gated]
        if query.get("num_parameters"):
            bounds = dict(part.split(":", 1) for part in query["num_parameters"][-1].split(","))
            low = _parse_param_count(bounds.get("min", "0"))
            high = _parse_param_count(bounds.get("max", "1000T"))
            repos = [r for r in repos if r.gguf and low <= int(r.gguf.get("total", -1)) <= high]
        sort = (query.get("sort") or [""])[-1]
        if sort and sort not in _SORT_KEYS:
            return _error(400, "BadRequest", f"Invalid sort key: {sort}")
        if sort:
            repos.sort(key=lambda r: r.info(blobs=False)[sort], reverse=True)
        refused = _expand_refused(query)
        if refused is not None:
            return refused
        expand = _expanded(query)
        rows = [_only(repo.info(blobs=False), expand) if expand else repo.summary() for repo in repos]
        return self._paged(rows, query, base + "/api/models")

    def _paged(self, rows: list[Any], query: dict[str, list[str]], url: str) -> Answer:
        limit = int((query.get("limit") or [str(self.page_size)])[-1])
        size = max(1, min(limit, self.page_size))
        start = int((query.get("cursor") or ["0"])[-1] or 0)
        page = rows[start : start + size]
        headers = {}
        if start + size < len(rows):
            next_query = {k: v for k, v in query.items() if k != "cursor"}
            next_query["cursor"] = [str(start + size)]
            headers["Link"] = f'<{url}?{urlencode(next_query, doseq=True)}>; rel="next"'
        return _json(page, headers=headers)

    def _tree(self, repo: StubRepo, folder: str, query: dict[str, list[str]], base: str) -> Answer:
        folder = folder.strip("/")
        folders = repo.folders()
        if folder and folder not in folders:
            return _error(404, "EntryNotFound", f"{folder} does not exist on main")
        prefix = f"{folder}/" if folder else ""
        recursive = _truthy(query.get("recursive"))

        def listed(path: str) -> bool:
            return path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])

        entries = [repo.folder_entry(p) for p in folders if listed(p)]
        entries += [f.tree_entry() for p, f in repo.files.items() if listed(p)]
        entries.sort(key=lambda e: e["path"])
        url = f"{base}/api/models/{repo.repo_id}/tree/{repo.sha}/{quote(folder)}".rstrip("/")
        return self._paged(entries, query, url)

    def _paths_info(self, repo: StubRepo, paths: list[str]) -> Answer:
        folders = repo.folders()
        entries = []
        for path in paths:
            path = path.strip("/")
            if path in repo.files:
                entries.append(repo.files[path].tree_entry())
            elif path in folders:
                entries.append(repo.folder_entry(path))
        return _json(entries)

    # --- writing responses ------------------------------------------------------------------------
    def _send_answer(self, request: _Handler, answer: Answer) -> tuple[int, int]:
        request.send_response(answer.status)
        headers = {"Content-Type": answer.content_type, **(answer.headers or {})}
        for name, value in headers.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(answer.body)))
        request.end_headers()
        if request.command != "HEAD" and answer.body:
            request.wfile.write(answer.body)
            return answer.status, len(answer.body)
        return answer.status, 0

    def _send_file(
        self,
        request: _Handler,
        file: StubFile,
        etag: str,
        headers: dict[str, str],
        fault: Fault | None,
    ) -> tuple[int, int]:
        fault = fault or Fault(times=0)
        size = file.size
        if fault.other_version:
            etag = f'"{hashlib.sha256(b"other:" + etag.encode()).hexdigest()}"'
        range_header = None if fault.ignore_range else request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if range_header and if_range and if_range.strip() != etag and not fault.ignore_if_range:
            range_header = None  # the client's copy is of another version: send the whole file
        start, end = 0, size - 1
        status = 200
        byte_range = _parse_range(range_header, size) if range_header else None
        if byte_range == "unsatisfiable":
            answer = Answer(416, b"", {"Content-Range": f"bytes */{size}", "ETag": etag, **headers})
            return self._send_answer(request, answer)
        if isinstance(byte_range, tuple):
            start, end = byte_range
            status = 206
        request.send_response(status)
        request.send_header("Content-Type", "application/octet-stream")
        request.send_header("Accept-Ranges", "bytes")
        request.send_header("ETag", etag)
        for name, value in headers.items():
            request.send_header(name, value)
        if status == 206:
            claimed = start + 1 if fault.wrong_content_range else start
            request.send_header("Content-Range", f"bytes {claimed}-{end}/{size}")
        request.send_header("Content-Length", str(end - start + 1))
        request.end_headers()
        if request.command == "HEAD":
            return status, 0
        rate = self.per_connection_bps
        if file.source is not None and file.listed_size is None and not rate and not fault.changes_body:
            return status, self._send_disk_file(request, file.source, start, end - start + 1)
        sent = 0
        began = time.monotonic()
        for chunk in self._file_chunks(file, start, end + 1, fault):
            if fault.drop_after is not None and sent + len(chunk) >= fault.drop_after:
                request.wfile.write(chunk[: max(0, fault.drop_after - sent)])
                request.wfile.flush()
                request.drop_connection()
                return status, fault.drop_after
            if fault.stall_after is not None and sent + len(chunk) >= fault.stall_after:
                request.wfile.write(chunk[: max(0, fault.stall_after - sent)])
                request.wfile.flush()
                self._stopping.wait(fault.stall_seconds)
                request.drop_connection()
                return status, fault.stall_after
            request.wfile.write(chunk)
            sent += len(chunk)
            if rate:  # to the byte's due time since the start: no drift, no burst after a slow write
                time.sleep(max(0.0, began + sent / rate - time.monotonic()))
        return status, sent

    @staticmethod
    def _send_disk_file(request: _Handler, source: Path, offset: int, count: int) -> int:
        """Unaltered file bytes, copied by the kernel as a CDN's server would (Python copies took a core
        from the client being measured); over TLS, which sendfile cannot do, in 1 MiB writes (socket's
        fallback writes 8 KiB records)."""
        with source.open("rb") as f:
            if not isinstance(request.connection, ssl.SSLSocket):
                return request.connection.sendfile(f, offset, count)
            f.seek(offset)
            buffer = memoryview(bytearray(_TLS_BLOCK))
            sent = 0
            while sent < count:
                read = f.readinto(buffer[: min(_TLS_BLOCK, count - sent)])
                if not read:
                    break
                request.connection.sendall(buffer[:read])
                sent += read
            return sent

    @staticmethod
    def _file_chunks(file: StubFile, start: int, end: int, fault: Fault) -> Iterator[bytes]:
        pos = start
        while pos < end:
            chunk = bytearray(file.read(pos, min(pos + _CHUNK, end)))
            if fault.flip_byte is not None and pos <= fault.flip_byte < pos + len(chunk):
                chunk[fault.flip_byte - pos] ^= 0xFF
            if fault.other_version:
                for i in range(-pos % 1024, len(chunk), 1024):  # every 1024th byte of the file
                    chunk[i] ^= 0x55
            yield bytes(chunk)
            pos += len(chunk)


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """(start, end) inclusive, "unsatisfiable", or None for a header we ignore (as servers do)."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or (not match[1] and not match[2]):
        return None
    if not match[1]:  # suffix range: the last N bytes
        length = int(match[2])
        return (max(0, size - length), size - 1) if length else "unsatisfiable"
    start = int(match[1])
    end = min(int(match[2]), size - 1) if match[2] else size - 1
    if start >= size or end < start:
        return "unsatisfiable"
    return start, end


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as CDNs and nginx (tcp_nodelay on) send: with Nagle's algorithm, a response's last small
    # write waited for the client's delayed ACK (about 17 ms a request on keep-alive connections)
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self.server.stub.handle(self, self.server.role)

    do_HEAD = do_GET
    do_POST = do_GET

    def drop_connection(self) -> None:
        """Cut the TCP connection mid-response, as a network drop would."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.server.role, format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # as a real server's backlog: 8 parallel model infos are never refused

    def __init__(self, address: tuple[str, int], stub: HubStub, role: str) -> None:
        self.stub = stub
        self.role = role
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("hubstub %s: error while serving %s", self.role, client_address, exc_info=True)
