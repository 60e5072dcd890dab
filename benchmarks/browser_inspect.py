"""In Chromium, drop N photos at once on the first tab (Inspect) and time until every one has a verdict on the page.

    python -m benchmarks.browser_inspect --counts 100,1000 --json reports/browser_inspect.json
    python -m benchmarks.browser_inspect --counts 10                    # a quick look

Starts ``python app.py`` (committed model) on a free 127.0.0.1 port, opens the page in headless Chromium (Debian's,
driven by Playwright), and for each count: copies that many casting photos (real ones from --data, cycled with
distinct names when there are fewer) into a folder and sets them on the Inspect tab's file input at once, as a drop
does (the drop itself starts the inspection), then waits until the progress line reads "N / N ... done" and the
summary counts N photos. Reported per count: seconds from the drop to the last verdict on the page (the upload
included), photos per second, the gallery's size, the summary's counts line (UNUSABLE included) and its drift line
("No drift over N photos", or the DRIFT ALARM). Goals: 100 photos within 15 s, 1,000 within 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
#: photos -> seconds from the drop to the last verdict on the page
GOALS = {100: 15.0, 1000: 60.0}


def photos_for(n: int, data: Path, dest: Path) -> list[Path]:
    """n photo files in dest with distinct names, cycling through the real photos under data (or examples/)."""
    from inspectkit.batch.inputs import collect_inputs

    src = collect_inputs([str(data)]) if data.is_dir() else []
    if not src:
        src = [str(p) for p in sorted((REPO / "examples").glob("*.jpeg"))]
    src = src[:: max(1, len(src) // n)]  # spread over the folders: defects and OK parts both
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        s = Path(src[i % len(src)])
        p = dest / f"{i:05d}_{s.name}"
        shutil.copyfile(s, p)
        out.append(p)
    return out


def drop_and_wait(page, files: list[Path], timeout_s: float) -> dict:
    """Drop ``files`` on the Inspect tab and wait for the last verdict; what the page then says."""
    n = len(files)
    page.wait_for_selector("#batch-files input[type=file]", state="attached", timeout=60_000)
    load = os.getloadavg()[0]  # the cores are shared: say how busy they were
    t0 = time.perf_counter()
    page.set_input_files("#batch-files input[type=file]", [str(p) for p in files])
    done = f"{n:,} / {n:,}"
    page.wait_for_function(
        "([done]) => { const e = document.querySelector('#progress');"
        " return e && e.innerText.includes(done) && e.innerText.includes('done in'); }",
        arg=[done], timeout=timeout_s * 1000)
    seconds = time.perf_counter() - t0
    summary = page.locator("#summary .summary").inner_text()  # the counts line
    drift = page.locator("#summary .drift")  # the drift monitor's line above it
    drift = drift.inner_text() if drift.count() else ""
    counted = re.search(r"([\d,]+) photos?", summary)
    return {"photos": n, "seconds_to_last_verdict": round(seconds, 1), "photos_per_s": round(n / seconds, 2),
            "gallery_images": page.locator("#gallery img").count(), "summary": " ".join(summary.split()),
            "drift": " ".join(drift.split()),
            "all_counted": bool(counted) and int(counted.group(1).replace(",", "")) == n,
            "errors_on_page": page.get_by_text("Error", exact=True).count(), "load_average_1min_at_drop": round(load, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default="100,1000", help="comma list of photo counts (default 100,1000)")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "casting" / "test")
    ap.add_argument("--checkpoint", default=None, help="model for the server (default: the committed one)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="longest wait per count, seconds")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",") if c.strip()]
    if not CHROMIUM.is_file():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    from benchmarks.loadtest import app_server

    work = Path(tempfile.mkdtemp(prefix="browser-inspect-"))
    results = []
    with app_server(args.checkpoint) as (url, _pid), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            for n in counts:
                files = photos_for(n, args.data, work / str(n))
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url, wait_until="domcontentloaded")
                page.locator("#model-status").get_by_text("Model ready").wait_for(timeout=120_000)
                results.append(drop_and_wait(page, files, args.timeout))
                print(json.dumps(results[-1]), flush=True)
                page.close()
        finally:
            browser.close()
            shutil.rmtree(work, ignore_errors=True)
    goals = {f"{n}_within_{s:.0f}s": next((r["seconds_to_last_verdict"] <= s and r["all_counted"]
                                            and not r["errors_on_page"] for r in results if r["photos"] == n), None)
             for n, s in GOALS.items()}
    report = {"url": "python app.py on 127.0.0.1", "tab": "Inspect (the first tab)", "results": results,
              "goals": goals}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
