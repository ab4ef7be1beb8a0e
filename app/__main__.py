"""`python -m app` is the same as the `hubside` command."""

import sys

from app.cli import main

if __name__ == "__main__":  # the engine process (multiprocessing 'spawn') imports this module too
    sys.exit(main())
