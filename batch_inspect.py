"""Inspect a whole shift of casting photos: one row per photo in CSV, JSON Lines or Parquet, resumable.

The command lives in :mod:`inspectkit.batch.job` (also ``inspectkit batch``); this file keeps ``python batch_inspect.py`` working."""

import sys

from inspectkit.batch.job import main

if __name__ == "__main__":
    sys.exit(main())
