"""The packaged app's entry point: `hubside` in dist/hubside/."""

import multiprocessing
import sys

from app.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # the engine process is this same executable, started by 'spawn'
    sys.exit(main())
