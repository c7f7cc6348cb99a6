"""Entry point: ``python main.py --help``. All logic lives in the ``training`` package."""

import sys

from training.cli import main

if __name__ == "__main__":
    sys.exit(main())
