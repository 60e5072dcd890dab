"""Start-up time of the app: from ``python app.py`` to the page answering HTTP 200, against a bare gr.Blocks app
started the same way in the same run (alternating, after a warm-up of each, so both see the same disk cache
and machine load). Reports the median of each and the difference; the goal is at most 1 s more than bare.

    .venv/bin/python -m benchmarks.startup                 # 5 runs of each
    .venv/bin/python -m benchmarks.startup --runs 7 --json test-artifacts/startup.json

It also records, for the app, when GET /api/health first says the model is ready (the first inspection can
wait until then); that time is informative, not part of the goal.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_S = 1.0
BARE_APP = '''
import os
import gradio as gr

with gr.Blocks(title="bare") as demo:
    gr.Markdown("bare Gradio app")

demo.launch(server_name=os.environ["GRADIO_SERVER_NAME"], server_port=int(os.environ["GRADIO_SERVER_PORT"]))
'''


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body) of a GET; (0, b"") when nothing answers yet."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except (TimeoutError, urllib.error.URLError, ConnectionError, OSError):
        return 0, b""


def start_and_time(script: Path, cwd: Path, env_extra: dict, limit_s: float, wait_model: bool) -> dict:
    """Start ``python script``, poll / every 10 ms until it answers 200; optionally poll /api/health until the
    model is ready. Returns the seconds from Popen to each event. The process is always stopped."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **env_extra}
    env.pop("PORT", None)
    url = f"http://127.0.0.1:{port}/"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(script)], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    out = {"page_s": None, "model_ready_s": None, "model": None}
    try:
        while time.perf_counter() - t0 < limit_s:
            if proc.poll() is not None:
                raise RuntimeError(f"{script.name} exited with {proc.returncode}: "
                                   f"{proc.stderr.read().decode(errors='replace')[-2000:]}")
            status, _ = get(url, timeout=1.0)
            if status == 200:
                out["page_s"] = time.perf_counter() - t0
                break
            time.sleep(0.01)
        if out["page_s"] is None:
            raise RuntimeError(f"{script.name} did not answer 200 on {url} within {limit_s:.0f} s")
        while wait_model and time.perf_counter() - t0 < limit_s:
            status, body = get(url + "api/health")
            state = json.loads(body).get("model") if status == 200 else None
            if state in ("ready", "failed"):
                out["model_ready_s"] = time.perf_counter() - t0
                out["model"] = state
                break
            time.sleep(0.05)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: only the process we started
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        proc.stderr.close()
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; prints a table and returns 0 (1 when the goal is missed and --strict is given)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="timed runs of each app (after one warm-up each)")
    p.add_argument("--limit", type=float, default=180.0, help="seconds to wait for one start before giving up")
    p.add_argument("--checkpoint", help="model file for the app (INSPECT_MODEL_PATH); default: the committed one")
    p.add_argument("--json", help="also write the numbers to this file")
    p.add_argument("--strict", action="store_true", help=f"exit 1 when the app needs more than {GOAL_S} s over bare")
    a = p.parse_args(argv)
    if a.runs < 1:
        p.error(f"--runs {a.runs} must be at least 1")
    app_env = {"INSPECT_MODEL_PATH": str(Path(a.checkpoint).resolve())} if a.checkpoint else {}
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare_app.py"
        bare.write_text(BARE_APP)
        app = ROOT / "app.py"
        runs = {"bare": [], "app": []}
        model_ready = []
        for i in range(a.runs + 1):  # run 0 is the warm-up (cold disk cache, .pyc files), not counted
            for name in (("bare", "app") if i % 2 == 0 else ("app", "bare")):
                script, env = (bare, {}) if name == "bare" else (app, app_env)
                r = start_and_time(script, ROOT if name == "app" else Path(tmp), env, a.limit, wait_model=name == "app")
                label = "warm-up" if i == 0 else f"run {i}"
                extra = (f", model {r['model']} at {r['model_ready_s']:.2f} s" if r["model_ready_s"] is not None
                         else "")
                print(f"{label:>8} {name:>4}: page 200 after {r['page_s']:.2f} s{extra}", flush=True)
                if i > 0:
                    runs[name].append(r["page_s"])
                    if name == "app" and r["model_ready_s"] is not None:
                        model_ready.append(r["model_ready_s"])
    med = {k: statistics.median(v) for k, v in runs.items()}
    diff = med["app"] - med["bare"]
    result = {"runs": a.runs, "page_200_s": runs, "median_s": med, "app_minus_bare_s": diff,
              "goal_s": GOAL_S, "met": diff <= GOAL_S,
              "app_model_ready_median_s": statistics.median(model_ready) if model_ready else None,
              "python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}
    print(f"\nmedian of {a.runs}: bare {med['bare']:.2f} s, app {med['app']:.2f} s, "
          f"difference {diff:+.2f} s (goal: at most +{GOAL_S:.1f} s): {'met' if diff <= GOAL_S else 'MISSED'}")
    if model_ready:
        print(f"app model ready (GET /api/health): median {statistics.median(model_ready):.2f} s after start")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=2))
    return 1 if a.strict and diff > GOAL_S else 0


if __name__ == "__main__":
    sys.exit(main())
