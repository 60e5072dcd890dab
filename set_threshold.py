"""Choose a binary checkpoint's decision threshold again on its own validation split; the weights do not change.

The command lives in :mod:`inspectkit.cli.set_threshold` (also ``inspectkit set-threshold``); this file keeps ``python set_threshold.py`` working."""

import sys

from inspectkit.cli.set_threshold import main

if __name__ == "__main__":
    sys.exit(main())
