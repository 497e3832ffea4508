"""``python -m minicog.worker``: the worker process entry point (started by the orchestrator)."""

import sys

if __name__ == "__main__":
    from minicog.worker.main import main

    sys.exit(main())
