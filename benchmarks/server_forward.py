"""The network's forward time inside the server against the same handler in a plain process, in one run.

    python -m benchmarks.server_forward --requests 50 --rounds 5 --json reports/server_forward.json
    python -m benchmarks.server_forward --requests 50 --pace 300     # curl-like: 300 ms idle before each call

Starts ``python app.py`` (the Space's entry point) on a free 127.0.0.1 port with the checkpoint, builds the same
handler here with the server's own factory (``default_handler_factory``), and then, in interleaved rounds
call by call (round robin) so that a change in the machine's load hits every path alike, times:

  in-process   handler.predict(bytes, heatmap=True) in this process's main thread
  json         POST /api/inspect?heatmap=true (httpx, keep-alive)
  gradio       the Gradio /predict endpoint with heatmap=True (gradio_client)

Each figure is the handler's own ``forward`` stage (``latency_ms.forward`` in the answers), so HTTP, the queue and
PNG encoding are not in it; the request's wall time is reported beside it. The goal of issue 16: the server's
forward (JSON, heat map on) at most 1.3x the in-process figure of the same run. ``--pace`` sleeps before every call
on every path, as a person sending requests with curl does: an idle gap lets other processes evict the model
from the CPU caches and the thread pools fall asleep, and comparing paced with back-to-back calls shows how much
of a difference is that rather than the server.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from inspectkit.serve.model_source import ENV_MODEL_PATH, default_handler_factory

REPO = Path(__file__).resolve().parents[1]

PATHS = ("in-process", "json", "gradio")


def _stats(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    s = sorted(xs)
    return {"n": len(s), "median": round(statistics.median(s), 2), "p10": round(s[int(0.1 * (len(s) - 1))], 2),
            "p90": round(s[int(0.9 * (len(s) - 1))], 2), "mean": round(statistics.fmean(s), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(REPO / "final_best_model.pt"))
    ap.add_argument("--requests", type=int, default=50, help="calls per path per round (default 50)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the paths (default 3)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed calls per path first (default 5)")
    ap.add_argument("--pace", type=float, default=0.0, metavar="MS", help="idle time before each call (default 0)")
    ap.add_argument("--blocks", action="store_true", help="each path's calls back to back, not round robin")
    ap.add_argument("--paths", default=",".join(PATHS), help=f"comma list of {PATHS}")
    ap.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for the server, repeatable; e.g. INSPECT_QUEUE_POLL_S=0.001 serves "
                         "with Gradio's own 1 ms queue polling, for a before/after comparison")
    ap.add_argument("--json", type=Path, help="write the report here")
    args = ap.parse_args(argv)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not paths or any(p not in PATHS for p in paths):
        ap.error(f"--paths must be a comma list of {PATHS}")
    extra = dict(kv.split("=", 1) for kv in args.server_env)

    import httpx

    from benchmarks.loadtest import app_server, default_images


    os.environ[ENV_MODEL_PATH] = str(Path(args.checkpoint).resolve())
    handler = default_handler_factory()()  # exactly as the server builds it
    images = [(p.name, p.read_bytes()) for p in default_images()]
    forward: dict[str, list[float]] = {p: [] for p in paths}
    wall: dict[str, list[float]] = {p: [] for p in paths}

    with app_server(args.checkpoint, extra_env=extra) as (url, pid):
        http = httpx.Client(base_url=url, timeout=120)
        gradio = None
        if "gradio" in paths:
            from gradio_client import Client, handle_file

            gradio = Client(url, verbose=False, download_files=False, analytics_enabled=False)
            files = {}
            tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"server_forward_{os.getpid()}"
            tmp.mkdir(exist_ok=True)
            for name, data in images:
                (tmp / name).write_bytes(data)
                files[name] = str(tmp / name)

        def call(path: str, i: int) -> tuple[float, float]:
            name, data = images[i % len(images)]
            t = time.perf_counter()
            if path == "in-process":
                r = handler.predict(data, heatmap=True, name=name)
                fwd = r.timings_ms["forward"]
            elif path == "json":
                resp = http.post("/api/inspect", params={"heatmap": "true"}, files={"file": (name, data, "image/jpeg")})
                resp.raise_for_status()
                fwd = resp.json()["latency_ms"]["forward"]
            else:
                res = gradio.predict(handle_file(files[name]), None, True, api_name="/predict")
                fwd = res["latency_ms"]["forward"]
            return fwd, (time.perf_counter() - t) * 1e3

        for p in paths:
            for i in range(args.warmup):
                call(p, i)
        for rnd in range(args.rounds):
            order = paths if rnd % 2 == 0 else paths[::-1]  # alternate the order: no path always goes first
            # call by call round robin (default): a change in the machine's load hits every path alike, which
            # blocks of calls per path would not; --blocks sends each path's calls back to back instead
            plan = ([(p, i) for p in order for i in range(args.requests)] if args.blocks
                    else [(p, i) for i in range(args.requests) for p in order])
            for p, i in plan:
                if args.pace:
                    time.sleep(args.pace / 1e3)
                f, w = call(p, i)
                forward[p].append(f)
                wall[p].append(w)
        http.close()
        if gradio is not None:
            gradio.close()

    report = {"checkpoint": str(args.checkpoint), "requests_per_round": args.requests, "rounds": args.rounds,
              "pace_ms": args.pace, "server_env": extra, "backend": handler.backend,
              "threads": getattr(handler, "threads", None), "cpus": len(os.sched_getaffinity(0)),
              "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
              "forward_ms": {p: _stats(v) for p, v in forward.items()},
              "request_ms": {p: _stats(v) for p, v in wall.items()}}
    base = report["forward_ms"].get("in-process", {}).get("median")
    if base:
        report["forward_ratio_to_in_process"] = {p: round(report["forward_ms"][p]["median"] / base, 3)
                                                 for p in paths if p != "in-process"}
        if "json" in paths:
            report["goal_json_forward_le_1.3x"] = report["forward_ratio_to_in_process"]["json"] <= 1.3
    print(json.dumps(report, indent=2))
    print("\nforward ms (median / p90):  " + "   ".join(
        f"{p} {report['forward_ms'][p]['median']} / {report['forward_ms'][p]['p90']}" for p in paths), file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
