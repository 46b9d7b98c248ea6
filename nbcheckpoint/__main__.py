"""Run the command line as ``python -m nbcheckpoint``."""

from __future__ import annotations

import sys

from nbcheckpoint.cli import main

if __name__ == "__main__":
    sys.exit(main())
