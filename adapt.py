"""Adapt a trained checkpoint to a new line from a few labelled photos of it; writes a normal checkpoint.

The command lives in :mod:`inspectkit.cli.adapt` (also ``inspectkit adapt``); this file keeps ``python adapt.py`` working."""

import sys

from inspectkit.cli.adapt import main

if __name__ == "__main__":
    sys.exit(main())
