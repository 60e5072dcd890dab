"""Wall time of the ``adapt.py`` command itself: start to finish, caching, training, threshold and the saved
checkpoint with its ONNX graph included. Run it on a quiet machine.

    python -m benchmarks.adapt_time --checkpoint runs/j/model.pt --data runs/lc2/work/s0/n50 \
        --seeds 0 1 2 --json reports/line-b/adapt_time.json

Each run is a fresh ``python adapt.py`` process (as a user runs it) with the machine's default torch threads
unless ``--threads`` says otherwise; the photos are counted from the folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def count_photos(folder: Path) -> dict:
    return {d.name: sum(1 for f in d.iterdir() if not f.name.startswith("."))
            for d in sorted(folder.iterdir()) if d.is_dir()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="the new line's photos, one folder per class")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--threads", type=int, default=0, help="adapt.py --threads (0: torch's default)")
    p.add_argument("--json", required=True)
    a = p.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in a.seeds:
            out = Path(tmp) / f"adapted-{seed}.pt"
            cmd = [sys.executable, str(REPO / "adapt.py"), "--checkpoint", a.checkpoint, "--data", a.data,
                   "--out", str(out), "--seed", str(seed), "--threads", str(a.threads)]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
            secs = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-2000:])
                raise SystemExit(f"adapt.py failed (exit {proc.returncode})")
            runs.append({"seed": seed, "seconds": round(secs, 1), "written": out.is_file(),
                         "graph_written": out.with_suffix(".onnx").is_file()})
            print(f"seed {seed}: {secs:.1f} s", flush=True)
    doc = {"command": "python -m benchmarks.adapt_time " + " ".join(sys.argv[1:] if argv is None else argv),
           "photos": count_photos(Path(a.data)), "threads": a.threads or "default", "cpus": os.cpu_count(),
           "machine": platform.processor() or platform.machine(), "runs": runs,
           "seconds_max": max(r["seconds"] for r in runs),
           "seconds_mean": round(sum(r["seconds"] for r in runs) / len(runs), 1)}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: doc[k] for k in ("photos", "seconds_mean", "seconds_max")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
