"""Make docs/screenshot.png: `python app.py` on the committed model, the eight examples dropped on the Inspect tab.

    .venv/bin/python docs/make_screenshot.py [--out docs/screenshot.png] [--chromium /usr/bin/chromium]

Starts the real app on a free loopback port, drives Debian's Chromium through Playwright, and stops the app.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run", "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with status {proc.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"app.py did not answer at {url} within {timeout:.0f} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "docs" / "screenshot.png"))
    p.add_argument("--chromium", default="/usr/bin/chromium")
    a = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    examples = sorted((REPO / "examples").glob("*.jpeg"))
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_http(url, proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=a.chromium, headless=True, args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url, wait_until="domcontentloaded")
                page.locator("#model-status").get_by_text("Model ready").wait_for(timeout=120_000)
                page.set_input_files("#batch-files input[type=file]", [str(e) for e in examples])
                page.wait_for_function(f"document.querySelectorAll('#gallery img').length === {len(examples)}",
                                       timeout=180_000)
                page.locator("#overlay img").wait_for(state="visible", timeout=30_000)
                page.screenshot(path=a.out, full_page=True)
            finally:
                browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"wrote {a.out} ({len(examples)} examples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
