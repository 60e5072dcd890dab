"""batch_inspect.py against the handler's own predict_batch over the same photos, in one run (issue 16).

    python -m benchmarks.batch_throughput --data ../shared/data/casting --engines local,ray \
        --json reports/batch_throughput.json
    python -m benchmarks.batch_throughput --limit 200 --engines local          # a quick look

Measured, decoding included everywhere (the photos are read from disk as paths):
  in-process   InferenceHandler.predict_batch over the photos in chunks of --chunk-size (heat maps off, as the
               command without --heatmaps), in this process: the reference throughput
  cli local    `python batch_inspect.py DATA --out rows.csv` in a fresh process: wall time, start and model load
               included; its verdicts compared with the reference's
  rerun        the same command again on the finished output: wall time (goal <= 15 s) and rows added (goal 0)
  cli ray      `--engine ray` on a local Ray: wall time; its verdicts compared with the local engine's
Goals: cli local >= 0.75x in-process photos/s; verdicts equal; rerun <= 15 s adding no row; ray reported beside.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(args: list[str], env: dict) -> float:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, str(REPO / "batch_inspect.py"), *args, "--quiet"], cwd=REPO, env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"batch_inspect.py {' '.join(args)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "casting",
                    help="folder of photos, nested (default: the casting data set, 7,348 photos)")
    ap.add_argument("--limit", type=int, help="only the first N photos (a list file is passed to the command)")
    ap.add_argument("--checkpoint", default=str(REPO / "final_best_model.pt"))
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--chunk-size", type=int, default=64)
    ap.add_argument("--engines", default="local,ray", help="comma list of local,ray")
    ap.add_argument("--ray-cpus", type=int, help="CPUs of the local Ray (default: all)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]

    from inspectkit.batch.inputs import collect_inputs
    from inspectkit.batch.writers import read_rows
    from inspectkit.inference.handler import InferenceHandler

    photos = collect_inputs([str(args.data)])
    if args.limit:
        photos = photos[: args.limit]
    work = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    inputs = [str(args.data)]
    if args.limit:
        (work / "photos.txt").write_text("\n".join(photos) + "\n")
        inputs = [str(work / "photos.txt")]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    common = ["--checkpoint", args.checkpoint, "--backend", args.backend, "--chunk-size", str(args.chunk_size)]
    report: dict = {"photos": len(photos), "data": str(args.data), "chunk_size": args.chunk_size,
                    "cpus": len(os.sched_getaffinity(0)), "load_average_at_start": list(os.getloadavg())}

    h = InferenceHandler(args.checkpoint, backend=args.backend)
    h.predict_batch(photos[:64], heatmap=False, on_error="collect")  # warm-up
    t = time.perf_counter()
    ref = []
    for i in range(0, len(photos), args.chunk_size):
        ref += h.predict_batch(photos[i:i + args.chunk_size], heatmap=False, batch_size=min(32, args.chunk_size),
                               on_error="collect")
    ref_s = time.perf_counter() - t
    report["in_process"] = {"seconds": round(ref_s, 2), "photos_per_s": round(len(photos) / ref_s, 1),
                            "backend": h.backend}
    ref_verdicts = {p: r.verdict for p, r in zip(photos, ref)}
    del h

    if "local" in engines:
        out = work / "rows.csv"
        s = run_cli([*inputs, "--out", str(out), *common], env)
        rows = read_rows(out)
        same = sum(ref_verdicts.get(r["path"]) == r["verdict"] for r in rows)
        before = len(rows)
        s2 = run_cli([*inputs, "--out", str(out), *common], env)
        added = len(read_rows(out)) - before
        report["cli_local"] = {"seconds": round(s, 2), "photos_per_s": round(len(photos) / s, 1),
                               "ratio_to_in_process": round(ref_s / s, 3), "rows": before,
                               "verdicts_equal_to_handler": same == len(photos) == before}
        report["rerun"] = {"seconds": round(s2, 2), "rows_added": added}
    if "ray" in engines:
        out = work / "rows_ray.csv"
        extra = ["--engine", "ray"] + (["--ray-cpus", str(args.ray_cpus)] if args.ray_cpus else [])
        s = run_cli([*inputs, "--out", str(out), *common, *extra], env)
        rows = {r["path"]: r["verdict"] for r in read_rows(out)}
        report["cli_ray"] = {"seconds": round(s, 2), "photos_per_s": round(len(photos) / s, 1),
                             "ratio_to_in_process": round(ref_s / s, 3),
                             "verdicts_equal_to_local": rows == ref_verdicts}
    goals = {}
    if "cli_local" in report:
        goals["cli_ge_0.75x_in_process"] = report["cli_local"]["ratio_to_in_process"] >= 0.75
        goals["verdicts_equal"] = report["cli_local"]["verdicts_equal_to_handler"]
        goals["rerun_le_15s_no_row"] = report["rerun"]["seconds"] <= 15 and report["rerun"]["rows_added"] == 0
    if "cli_ray" in report:
        goals["ray_verdicts_equal"] = report["cli_ray"]["verdicts_equal_to_local"]
    report["goals"] = goals
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
