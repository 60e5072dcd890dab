"""Evaluate a checkpoint at its stored threshold on its test split, or on every image of another labelled set.

The command lives in :mod:`inspectkit.cli.evaluate` (also ``inspectkit evaluate``); this file keeps ``python evaluate.py`` working."""

import sys

from inspectkit.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
