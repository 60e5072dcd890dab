"""Measure how well Grad-CAM heat maps point at the real defects (boxes or masks) on a checkpoint's test split.

The command lives in :mod:`inspectkit.cli.localize` (also ``inspectkit localize``); this file keeps ``python localize.py`` working."""

import sys

from inspectkit.cli.localize import main

if __name__ == "__main__":
    sys.exit(main())
