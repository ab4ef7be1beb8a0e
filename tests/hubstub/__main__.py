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
    parser.add_argument(
        "--rate", type=float, default=0, metavar="MB/S", help="serve each connection's file bytes this slowly"
    )
    parser.add_argument(
        "--tls",
        type=Path,
        metavar="CA_DIR",
        help="speak https, with a throw-away CA made in CA_DIR (trust CA_DIR/ca.pem through SSL_CERT_FILE)",
    )
    parser.add_argument("--listing", type=int, default=0, metavar="N", help="also list N made-up repos")
    args = parser.parse_args()
    if not args.root.is_dir():
        print(f"not a folder: {args.root}", file=sys.stderr)
        return 2
    options = {"port": args.port, "per_connection_bps": args.rate * 1e6 or None}
    ca_file = None
    if args.tls is None:
        stub = HubStub(args.root, **options)
    else:
        from tests.tls_helpers import TLSHubStub, make_ca

        ca = make_ca(args.tls)
        stub, ca_file = TLSHubStub(ca.server_context(), args.root, **options), ca.ca_file
    stub.tokens.update(args.token)
    for n in range(args.listing):  # listing only: one small made-up file each
        stub.add_repo(f"maker{n % 7}/model-{n:05d}-GGUF", {f"model-{n:05d}-Q4_K_M.gguf": 10}, downloads=n)
    with stub:
        repos = stub.repos.all()
        print(f"Serving {len(repos)} repos from {args.root}")
        print(f"HF_ENDPOINT={stub.endpoint}  (CDN at {stub.cdn_endpoint})", flush=True)
        if ca_file is not None:
            print(f"SSL_CERT_FILE={ca_file}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
