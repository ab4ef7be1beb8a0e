"""Chat search at scale (issue "Long chats and big libraries"): 5,000 conversations with 30,000 messages, and
one chat of 10,000 messages, in a temporary database. Target: the sidebar's search answers in under 50 ms.

Measures the search the sidebar runs (ChatStore.conversations) over ~20 typical queries, with the FTS5 index
and with the LIKE scan it replaced (the fallback where sqlite has no FTS5, the same query as schema v3); the
whole listing; and a reply's checkpoint in the 10,000-message chat with and without the index's trigger.

Run with `python -m bench.chat_search [--json]`; prints a table, and with --json one JSON object last.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.chat.store import _SEARCH_TRIGGERS, ChatStore
from bench import save_results

CONVERSATIONS = 5_000
MESSAGES = 30_000
LONG_CHAT = 10_000
REPEATS = 5  # each query's time is the median of these
CHECKPOINTS = 60  # a reply of ~1,800 words, checkpointed about every 30 words (once a second)
ROUNDS = 3

# Filler words, most frequent first (the made-up rest of the vocabulary gives the index a long tail of rare
# terms, as real text has); each conversation is about two topics, whose words only it uses often.
_FILLER = "the a to and of is in it you that for this with on can be how what i my do not use your".split()  # noqa: SIM905
_TOPICS = (  # noqa: SIM905 - lists of words read best as one string
    "python error code function list data llama gguf context token prompt memory server install windows "
    "linux docker rust javascript recipe chicken garlic travel rome paris london flight hotel budget email "
    "letter summary translate history physics chemistry biology poem story character plot essay review "
    "résumé café naïve zürich münchen señor façade jalapeño français déjà übersetzung straße model tokens "
    "quantization compile kernel sql database query index cluster network router printer garden tomato"
).split()
QUERIES = (
    "python", "llam", "gguf", "error", "docker", "rome", "recipe garlic", "paris hotel", "cafe", "zurich",
    "straße", "translate", "the", "co", "pr", "install linux", "xylophone", '"unclosed', "NEAR(model", "c++",
)  # fmt: skip


def _vocabulary(rng: random.Random) -> tuple[list[str], list[float]]:
    syllables = ["ka", "lo", "mi", "ne", "sha", "tu", "vel", "dor", "ix", "an", "ber", "quo", "zen", "ra"]
    made_up = {"".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(30_000)}
    words = _FILLER + sorted(made_up - set(_FILLER))
    cumulative, total = [], 0.0
    for rank in range(len(words)):
        total += 1 / (rank + 1)  # Zipf, as word frequencies are
        cumulative.append(total)
    return words, cumulative


def _text(rng: random.Random, vocabulary: tuple[list[str], list[float]], topics: list[str], size: int) -> str:
    words = rng.choices(vocabulary[0], cum_weights=vocabulary[1], k=size)
    for place in rng.sample(range(size), k=max(1, size // 20)):  # one word in 20 is on the topic
        words[place] = rng.choice(topics)
    return " ".join(words) + "."


def fill(store: ChatStore, rng: random.Random) -> int:
    """The conversations, in one transaction through the index's triggers; returns the long chat's id."""
    vocabulary = _vocabulary(rng)
    counts = [1] * CONVERSATIONS
    for index in rng.choices(range(CONVERSATIONS), k=MESSAGES - CONVERSATIONS):
        counts[index] += 1
    counts.append(LONG_CHAT)
    db, message_id, now = store.db, 0, time.time() - 86_400 * 365
    with db:
        db.execute("BEGIN IMMEDIATE")
        for conversation_id, count in enumerate(counts, start=1):
            now += 60
            topics = rng.sample(_TOPICS, 2)
            title = " ".join([rng.choice(topics), *rng.sample(_FILLER, 2), topics[-1]]).capitalize()
            db.execute(
                "INSERT INTO conversations (id, title, pinned, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (conversation_id, title, int(rng.random() < 0.01), now, now),
            )
            rows = []
            for number in range(count):
                message_id += 1
                role, size = ("user", (3, 40)) if number % 2 == 0 else ("assistant", (20, 250))
                text = _text(rng, vocabulary, topics, rng.randint(*size))
                rows.append((message_id, conversation_id, role, text,
                             message_id - 1 if number else None, now, now))  # fmt: skip
            db.executemany(
                "INSERT INTO messages (id, conversation_id, role, content, parent_id, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
    return len(counts)


def _ms(call: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _checkpoints(store: ChatStore, conversation_id: int, rng: random.Random) -> tuple[list[float], float]:
    """A streamed reply at the end of the long chat: each checkpoint writes the whole text so far. Returns
    each checkpoint's ms and the finish's."""
    reply = store.start_reply(conversation_id)
    words, times = "", []
    for _ in range(CHECKPOINTS):
        words += " ".join(rng.choices(_FILLER + _TOPICS, k=30)) + " "
        started = time.perf_counter()
        store.checkpoint_reply(reply, words)
        times.append((time.perf_counter() - started) * 1000)
    return times, _ms(lambda: store.finish_reply(reply, words, "complete"), 1)


# The reply's triggers as shipped (the index is written when a reply ends), none (v3), or plain triggers on
# the text, which re-write a streaming reply's index at every checkpoint.
_REINDEXING = (
    "CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN"
    " INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content); END",
    "CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN"
    " INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);"
    " INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content); END",
)


def _compare_checkpoints(store: ChatStore, conversation_id: int, rng: random.Random) -> dict[str, Any]:
    """The variants in turn, ROUNDS times, so that the disk's moods fall on each alike."""
    shipped = tuple(row[0] for row in store.db.execute(
        "SELECT sql FROM sqlite_master WHERE name IN ('messages_fts_insert', 'messages_fts_update')"
    ))  # fmt: skip
    variants = {"index written when a reply ends (shipped)": shipped, "no index (v3)": (),
                "index re-written at every checkpoint": _REINDEXING}  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in variants}
    finishes: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for name, triggers in variants.items():
            store.db.execute("DROP TRIGGER IF EXISTS messages_fts_insert")
            store.db.execute("DROP TRIGGER IF EXISTS messages_fts_update")
            for statement in triggers:
                store.db.execute(statement)
            checkpoint_ms, finish_ms = _checkpoints(store, conversation_id, rng)
            times[name] += checkpoint_ms
            finishes[name].append(finish_ms)
    return {
        name: {
            "median": round(statistics.median(times[name]), 2),
            "max": round(max(times[name]), 2),
            "per_reply": round(sum(times[name]) / ROUNDS, 1),
            "finish": round(statistics.median(finishes[name]), 2),
        }
        for name in variants
    }


def _as_v3(path: Path) -> None:
    """Leave the database as schema v3 would have: no index, no triggers."""
    db = sqlite3.connect(path, isolation_level=None)
    for name in _SEARCH_TRIGGERS:
        db.execute(f"DROP TRIGGER {name}")
    db.execute("DROP TABLE messages_fts")
    db.execute("DROP TABLE titles_fts")
    db.execute("PRAGMA user_version = 3")
    db.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    rng = random.Random(20261202)
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "chats.sqlite3"
        store = ChatStore(path)
        if not store.indexed:
            print("this sqlite has no FTS5: nothing to compare", file=sys.stderr)
            return 1
        started = time.perf_counter()
        long_chat = fill(store, rng)
        fill_s = time.perf_counter() - started
        store.close()
        _as_v3(path)
        started = time.perf_counter()
        store = ChatStore(path)  # the upgrade: a backup, then the index built from the rows
        upgrade_s = time.perf_counter() - started
        db_mib = path.stat().st_size / 2**20

        rows: list[tuple[str, int, float, float]] = []
        for query in QUERIES:
            found = len(store.conversations(query))
            fts_ms = _ms(lambda q=query: store.conversations(q))
            store.indexed = False  # the LIKE scan: v3's search, and the fallback without FTS5
            like_ms = _ms(lambda q=query: store.conversations(q))
            store.indexed = True
            rows.append((query, found, fts_ms, like_ms))
        list_all_ms = _ms(store.conversations, 10)

        checkpoints = _compare_checkpoints(store, long_chat, rng)
        store.close()

    fts = [row[2] for row in rows]
    like = [row[3] for row in rows]
    result = {
        "conversations": CONVERSATIONS + 1,
        "messages": MESSAGES + LONG_CHAT,
        "queries": len(rows),
        "search_ms": {"median": round(statistics.median(fts), 2), "max": round(max(fts), 2)},
        "like_search_ms": {"median": round(statistics.median(like), 2), "max": round(max(like), 2)},
        "list_all_ms": round(list_all_ms, 2),
        "checkpoint_update_ms": checkpoints,
        "upgrade_from_v3_s": round(upgrade_s, 2),
        "met": max(fts) < 50,
    }
    print(f"{CONVERSATIONS + 1} conversations, {MESSAGES + LONG_CHAT} messages ({db_mib:.0f} MiB), filled in "
          f"{fill_s:.1f} s; upgrade from v3 (backup, index built) {upgrade_s:.2f} s\n")  # fmt: skip
    print("| query | chats found | FTS5 ms | LIKE ms (v3) |")
    print("|---|---:|---:|---:|")
    for query, found, fts_ms, like_ms in rows:
        print(f"| `{query}` | {found} | {fts_ms:.2f} | {like_ms:.2f} |")
    print(f"\nsearch, median / max over {len(rows)} queries: FTS5 {result['search_ms']}, LIKE "
          f"{result['like_search_ms']} ms; listing all {list_all_ms:.2f} ms\n")  # fmt: skip
    print(f"| checkpoints in the {LONG_CHAT:,}-message chat ({ROUNDS} replies growing to ~{CHECKPOINTS * 30}"
          f" words, {CHECKPOINTS} each) | median ms | max ms | a reply's sum, ms | finish ms |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for name, spread in checkpoints.items():
        print(f"| {name} | {spread['median']:.2f} | {spread['max']:.2f} | {spread['per_reply']:.1f} | "
              f"{spread['finish']:.2f} |")  # fmt: skip
    save_results("chat-search", result)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
