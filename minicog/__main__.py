"""``python -m minicog``: the command line (see :mod:`minicog.cli`)."""

import sys

from minicog.cli import main

if __name__ == "__main__":
    sys.exit(main())
