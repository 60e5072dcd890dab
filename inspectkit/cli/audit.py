"""Leakage audit: list the test images that have an exact (byte-identical) or near twin in train.

    python audit.py --data ../shared/data/casting --json reports/audit.json

Near twins are found by correlating high-passed 64x64 thumbnails over flips and right-angle turns
(inspectkit.data.folders.thumbnail_descriptor); exact twins by SHA-256 of the file bytes.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from inspectkit.command import error


def main(argv=None) -> int:
    from inspectkit.data import folders as D

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/casting", help="data set with train/ and test/ folders")
    p.add_argument("--test", default=None, help="a separate folder to audit against --data's train split")
    p.add_argument("--threshold", type=float, default=D.TWIN_SIMILARITY, help="near-twin similarity threshold")
    p.add_argument("--defect-class", default=None)
    p.add_argument("--json", default=None, help="write the full list as JSON here")
    p.add_argument("--csv", default=None, help="write the full list as CSV here")
    a = p.parse_args(argv)
    try:
        train = D.load_folder(a.data, "train", a.defect_class)
        test = (D.load_folder(a.test, None, a.defect_class, train.class_names) if a.test
                else D.load_folder(a.data, "test", a.defect_class))
        train, train_images = D.decode_all(train)
        test, test_images = D.decode_all(test)
    except ValueError as exc:
        error("audit.py", str(exc))
        return 2
    rows = D.audit(train, train_images, test, test_images, a.threshold)
    exact = sum(r["kind"] == "exact" for r in rows)
    for r in rows:
        print(f"{r['kind']:5s} {r['similarity']:.3f}  {r['test']}  <->  {r['train']}")
    summary = {"test_images": len(test), "exact_twins": exact, "near_twins": len(rows) - exact,
               "twin_free": len(test) - len(rows), "threshold": a.threshold,
               "skipped": [p for p, _ in train.skipped + test.skipped]}
    print(f"{len(test)} test images: {exact} exact twins, {len(rows) - exact} near twins, "
          f"{len(test) - len(rows)} twin-free (threshold {a.threshold})")
    if a.json:
        D.save_json({"summary": summary, "twins": rows}, a.json)
    if a.csv:
        Path(a.csv).parent.mkdir(parents=True, exist_ok=True)
        with open(a.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["test", "test_class", "train", "kind", "similarity"])
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
