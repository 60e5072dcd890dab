"""The Adapt tab in a real browser on the real server (headless Debian Chromium through Playwright), with a tiny
adaptation budget: drop labelled photos per class, see the current model's score, adapt, see before and after,
download the checkpoint and its .sha256, switch the session to it, and inspect with it while another session
keeps the default model. Keeps a screenshot in test-artifacts/."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from inspectkit.ui.adapt.intake import HELD_OUT_MIN
from tests.app_server import REPO, running_server
from tests.support import write_images

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
TINY_ENV = {"INSPECT_ADAPT_VIEWS": "1", "INSPECT_ADAPT_STAGE1_EPOCHS": "1", "INSPECT_ADAPT_STAGE2_EPOCHS": "1",
            "INSPECT_ADAPT_REPLAY": "none", "INSPECT_ADAPT_THREADS": "1", "INSPECT_ADAPT_BACKEND": "torch"}

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.is_file(),
                                 reason=f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")]


@pytest.fixture(scope="module")
def served(tiny_checkpoint, tmp_path_factory):
    """(url, the shared handler, HELD_OUT_MIN defect photos and as many OK photos) on a server built with the tiny budget."""
    import torch

    from inspectkit.inference.handler import InferenceHandler
    from inspectkit.ui.adapt import intake
    from inspectkit.ui.common import session_models

    photos = tmp_path_factory.mktemp("line_b")
    r = np.random.default_rng(11)
    defs = write_images(photos / "def", r, HELD_OUT_MIN, True, prefix="b_def")  # the fewest that hold some out
    oks = write_images(photos / "ok", r, HELD_OUT_MIN, False, prefix="b_ok")
    threads = torch.get_num_threads()
    handler = InferenceHandler(str(tiny_checkpoint), backend="torch")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in TINY_ENV.items():
            mp.setenv(k, v)
        mp.setattr(intake, "WORK_DIR", tmp_path_factory.mktemp("adapt-work"))
        with running_server(handler) as url:
            yield url, handler, defs, oks
    session_models._MODELS.clear()
    torch.set_num_threads(threads)


def caption_p(page, name: str) -> float:
    page.wait_for_function("document.querySelectorAll('#gallery img').length === 1", timeout=120_000)
    text = page.locator("#gallery").inner_text()
    m = re.search(re.escape(name) + r" \u2014 (?:OK|DEFECT) \(p=(0\.\d{3}|1\.000)\)", text)
    assert m, text
    return float(m.group(1))


def test_adapt_tab_score_adapt_download_switch(served, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    from inspectkit.inference.handler import InferenceHandler

    url, handler, defs, oks = served
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#model-status").get_by_text("Model ready").wait_for(timeout=60_000)
            page.get_by_role("tab", name="Adapt").click()
            intro = page.locator("#adapt-intro").inner_text()
            assert "at most 500 photos" in intro and "One adaptation at a time" in intro
            assert "several photos of one part" in intro  # held out by near-duplicate photos, not by part
            assert "1 view per photo" in intro  # the budget the server was started with
            # the drop zones are named after the model's classes once it is loaded
            page.locator("#adapt-zone-0").get_by_text("Photos of class def_front").wait_for(timeout=60_000)
            for zone, files in (("#adapt-zone-0", defs), ("#adapt-zone-1", oks)):
                page.set_input_files(f"{zone} input[type=file]", [str(p) for p in files])
                # uploaded: each file is listed in the zone
                page.locator(f'{zone} td.filename[aria-label="{files[-1].name}"]').wait_for(state="attached",
                                                                                           timeout=60_000)
                assert page.locator(f"{zone} td.filename").count() == len(files)

            page.click("#adapt-score-btn")
            score = page.locator("#adapt-score")
            score.get_by_text("The current model on these photos").wait_for(timeout=120_000)
            assert f"{2 * HELD_OUT_MIN} photos (def_front: {HELD_OUT_MIN}, ok_front: {HELD_OUT_MIN})" in score.inner_text()

            page.click("#adapt-run-btn")
            results = page.locator("#adapt-results")
            results.get_by_text("After: the adapted model").wait_for(timeout=300_000)
            text = results.inner_text()
            assert "Before: the current model" in text and "Held-out" in text and "missed defects" in text
            assert page.locator("#adapt-results table.cm").count() == 2

            # download both files; the .sha256 must be the checkpoint's
            got = {}
            for suffix in (".pt.sha256", ".pt"):
                with page.expect_download(timeout=60_000) as dl:
                    page.locator(f'#adapt-download a[download$="{suffix}"]').click()
                path = tmp_path / dl.value.suggested_filename
                dl.value.save_as(path)
                got[suffix] = path
            digest = got[".pt.sha256"].read_text().split()[0]
            assert hashlib.sha256(got[".pt"].read_bytes()).hexdigest() == digest
            adapted = InferenceHandler(str(got[".pt"]), backend="torch", expected_sha256=digest)

            page.click("#adapt-use-btn")
            page.locator("#adapt-session").get_by_text("adapted model").wait_for(timeout=60_000)
            assert "This session: adapted model" in page.locator("#model-status").inner_text()
            page.screenshot(path=str(ARTIFACTS / "browser_adapt.png"), full_page=True)

            # this session now inspects with the adapted model...
            page.get_by_role("tab", name="Inspect").click()
            page.set_input_files("#batch-files input[type=file]", [str(defs[0])])
            p_mine = caption_p(page, defs[0].name)
            assert p_mine == pytest.approx(adapted.predict(str(defs[0]), heatmap=False).defect_probability, abs=1e-3)

            # ...while a new session gets the default model
            other = browser.new_page(viewport={"width": 1400, "height": 1000})
            other.goto(url, wait_until="domcontentloaded")
            other.locator("#model-status").get_by_text("Model ready").wait_for(timeout=60_000)
            assert "This session" not in other.locator("#model-status").inner_text()
            other.set_input_files("#batch-files input[type=file]", [str(defs[0])])
            p_theirs = caption_p(other, defs[0].name)
            assert p_theirs == pytest.approx(handler.predict(str(defs[0]), heatmap=False).defect_probability,
                                             abs=1e-3)
        finally:
            browser.close()
