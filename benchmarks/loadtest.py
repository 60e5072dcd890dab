"""Load and soak test of the inspection server on the loopback interface.

    # 8 clients for 60 s, half on POST /api/inspect, half on the Gradio /predict endpoint (gradio_client);
    # starts `python app.py` itself on a free 127.0.0.1 port with the committed model
    python -m benchmarks.loadtest --clients 8 --duration 60 --json reports/reliability/load.json

    # soak: 1,000 sequential requests (alternating the two endpoints), server memory sampled every 50
    python -m benchmarks.loadtest --soak 1000 --json reports/reliability/soak.json

    # against a server that is already running (its RSS is read when --pid is given)
    python -m benchmarks.loadtest --url http://127.0.0.1:7860/ --pid 12345

Reported: requests/s, latency p50/p95/p99/max per endpoint and overall, errors (anything but a correct
answer: OK, DEFECT, or UNUSABLE with its reason, see ``valid_answer``; a 503 "busy"/queue-full answer is counted
apart as `busy`), the server's RSS (psutil, the process and
its children) before and after and its peak, and whether the server still answers afterwards. Exit status 1
when there were errors or the server stopped answering, so the script can gate a release.

A benchmark script, long because it starts a real server and drives it in several phases; nothing imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
TARGETS = ("api", "gradio")


# ------------------------------------------------------------------------------------------ the server


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of process ``pid`` and its children, in MB (None when unknown)."""
    if pid is None:
        return None
    import psutil

    try:
        p = psutil.Process(pid)
        total = p.memory_info().rss
        for c in p.children(recursive=True):
            try:
                total += c.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20
    except psutil.Error:
        return None


def wait_ready(url: str, timeout: float = 300.0, proc: subprocess.Popen | None = None) -> dict:
    """Poll GET /api/health until the model is ready; raises RuntimeError when it failed or took too long."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode} before it was ready")
        try:
            last = httpx.get(url.rstrip("/") + "/api/health", timeout=5).json()
            if last.get("model") == "ready":
                return last
            if last.get("model") == "failed":
                raise RuntimeError(f"the server's model failed to load: {last.get('error')}")
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server was not ready within {timeout:.0f} s (last health: {last})")


@contextmanager
def app_server(checkpoint: str | None = None, port: int | None = None, extra_env: dict | None = None,
               log_path: Path | None = None, python: str | None = None):
    """Run ``python app.py`` (the Space's own entry point) on 127.0.0.1 in a subprocess; yields (url, pid).
    ``python``: the interpreter (default this one), e.g. a venv with requirements.txt alone (the lean install)."""
    port = port or free_port()
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
               GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    if checkpoint:
        env["INSPECT_MODEL_PATH"] = str(checkpoint)
    env.update(extra_env or {})
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen([python or sys.executable, str(REPO / "app.py")], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_ready(url, proc=proc)
        yield url, proc.pid
    finally:
        proc.terminate()  # only the process this function started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            log.close()


# ------------------------------------------------------------------------------------------ the clients


def default_images() -> list[Path]:
    """The example castings shipped with the app (real 300x300 photos)."""
    imgs = sorted(p for p in (REPO / "examples").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not imgs:
        raise SystemExit("no images in examples/; pass --images FOLDER")
    return imgs


class Outcome:
    """Classifies an answer: 'ok', 'busy' (a clear 503 / queue-full answer) or 'error'."""

    OK, BUSY, ERROR = "ok", "busy", "error"


#: The verdicts of a correct answer: UNUSABLE (a model with a guard: the photo cannot be judged) comes with its reason.
VERDICTS = ("OK", "DEFECT", "UNUSABLE")


def valid_answer(result: dict) -> bool:
    """A correct inspection answer: no error, a defect probability, and OK or DEFECT without an ``unusable_reason``
    or UNUSABLE with one (a non-empty string). Anything else (another verdict, UNUSABLE without a reason) is not."""
    if not (isinstance(result, dict) and result.get("error") is None
            and isinstance(result.get("defect_probability"), float)):
        return False
    verdict, reason = result.get("verdict"), result.get("unusable_reason")
    if verdict == "UNUSABLE":
        return isinstance(reason, str) and bool(reason.strip())
    return verdict in VERDICTS and reason is None


_valid = valid_answer


class ApiClient:
    """POST /api/inspect with a keep-alive httpx client."""

    def __init__(self, url: str, timeout: float = 120.0):
        self.http = httpx.Client(base_url=url, timeout=timeout)

    def __call__(self, image: Path) -> tuple[str, str | None]:
        try:
            r = self.http.post("/api/inspect", files={"file": (image.name, image.read_bytes(), "image/jpeg")})
        except httpx.HTTPError as exc:
            return Outcome.ERROR, f"{type(exc).__name__}: {exc}"
        if r.status_code == 503:
            return Outcome.BUSY, r.text[:200]
        if r.status_code != 200:
            return Outcome.ERROR, f"HTTP {r.status_code}: {r.text[:200]}"
        try:
            ok = _valid(r.json())
        except ValueError:
            ok = False
        return (Outcome.OK, None) if ok else (Outcome.ERROR, f"bad answer: {r.text[:200]}")

    def close(self):
        self.http.close()


class GradioClient:
    """The Gradio ``/predict`` endpoint through gradio_client (upload, queue, result), as a Python user calls it."""

    def __init__(self, url: str):
        from gradio_client import Client

        self.client = Client(url, verbose=False, download_files=False, analytics_enabled=False)

    def __call__(self, image: Path) -> tuple[str, str | None]:
        from gradio_client import handle_file
        from gradio_client.exceptions import AppError

        try:
            result = self.client.predict(handle_file(str(image)), None, False, api_name="/predict")
        except AppError as exc:
            return Outcome.ERROR, f"AppError: {exc}"
        except Exception as exc:  # QueueError (busy) and transport errors
            if "queue is full" in str(exc).lower():
                return Outcome.BUSY, str(exc)
            return Outcome.ERROR, f"{type(exc).__name__}: {exc}"
        return (Outcome.OK, None) if _valid(result) else (Outcome.ERROR, f"bad answer: {str(result)[:200]}")

    def close(self):
        try:
            self.client.close()
        except Exception:
            pass


CLIENTS: dict[str, Callable[[str], object]] = {"api": ApiClient, "gradio": GradioClient}


@dataclass
class Record:
    target: str
    start: float
    latency_s: float
    outcome: str
    detail: str | None = None


@dataclass
class Sampler:
    """Samples the server's RSS every ``every`` seconds in a thread; keeps the peak."""

    pid: int | None
    every: float = 0.5
    samples: list = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self):
        if self.pid is not None:
            self._t = threading.Thread(target=self._run, daemon=True)
            self._t.start()
        return self

    def _run(self):
        t0 = time.monotonic()
        while not self._stop.wait(self.every):
            m = rss_mb(self.pid)
            if m is not None:
                self.samples.append((round(time.monotonic() - t0, 2), round(m, 1)))

    def __exit__(self, *exc):
        self._stop.set()

    @property
    def peak(self) -> float | None:
        return max((m for _, m in self.samples), default=None)


def percentile(xs: list[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear between closest ranks; None for no data."""
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarize(records: list[Record], elapsed: float) -> dict:
    """Throughput, latency percentiles (ms, successful requests) and outcome counts."""
    ok = [r.latency_s * 1e3 for r in records if r.outcome == Outcome.OK]
    errors = [r for r in records if r.outcome == Outcome.ERROR]
    details: dict[str, int] = {}
    for r in errors:
        details[(r.detail or "")[:120]] = details.get((r.detail or "")[:120], 0) + 1

    def ms(x):
        return None if x is None else round(x, 1)

    return {
        "requests": len(records), "ok": len(ok), "errors": len(errors),
        "busy": sum(r.outcome == Outcome.BUSY for r in records),
        "requests_per_s": round(len(ok) / elapsed, 2) if elapsed > 0 else None,
        "latency_ms": {"p50": ms(percentile(ok, 50)), "p95": ms(percentile(ok, 95)), "p99": ms(percentile(ok, 99)),
                       "mean": ms(statistics.fmean(ok)) if ok else None, "max": ms(max(ok, default=None))},
        "error_examples": dict(sorted(details.items(), key=lambda kv: -kv[1])[:5]),
    }


def still_answers(url: str) -> dict:
    """After the run: health, one JSON inspection and one Gradio inspection must all succeed."""
    img = default_images()[0]
    out = {}
    try:
        out["health"] = httpx.get(url.rstrip("/") + "/api/health", timeout=30).json().get("model") == "ready"
    except Exception:
        out["health"] = False
    for t in TARGETS:
        c = CLIENTS[t](url)
        try:
            out[t] = c(img)[0] == Outcome.OK
        finally:
            c.close()
    out["all"] = all(out.values())
    return out


def run_load(url: str, clients: int = 8, duration: float = 60.0, targets: tuple[str, ...] = TARGETS,
             images: list[Path] | None = None, pid: int | None = None, warmup: int = 4) -> dict:
    """``clients`` threads, each with its own connection, send requests back to back for ``duration`` seconds;
    client i uses ``targets[i % len(targets)]``. Returns the report dict."""
    images = images or default_images()
    # Warm up both paths (first Gradio call, thread-pool start, allocator) so "before" is a settled baseline
    for t in targets:
        c = CLIENTS[t](url)
        try:
            for i in range(warmup):
                c(images[i % len(images)])
        finally:
            c.close()
    rss_before = rss_mb(pid)
    records: list[Record] = []
    lock = threading.Lock()
    t_start, t_end = [0.0], [0.0]

    def start_clock():  # runs once, before any client is released: every client sees the same deadline
        t_start[0] = time.monotonic()
        t_end[0] = t_start[0] + duration

    start_barrier = threading.Barrier(clients + 1, action=start_clock)

    def worker(i: int):
        target = targets[i % len(targets)]
        try:
            c = CLIENTS[target](url)
        except Exception as exc:
            start_barrier.wait()
            with lock:
                records.append(Record(target, time.monotonic(), 0.0, Outcome.ERROR, f"client setup: {exc}"))
            return
        start_barrier.wait()
        k = i
        try:
            while time.monotonic() < t_end[0]:
                img = images[k % len(images)]
                k += clients
                t0 = time.monotonic()
                outcome, detail = c(img)
                rec = Record(target, t0, time.monotonic() - t0, outcome, detail)
                with lock:
                    records.append(rec)
                if outcome == Outcome.BUSY:
                    time.sleep(0.2)  # what a polite client does with a busy answer
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    with Sampler(pid) as sampler:
        start_barrier.wait()  # the clock starts when every client has connected
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t_start[0]
    rss_after = rss_mb(pid)
    report = {
        "mode": "load", "url": url, "clients": clients, "duration_s": duration, "elapsed_s": round(elapsed, 2),
        "targets": list(targets), **summarize(records, elapsed),
        "per_target": {t: summarize([r for r in records if r.target == t], elapsed) for t in targets},
        "server_rss_mb": {"before": _r(rss_before), "after": _r(rss_after), "peak": sampler.peak,
                          "growth": _r(None if rss_before is None or rss_after is None else rss_after - rss_before)},
    }
    report["server_answers_afterwards"] = still_answers(url)
    return report


def run_soak(url: str, n: int = 1000, targets: tuple[str, ...] = TARGETS, images: list[Path] | None = None,
             pid: int | None = None, every: int = 50, warmup: int = 20) -> dict:
    """``n`` sequential requests (alternating ``targets``) after ``warmup`` ones; RSS is read every ``every``
    requests. Growth = RSS after the last request - RSS after the warm-up."""
    images = images or default_images()
    cs = {t: CLIENTS[t](url) for t in targets}
    try:
        for i in range(warmup):
            cs[targets[i % len(targets)]](images[i % len(images)])
        rss_start = rss_mb(pid)
        series = [(0, _r(rss_start))]
        records = []
        t0 = time.monotonic()
        for i in range(n):
            t = targets[i % len(targets)]
            s = time.monotonic()
            outcome, detail = cs[t](images[i % len(images)])
            records.append(Record(t, s, time.monotonic() - s, outcome, detail))
            if (i + 1) % every == 0:
                series.append((i + 1, _r(rss_mb(pid))))
        elapsed = time.monotonic() - t0
    finally:
        for c in cs.values():
            c.close()
    rss_end = rss_mb(pid)
    growth = None if rss_start is None or rss_end is None else rss_end - rss_start
    # growth over the second half only: tells a steady leak from a one-off allocation early in the run
    half = [m for k, m in series if k >= n // 2 and m is not None]
    return {
        "mode": "soak", "url": url, "requests_planned": n, "warmup": warmup, "targets": list(targets),
        "elapsed_s": round(elapsed, 2), **summarize(records, elapsed),
        "server_rss_mb": {"start": _r(rss_start), "end": _r(rss_end), "growth": _r(growth),
                          "growth_second_half": _r(half[-1] - half[0]) if len(half) >= 2 else None,
                          "series": series},
        "server_answers_afterwards": still_answers(url),
    }


def _r(x):
    return None if x is None else round(float(x), 1)


def environment(checkpoint: str | None) -> dict:
    """What the numbers were measured on."""
    import psutil

    env = {"python": platform.python_version(), "platform": platform.platform(),
           "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
           "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
           "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                           text=True, timeout=10).stdout.strip()
    except Exception:
        pass
    ck = Path(checkpoint) if checkpoint else REPO / "final_best_model.pt"
    if ck.is_file():
        from inspectkit.inference.fast import sha256_file

        env["model"] = {"file": ck.name, "sha256": sha256_file(ck)}
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="an already-running server (default: start `python app.py` on a free port)")
    ap.add_argument("--pid", type=int, help="the running server's process id, to report its memory (with --url)")
    ap.add_argument("--checkpoint", help="model for the started server (default: the committed final_best_model.pt)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    ap.add_argument("--targets", default="api,gradio", help="comma list of api,gradio (default both)")
    ap.add_argument("--soak", type=int, metavar="N", help="instead of the load run: N sequential requests")
    ap.add_argument("--images", type=Path, help="folder of images to send (default examples/)")
    ap.add_argument("--json", type=Path, help="write the report here as JSON")
    ap.add_argument("--server-log", type=Path, help="with a started server: write its output here")
    ap.add_argument("--server-python", help="interpreter for the started server (default this one); e.g. the lean "
                    "install's: python3 -m venv /tmp/lean && /tmp/lean/bin/pip install -r requirements.txt")
    args = ap.parse_args(argv)
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    if not targets or any(t not in TARGETS for t in targets):
        ap.error(f"--targets must be a comma list of {TARGETS}")
    images = None
    if args.images:
        images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))

    def go(url, pid):
        if args.soak:
            return run_soak(url, args.soak, targets, images, pid)
        return run_load(url, args.clients, args.duration, targets, images, pid)

    env = environment(args.checkpoint)
    if args.url:
        wait_ready(args.url)
        report = go(args.url, args.pid)
    else:
        with app_server(args.checkpoint, log_path=args.server_log, python=args.server_python) as (url, pid):
            report = go(url, pid)
        report["server"] = "python app.py (subprocess, 127.0.0.1)"
        if args.server_python:
            report["server_python"] = args.server_python
            report["server_has_torch"] = subprocess.run(
                [args.server_python, "-c", "import importlib.util as u; print(u.find_spec('torch') is not None)"],
                capture_output=True, text=True, timeout=60).stdout.strip() == "True"
    report["environment"] = env
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0 if report["errors"] == 0 and report["server_answers_afterwards"]["all"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
