"""Compare trained checkpoints on the validation split they share (the test split chooses nothing).

The command lives in :mod:`inspectkit.cli.compare_models` (also ``inspectkit compare-models``); this file keeps ``python compare_models.py`` working."""

import sys

from inspectkit.cli.compare_models import main

if __name__ == "__main__":
    sys.exit(main())
