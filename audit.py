"""Leakage audit: list the test images that have an exact (byte-identical) or near twin in train.

The command lives in :mod:`inspectkit.cli.audit` (also ``inspectkit audit``); this file keeps ``python audit.py`` working."""

import sys

from inspectkit.cli.audit import main

if __name__ == "__main__":
    sys.exit(main())
