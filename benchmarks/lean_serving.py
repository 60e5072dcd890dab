"""Lean serving (issue 17): measure the goals of the Space installed from requirements.txt, without torch.

    python -m benchmarks.lean_serving --venv /tmp/lean-venv --create       # make the venv, then measure all
    python -m benchmarks.lean_serving --venv /tmp/lean-venv --only size    # size only (no server started)
    python -m benchmarks.lean_serving --venv /tmp/lean-venv --runs 3 --json benchmarks/results/lean_serving.json

Run it from the development venv (it has torch: the reference backend). Goals, each reported with pass/fail:

* size: the venv made from requirements.txt is at most 900 MB installed (``du`` of the whole venv), torch absent;
* start: ``python app.py`` from that venv answers its first successful ``POST /api/inspect?heatmap=true`` at most
  3 s after a bare Gradio app (``gr.Blocks`` + one Markdown, launched from the same venv) answers its page, in the
  same run (alternating, median of ``--runs``);
* memory: the server's RSS after 20 inspections with heat maps is at most 350 MB;
* equality: on the photos (``--data``: a folder; default examples/, or the casting test split when it exists), the
  verdicts of the lean server's JSON API and of the committed graph equal the torch backend's, and the heat maps
  of the committed graph (onnx backend) are within 1e-3 of the torch backend's.
"""

from __future__ import annotations

import argparse
import json
import os
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
GOALS = {"size_mb": 900, "start_over_bare_s": 3.0, "rss_mb": 350, "map_diff": 1e-3}
BARE_APP = '''
import os
import gradio as gr

with gr.Blocks(title="bare") as demo:
    gr.Markdown("bare Gradio app")

demo.launch(server_name="127.0.0.1", server_port=int(os.environ["GRADIO_SERVER_PORT"]))
'''
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_venv(venv: Path) -> None:
    """A fresh venv with requirements.txt, as a Space (or a new user) installs it."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(ROOT / "requirements.txt")], check=True)


def measure_size(venv: Path) -> dict:
    """Installed size of the venv (MB, du -sk) and whether torch/torchvision can be found in it."""
    kb = int(subprocess.run(["du", "-sk", str(venv)], capture_output=True, text=True, check=True).stdout.split()[0])
    probe = ("import importlib.util as u, json; "
             "print(json.dumps({m: u.find_spec(m) is not None for m in ('torch', 'torchvision', 'onnxruntime')}))")
    found = json.loads(subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True,
                                      check=True).stdout)
    mb = kb / 1024
    return {"installed_mb": round(mb, 1), "modules": found,
            "pass": mb <= GOALS["size_mb"] and not found["torch"] and not found["torchvision"]}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _post(url: str, photo: Path) -> tuple[int, dict | None]:
    boundary = "leanservingboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{photo.name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + photo.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "api/inspect?heatmap=true", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, ConnectionError, OSError):
        return 0, None


def _get_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def _env(port: int, cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INSPECT_MODEL", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False",
               INSPECTKIT_CACHE_DIR=str(cache))  # an empty cache: a fresh container has none
    return env


def time_bare(py: Path, tmp: Path) -> float:
    """Seconds from spawning a bare Gradio app to its page answering 200."""
    script = tmp / "bare_app.py"
    script.write_text(BARE_APP)
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(py), str(script)], env=_env(port, tmp / "cache-bare"), cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not _get_ok(f"http://127.0.0.1:{port}/"):
            if proc.poll() is not None or time.perf_counter() - t0 > 120:
                raise RuntimeError("the bare Gradio app did not start")
            time.sleep(0.02)
        return time.perf_counter() - t0
    finally:
        proc.kill()
        proc.wait()


def time_app(py: Path, tmp: Path, photos: list[Path], inspections: int = 20) -> dict:
    """Seconds from ``python app.py`` to the first successful /api/inspect with a heat map, then the RSS after
    ``inspections`` inspections, and the verdicts the API gave."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=tmp))
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(py), str(ROOT / "app.py")], env=_env(port, cache), cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            status, got = _post(url, photos[0])
            if status == 200 and got and got.get("heatmap_png_base64"):
                first = time.perf_counter() - t0
                break
            if proc.poll() is not None or time.perf_counter() - t0 > 300:
                raise RuntimeError(f"the app never answered an inspection (last status {status})")
            time.sleep(0.02)
        verdicts = {}
        for i in range(inspections):
            p = photos[i % len(photos)]
            status, got = _post(url, p)
            if status != 200:
                raise RuntimeError(f"inspection {i} of {p.name} answered {status}")
            verdicts[p.name] = got["verdict"]
        return {"first_inspection_s": first, "rss_mb": _rss_mb(proc.pid), "verdicts": verdicts}
    finally:
        proc.kill()
        proc.wait()


def photos_of(data: Path | None) -> list[Path]:
    """The photos to compare on: ``data`` (a folder, searched recursively), else the casting test split when it is
    there, else examples/."""
    if data is None:
        casting = ROOT.parent / "shared" / "data" / "casting" / "test"
        data = casting if casting.is_dir() else ROOT / "examples"
    return sorted(p for p in Path(data).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def equality(photos: list[Path], checkpoint: Path) -> dict:
    """The committed graph (onnx backend) against the torch backend: verdicts and heat maps, per photo."""
    import numpy as np

    from inspectkit.inference.handler import InferenceHandler

    onnx = InferenceHandler(checkpoint, backend="onnx", cache_dir=tempfile.mkdtemp())
    assert onnx._fast.timings["source"] == "committed", "no committed graph beside the checkpoint"
    ref = InferenceHandler(checkpoint, backend="torch")
    worst, disagree, verdicts = 0.0, [], {}
    for start in range(0, len(photos), 32):
        chunk = [str(p) for p in photos[start:start + 32]]
        for a, b in zip(onnx.predict_batch(chunk), ref.predict_batch(chunk)):
            worst = max(worst, float(np.abs(a.heatmap - b.heatmap).max()))
            verdicts[a.name] = b.verdict
            if a.verdict != b.verdict:
                disagree.append(a.name)
    return {"photos": len(photos), "max_map_diff": worst, "verdict_disagreements": disagree,
            "torch_verdicts": verdicts, "pass": worst <= GOALS["map_diff"] and not disagree}


def main(argv: list[str] | None = None) -> int:
    """Command line: measure, print and optionally save the figures; exit 1 when a goal is missed."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--venv", required=True, type=Path, help="the venv made from requirements.txt")
    p.add_argument("--create", action="store_true", help="create it first (python -m venv + pip install -r)")
    p.add_argument("--only", choices=["size", "start", "equality"], help="measure one goal only")
    p.add_argument("--runs", type=int, default=3, help="start-up runs of each app (median)")
    p.add_argument("--data", type=Path, default=None, help="photos for the equality check")
    p.add_argument("--checkpoint", type=Path, default=ROOT / "final_best_model.pt")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = p.parse_args(argv)
    if a.create:
        create_venv(a.venv)
    py = a.venv / "bin" / "python"
    out: dict = {"goals": GOALS}
    if a.only in (None, "size"):
        out["size"] = measure_size(a.venv)
    photos = photos_of(a.data)
    if a.only in (None, "equality"):
        out["equality"] = equality(photos, a.checkpoint)
    if a.only in (None, "start"):
        with tempfile.TemporaryDirectory() as tmp:
            bare, app, rss, verdicts = [], [], [], {}
            for _ in range(a.runs):  # alternating: both see the same machine load and disk cache
                bare.append(time_bare(py, Path(tmp)))
                r = time_app(py, Path(tmp), photos[:20])
                app.append(r["first_inspection_s"])
                rss.append(r["rss_mb"])
                verdicts = r["verdicts"]
        b, s = statistics.median(bare), statistics.median(app)
        out["start"] = {"bare_page_s": [round(x, 2) for x in bare],
                        "app_first_inspection_s": [round(x, 2) for x in app],
                        "median_bare_s": round(b, 2), "median_app_s": round(s, 2), "over_bare_s": round(s - b, 2),
                        "rss_after_20_mb": [round(x, 1) for x in rss],
                        "pass": s - b <= GOALS["start_over_bare_s"] and max(rss) <= GOALS["rss_mb"]}
        if "equality" in out:
            ref = out["equality"]["torch_verdicts"]
            out["start"]["api_verdicts_equal_torch"] = all(ref.get(k) == v for k, v in verdicts.items())
    if "equality" in out:
        out["equality"].pop("torch_verdicts")
    print(json.dumps(out, indent=1))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0 if all(v.get("pass", True) for v in out.values() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    sys.exit(main())
