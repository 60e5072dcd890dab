"""Inspect a whole shift of casting photos: one row per photo in CSV, JSON Lines or Parquet, resumable.

    python batch_inspect.py /data/shift-0412 --out shift-0412.csv
    python batch_inspect.py photos.txt --out rows.parquet --heatmaps overlays/ --threshold 0.4
    python batch_inspect.py /data/shift-0412 --out rows.jsonl --engine ray      # Ray Data; RAY_ADDRESS for a cluster

Rerun the same command after Ctrl-C or a crash: the photos already in --out are skipped. See
``python batch_inspect.py --help``, docs/batch.md and inspectkit/batch.py.
"""

from __future__ import annotations

import sys

from inspectkit.batch.job import main

if __name__ == "__main__":
    sys.exit(main())
