"""Fit the guard of a checkpoint (UNUSABLE verdicts and the drift reference) on the photos it was trained on.

The command lives in :mod:`inspectkit.cli.fit_guard` (also ``inspectkit fit-guard``); this file keeps ``python fit_guard.py`` working."""

import sys

from inspectkit.cli.fit_guard import main

if __name__ == "__main__":
    sys.exit(main())
