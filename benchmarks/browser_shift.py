"""In Chromium, drop N photos at once on the Shift tab and time until every one has a verdict on the page (issue 16).

    python -m benchmarks.browser_shift --counts 100,1000 --json reports/browser_shift.json
    python -m benchmarks.browser_shift --counts 10                    # a quick look

Starts ``python app.py`` (committed model) on a free 127.0.0.1 port, opens the page in headless Chromium (Debian's,
driven by Playwright), and for each count: copies that many casting photos (real ones from --data, cycled with
distinct names when there are fewer) into a folder, sets them on the Shift tab's file input at once, presses
Inspect, and waits until the progress line reads "N / N ... done" and the summary counts N photos. Reported per
count: seconds from the drop to the last verdict on the page (the upload included), photos per second, the
gallery's size, the summary's counts line (UNUSABLE included) and its drift line ("No drift over N photos", or
the DRIFT ALARM). Goal: 100 photos within 90 s.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def photos_for(n: int, data: Path, dest: Path) -> list[Path]:
    """n photo files in dest with distinct names, cycling through the real photos under data (or examples/)."""
    from inspectkit.batch.job import collect_inputs

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

    work = Path(tempfile.mkdtemp(prefix="browser-shift-"))
    results = []
    with app_server(args.checkpoint) as (url, _pid), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            for n in counts:
                files = photos_for(n, args.data, work / str(n))
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url, wait_until="domcontentloaded")
                page.locator("#model-status").get_by_text("Model ready").wait_for(timeout=120_000)
                page.get_by_role("tab", name="Shift").click()
                page.wait_for_selector("#shift-files input[type=file]", state="attached", timeout=60_000)
                t0 = time.perf_counter()
                page.set_input_files("#shift-files input[type=file]", [str(p) for p in files])
                # the button is enabled once every file is uploaded; the click queues the job
                page.locator("#shift-inspect").click()
                done = f"{n:,} / {n:,}"
                page.wait_for_function(
                    "([done]) => { const e = document.querySelector('#shift-progress');"
                    " return e && e.innerText.includes(done) && e.innerText.includes('done in'); }",
                    arg=[done], timeout=args.timeout * 1000)
                seconds = time.perf_counter() - t0
                summary = page.locator("#shift-summary .summary").inner_text()  # the counts line
                drift = page.locator("#shift-summary .drift")  # the drift monitor's line above it
                drift = drift.inner_text() if drift.count() else ""
                counted = re.search(r"([\d,]+) photos?", summary)
                gallery = page.locator("#shift-gallery img").count()
                results.append({"photos": n, "seconds_to_last_verdict": round(seconds, 1),
                                "photos_per_s": round(n / seconds, 2), "gallery_images": gallery,
                                "summary": " ".join(summary.split()), "drift": " ".join(drift.split()),
                                "all_counted": bool(counted) and int(counted.group(1).replace(",", "")) == n})
                print(json.dumps(results[-1]), flush=True)
                page.close()
        finally:
            browser.close()
            shutil.rmtree(work, ignore_errors=True)
    report = {"url": "python app.py on 127.0.0.1", "results": results,
              "goal_100_within_90s": next((r["seconds_to_last_verdict"] <= 90 and r["all_counted"]
                                           for r in results if r["photos"] == 100), None)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
