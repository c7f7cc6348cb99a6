"""``python -m training`` is the same program as ``python main.py``."""

import sys

from training.cli import main

if __name__ == "__main__":
    sys.exit(main())
