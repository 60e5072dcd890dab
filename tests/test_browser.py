"""A real browser on the real server: headless Chromium (Debian's, driven by Playwright) uploads two casting photos
through the page's file input and must see two overlays and two verdicts. Keeps a screenshot in test-artifacts/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app_server import EXAMPLES, REPO, running_server

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(),
                                reason=f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def page_url(tiny_checkpoint):
    from inference_handler import InferenceHandler

    with running_server(InferenceHandler(str(tiny_checkpoint), backend="torch")) as url:
        yield url


def test_upload_two_images_shows_two_overlays_and_two_verdicts(page_url):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    photos = [next(p for p in EXAMPLES if "def" in p.name), next(p for p in EXAMPLES if "ok" in p.name)]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(page_url, wait_until="domcontentloaded")
            page.wait_for_selector("#batch-files input[type=file]", state="attached", timeout=60_000)
            page.locator("#model-status").get_by_text("Model ready").wait_for(timeout=60_000)
            page.set_input_files("#batch-files input[type=file]", [str(p) for p in photos])

            page.wait_for_function("document.querySelectorAll('#gallery img').length === 2", timeout=120_000)
            captions = page.locator("#gallery").inner_text()
            for p in photos:
                assert re.search(re.escape(p.name) + r" \u2014 (OK|DEFECT) \(p=0\.\d{3}\)", captions), captions
            table = page.locator("#results").inner_text()  # the results table: file, then its verdict
            verdicts = [re.search(re.escape(p.name) + r"\s+(OK|DEFECT)\s", table) for p in photos]
            assert all(verdicts), table
            for panel in ("#original img", "#overlay img"):  # images arrive a moment after the table
                page.locator(panel).wait_for(state="visible", timeout=30_000)
            assert page.locator("#badge .badge").inner_text().strip() in ("OK", "DEFECT")
            assert "2 images" in page.locator("#summary").inner_text()
            page.screenshot(path=str(ARTIFACTS / "browser_inspect.png"), full_page=True)
        finally:
            browser.close()
