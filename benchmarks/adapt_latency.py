"""Inspection latency while the app adapts a model: does POST /api/inspect keep answering, and how much slower?

    # the committed model, 50 photos per class of the casting test split, the app's default budget
    .venv/bin/python -m benchmarks.adapt_latency --per-class 50 --json benchmarks/results/adapt_latency.json

    # a smoke run (seconds): the example photos, one view, one epoch per stage
    .venv/bin/python -m benchmarks.adapt_latency --data examples --views 1 --stage1-epochs 1 --stage2-epochs 1

Starts ``python app.py`` (the Space's own entry point, with INSPECT_ADAPT_* set from the options) on a free
127.0.0.1 port, then:

1. idle: ``--idle`` sequential POST /api/inspect requests (the example photos in turn);
2. during: starts an adaptation through the Gradio API (``/adapt_run``, the Adapt button's endpoint; the photos
   go to the class drop zones) and keeps sending sequential /api/inspect requests until it has finished.

Reports latency p50/p95/max per phase, the slowdown (during p50 / idle p50), the adaptation's wall time and
mode, and errors. Adaptation runs in the server's worker thread with ``--threads`` torch threads (the app's
default: 1), so on a 2-core machine inspection keeps about one core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import sys
import threading
import time
from pathlib import Path

from benchmarks.loadtest import ApiClient, Outcome, app_server, default_images

ROOT = Path(__file__).resolve().parents[1]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def class_photos(data: Path, per_class: int, seed: int) -> dict[str, list[Path]]:
    """Up to ``per_class`` photos per class folder of ``data`` (a seeded sample). ``examples/`` (flat files
    named cast_def_* / cast_ok_*) is read as the two casting classes."""
    rng = random.Random(seed)
    if data.resolve() == (ROOT / "examples").resolve():
        imgs = sorted(p for p in data.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        found = {"def_front": [p for p in imgs if "_def_" in p.name], "ok_front": [p for p in imgs if "_ok_" in p.name]}
    else:
        found = {d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                 for d in sorted(data.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    if len(found) < 2:
        raise SystemExit(f"{data} must hold one folder per class of the model (e.g. def_front/ and ok_front/)")
    return {c: sorted(rng.sample(ps, min(per_class, len(ps)))) for c, ps in found.items()}


def percentiles(xs: list[float]) -> dict:
    """n, p50, p95 and max of latencies in ms (None when empty)."""
    if not xs:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
    s = sorted(xs)
    return {"n": len(s), "p50_ms": round(statistics.median(s), 1),
            "p95_ms": round(s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))], 1), "max_ms": round(s[-1], 1)}


def timed(client: ApiClient, image: Path) -> tuple[float, str, str | None]:
    t0 = time.perf_counter()
    outcome, why = client(image)
    return (time.perf_counter() - t0) * 1000, outcome, why


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(ROOT / "final_best_model.pt"), help="the served model")
    p.add_argument("--data", default=None, help="labelled photos, one folder per class (default: the casting test "
                                                "split in ../shared when present, else examples/)")
    p.add_argument("--per-class", type=int, default=50, help="photos per class sent to the adaptation")
    p.add_argument("--idle", type=int, default=30, help="inspections measured before the adaptation")
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--stage1-epochs", type=int, default=10)
    p.add_argument("--stage2-epochs", type=int, default=5)
    p.add_argument("--replay", default="none",
                   help="'none' (the default here: no training data needed), 'auto' or a folder")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the adaptation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--log", default=None, help="the server's output goes here")
    a = p.parse_args(argv)

    default = ROOT.parent / "shared" / "data" / "casting" / "test"
    data = Path(a.data) if a.data else (default if default.is_dir() else ROOT / "examples")
    photos = class_photos(data, a.per_class, a.seed)
    images = default_images()
    env = {"INSPECT_ADAPT_VIEWS": str(a.views), "INSPECT_ADAPT_STAGE1_EPOCHS": str(a.stage1_epochs),
           "INSPECT_ADAPT_STAGE2_EPOCHS": str(a.stage2_epochs), "INSPECT_ADAPT_REPLAY": a.replay,
           "INSPECT_ADAPT_THREADS": str(a.threads), "INSPECT_ADAPT_SEED": str(a.seed)}
    from gradio_client import Client, handle_file

    out: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": {"cpus": os.cpu_count(),
                 "platform": platform.platform(), "python": platform.python_version()},
                 "checkpoint": Path(a.checkpoint).name, "data": str(data),
                 "photos": {c: len(ps) for c, ps in photos.items()}, "budget": env}
    with app_server(a.checkpoint, extra_env=env, log_path=Path(a.log) if a.log else None) as (url, pid):
        api = ApiClient(url)
        try:
            for img in images[:2]:  # warm-up: first requests pay for lazy imports
                api(img)
            idle, errors = [], []
            for i in range(a.idle):
                ms, outcome, why = timed(api, images[i % len(images)])
                (idle.append(ms) if outcome == Outcome.OK else errors.append(f"idle: {why}"))

            client = Client(url, verbose=False, download_files=False, analytics_enabled=False)
            zones = [[handle_file(str(x)) for x in ps] for ps in photos.values()]
            zones += [[] for _ in range(4 - len(zones))]
            result: dict = {}

            def run_adaptation():
                t0 = time.perf_counter()
                try:
                    r = client.predict([], *zones, api_name="/adapt_run")
                    result["ok"] = True
                    # gradio_client leaves the session State out: the before/after HTML is what comes back
                    result["html"] = next((x for x in (r if isinstance(r, (list, tuple)) else [r])
                                           if isinstance(x, str) and "adapt-result" in x), "")
                except Exception as exc:  # reported, not raised: the latency figures still matter
                    result["ok"] = False
                    result["error"] = f"{type(exc).__name__}: {exc}"
                result["seconds"] = round(time.perf_counter() - t0, 1)

            worker = threading.Thread(target=run_adaptation, name="adaptation")
            worker.start()
            during, i = [], 0
            while worker.is_alive():
                ms, outcome, why = timed(api, images[i % len(images)])
                (during.append(ms) if outcome == Outcome.OK else errors.append(f"during: {why}"))
                i += 1
            worker.join()
            client.close()
        finally:
            api.close()
    out["idle"] = percentiles(idle)
    out["during_adaptation"] = percentiles(during)
    if idle and during:
        out["slowdown_p50"] = round(out["during_adaptation"]["p50_ms"] / out["idle"]["p50_ms"], 2)
    html = result.get("html") or ""
    took = re.search(r"Adapted in ([\d.]+) s", html)
    out["adaptation"] = {"ok": result.get("ok"), "seconds_client": result.get("seconds"),
                         "seconds_server": float(took.group(1)) if took else None,
                         "mode": "held-out" if "<b>Held-out</b>" in html else "in-sample" if "IN-SAMPLE" in html
                         else None, "error": result.get("error")}
    out["errors"] = errors[:20]
    out["n_errors"] = len(errors)
    text = json.dumps(out, indent=2)
    print(text)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(text + "\n")
    return 0 if result.get("ok") and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
