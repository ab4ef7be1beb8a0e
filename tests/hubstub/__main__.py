"""Run the Hub stand-in by hand: `python -m tests.hubstub --port 8765 DIR`.

DIR holds `<owner>/<repo>/<files>`; an optional `<owner>/<repo>/.hub.json` gives the repo's metadata
(downloads, likes, gated, cardData, tags, lastModified, gguf...). Point Hubside at it with
`HF_ENDPOINT=http://127.0.0.1:PORT`.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
from pathlib import Path

from tests.hubstub.server import HubStub


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.hubstub", description=__doc__)
    parser.add_argument("root", type=Path, help="folder of <owner>/<repo>/ folders to serve")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", action="append", default=[], help="a token that opens gated repos")
    parser.add_argument("--rate", type=float, default=0, metavar="MB/S", help="serve files this slowly")
    parser.add_argument("--listing", type=int, default=0, metavar="N", help="also list N made-up repos")
    args = parser.parse_args()
    if not args.root.is_dir():
        print(f"not a folder: {args.root}", file=sys.stderr)
        return 2
    stub = HubStub(args.root, port=args.port)
    stub.tokens.update(args.token)
    stub.bytes_per_second = args.rate * 1e6 or None
    for n in range(args.listing):  # listing only: one small made-up file each
        stub.add_repo(f"maker{n % 7}/model-{n:05d}-GGUF", {f"model-{n:05d}-Q4_K_M.gguf": 10}, downloads=n)
    with stub:
        repos = stub.repos.all()
        print(f"Serving {len(repos)} repos from {args.root}")
        print(f"HF_ENDPOINT={stub.endpoint}  (CDN at {stub.cdn_endpoint})", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
