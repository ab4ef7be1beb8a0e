"""A comparison run as a file: JSON (everything), or one self-contained HTML page (outputs as escaped text,
metrics in a table, charts embedded as PNG data). Model output is never trusted: it is escaped, not
rendered."""

from __future__ import annotations

import base64
import html
import json
import time
from typing import Any

from app.compare.store import SavedRun
from app.units import gb

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
.columns { display: flex; gap: 1em; }
.column { flex: 1; border: 1px solid #ccc; border-radius: 6px; padding: 0.8em; min-width: 0; }
pre { white-space: pre-wrap; word-wrap: break-word; background: #f6f6f6; padding: 0.6em; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 48%; margin: 0.5em 1%; border: 1px solid #eee; }
"""
_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"  # the page can fetch nothing
_ROWS = (
    ("Generation (tokens/s)", "tokens_per_s", "{:.1f}"),
    ("Prompt (tokens/s)", "prompt_tokens_per_s", "{:.1f}"),
    ("Time to first token (ms)", "ttft_ms", "{:.0f}"),
    ("Load (ms)", "load_ms", "{:.0f}"),
    ("Tokens", "completion_tokens", "{}"),
    ("Finish", "finish_reason", "{}"),
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def to_json(run: SavedRun) -> str:
    return json.dumps(
        {"id": run.id, "created_at": run.created_at, "prompt": run.prompt, **run.data}, indent=2
    )


def to_html(run: SavedRun, charts: dict[str, bytes]) -> str:
    """The run as one HTML file; `charts` maps a title to PNG bytes (embedded, nothing is fetched)."""
    columns: list[dict[str, Any]] = run.data.get("columns", [])
    esc = html.escape
    header = "".join(f"<th>{esc(c.get('model', '?'))}</th>" for c in columns)
    rows = []
    for label, key, fmt in _ROWS:
        cells = "".join(
            f"<td>{esc(fmt.format(c['turns'][-1]['metrics'].get(key, '')))}</td>" for c in columns
        )
        rows.append(f"<tr><td>{esc(label)}</td>{cells}</tr>")
    memory = "".join(
        f"<td>{esc(gb(c['turns'][-1]['metrics'].get('peak_memory_bytes', 0)))}</td>" for c in columns
    )
    rows.append(f"<tr><td>Peak memory</td>{memory}</tr>")
    blocks = []
    for c in columns:
        turns = "".join(
            f"<p><b>Prompt:</b> {esc(t['prompt'])}</p>"
            + (
                f"<details><summary>Thinking</summary><pre>{esc(t['reasoning'])}</pre></details>"
                if t.get("reasoning")
                else ""
            )
            + f"<pre>{esc(t['text'])}</pre>"
            + (f"<p><b>Failed:</b> {esc(t['error'])}</p>" if t.get("error") else "")
            for t in c["turns"]
        )
        blocks.append(
            f"<div class='column'><h2>{esc(c.get('model', '?'))}</h2>"
            f"<p>{esc(c.get('path', ''))}<br>sha256 {esc(c.get('sha256', ''))}</p>{turns}</div>"
        )
    images = "".join(
        f"<img alt='{esc(title)}' title='{esc(title)}' src='data:image/png;base64,{_b64(png)}'>"
        for title, png in charts.items()
    )
    settings = esc(json.dumps(run.data.get("settings", {})))
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created_at))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{_POLICY}\">"
        f"<title>Hubside comparison {run.id}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Comparison {run.id}</h1><p>{esc(when)} · settings {settings}</p>"
        f"<p><b>Prompt:</b> {esc(run.prompt)}</p>"
        f"<table><tr><th></th>{header}</tr>{''.join(rows)}</table>"
        f"<div>{images}</div><div class='columns'>{''.join(blocks)}</div></body></html>"
    )
