"""A real browser on the real server: headless Chromium (Debian's, driven by Playwright) uploads two casting photos
through the Inspect tab's file input and must see two overlays and two verdicts; a drop of more photos than one
chunk (MAX_BATCH) on the same tab must give every photo a verdict, lead the gallery with the defects and show a
clicked photo large; the heat map's colour bar, the display names and the Model tab's score distribution must be on
the page; a blank white frame dropped on a model with a guard must show UNUSABLE (its own badge colour, the reason,
the count, the table). Keeps screenshots in test-artifacts/."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np
import pytest

from inspectkit.limits import MAX_BATCH
from tests.app_server import EXAMPLES, REPO, running_server
from tests.support import write_images

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.is_file(),
                                 reason=f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")]


@pytest.fixture(scope="module")
def named_checkpoint(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint with what a calibrated one carries: a heat-map scale, a validation score histogram and
    display names (the numbers are made up: the page is under test here, not the calibration)."""
    import numpy as np

    from inspectkit.heatmap.scale import score_histogram
    from inspectkit.inference.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint)
    ckpt["heatmap_scale"] = {"value": 12.0, "threshold": 4.0, "map": "defect-evidence", "source": "validation",
                             "layer": "features.18", "validation_defects_called": 20, "validation_ok_called": 20}
    rng = np.random.default_rng(0)
    y = np.array([0] * 20 + [1] * 20)
    ckpt["metrics"] = {**ckpt["metrics"], "validation_score_histogram": score_histogram(
        y, np.where(y == 0, rng.uniform(0.7, 1.0, 40), rng.uniform(0.0, 0.3, 40)), ["def_front", "ok_front"])}
    ckpt["display_names"] = {"def_front": "Porosity defect", "ok_front": "Good casting"}
    path = tmp_path_factory.mktemp("named") / "named.pt"
    save_checkpoint(ckpt, path)
    return path


@pytest.fixture(scope="module")
def page_url(named_checkpoint):
    from inspectkit.inference.handler import InferenceHandler

    with running_server(InferenceHandler(str(named_checkpoint), backend="torch")) as url:
        yield url


@pytest.fixture(scope="module")
def guarded_url(guarded_checkpoint):
    """A server on the tiny checkpoint with a guard fitted on generated castings (conftest.guarded_checkpoint)."""
    from inspectkit.inference.handler import InferenceHandler

    with running_server(InferenceHandler(str(guarded_checkpoint), backend="torch")) as url:
        yield url


@contextlib.contextmanager
def open_page(url: str):
    """A fresh headless Chromium page on ``url``, once the page says the model is ready; closed afterwards."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#model-status").get_by_text("Model ready").wait_for(timeout=60_000)
            yield page
        finally:
            browser.close()


def test_upload_two_images_shows_two_overlays_and_two_verdicts(page_url):
    photos = [next(p for p in EXAMPLES if "def" in p.name), next(p for p in EXAMPLES if "ok" in p.name)]
    with open_page(page_url) as page:
        page.wait_for_selector("#batch-files input[type=file]", state="attached", timeout=60_000)
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
        assert "2 photos" in page.locator("#summary").inner_text()
        assert "2 / 2" in page.locator("#progress").inner_text()
        page.screenshot(path=str(ARTIFACTS / "browser_inspect.png"), full_page=True)


def test_a_drop_larger_than_one_chunk_gets_a_verdict_for_every_photo(page_url, tmp_path):
    n = MAX_BATCH + 8
    r = np.random.default_rng(3)
    photos = (write_images(tmp_path / "def", r, 10, True, prefix="def_part")
              + write_images(tmp_path / "ok", r, n - 10, False, prefix="ok_part"))
    with open_page(page_url) as page:
        page.wait_for_selector("#batch-files input[type=file]", state="attached", timeout=60_000)
        page.set_input_files("#batch-files input[type=file]", [str(p) for p in photos])
        page.wait_for_function(
            "([n]) => { const e = document.querySelector('#progress');"
            " return e && e.innerText.includes(`${n} / ${n}`) && e.innerText.includes('done in'); }",
            arg=[n], timeout=180_000)
        page.wait_for_function(f"document.querySelectorAll('#gallery img').length === {n}", timeout=60_000)
        summary = page.locator("#summary").inner_text()
        counts = {v: int(k) for k, v in re.findall(r"(\d+) (DEFECT|OK)\b", summary)}
        assert f"{n} photos" in summary and counts["DEFECT"] + counts["OK"] == n, summary
        # every photo has a verdict in the gallery, defects (and needs-review photos) first
        captions = page.locator("#gallery").inner_text()
        found = dict(re.findall(r"((?:def|ok)_part_\d{3}\.jpg) \u2014 (OK|DEFECT) \(p=", captions))
        assert set(found) == {p.name for p in photos}, captions
        order = re.findall(r" \u2014 (OK|DEFECT) \(p=[\d.]+\)(, needs review)?", captions)
        rank = [0 if v == "DEFECT" else 1 if review else 2 for v, review in order]
        assert rank == sorted(rank) and len(rank) == n
        # no pane of the page shows an error: the drop is not refused for its size
        assert page.get_by_text("Error", exact=True).count() == 0
        # a click in the gallery shows that photo large
        item = page.locator("#gallery .thumbnail-item").nth(n - 1)
        name = item.inner_text().split(" \u2014 ")[0].strip()
        assert name in found and name not in page.locator("#badge").inner_text()
        item.click()
        page.locator("#badge").get_by_text(name).wait_for(timeout=30_000)
        assert page.locator("#badge .badge").inner_text().strip() in ("OK", "DEFECT")
        page.locator("#overlay img").wait_for(state="visible", timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "browser_inspect_many.png"), full_page=True)


def test_colour_bar_display_names_and_score_distribution_on_the_page(page_url):
    photo = next(p for p in EXAMPLES if "def" in p.name)
    with open_page(page_url) as page:
        # the colour bar says what the colours mean, on this model's fixed scale
        legend = page.locator("#heat-legend")
        legend.get_by_text("fixed scale").wait_for(timeout=60_000)
        text = legend.inner_text()
        assert "no defect evidence" in text and "typical defect" in text and "0.5" in text
        bar = legend.locator(".heat-bar")
        assert "linear-gradient" in bar.evaluate("e => getComputedStyle(e).backgroundImage")
        assert bar.bounding_box()["width"] > 100
        page.set_input_files("#batch-files input[type=file]", [str(photo)])
        page.wait_for_function("document.querySelectorAll('#gallery img').length === 1", timeout=120_000)
        page.locator("#overlay img").wait_for(state="visible", timeout=30_000)
        # display names beside the raw class names: badge, class probabilities, results table
        badge = page.locator("#badge").inner_text()
        assert "Porosity defect (def_front)" in badge or "Good casting (ok_front)" in badge, badge
        assert "Porosity defect (def_front)" in page.locator("#probabilities").inner_text()
        assert re.search(r"(Porosity defect \(def_front\)|Good casting \(ok_front\))",
                         page.locator("#results").inner_text())
        page.screenshot(path=str(ARTIFACTS / "browser_heat_legend.png"), full_page=True)
        # the per-image normalised class CAM is a choice, named as such; the colour bar follows it
        page.locator("#heatmap-mode").get_by_text("Per-image normalised class CAM").click()
        legend.get_by_text("per-image normalised class CAM").wait_for(timeout=60_000)
        assert "cannot be compared" in legend.inner_text()
        # the Model tab: validation scores per class with the threshold and the needs-review band
        page.get_by_role("tab", name="Model").click()
        dist = page.locator("#score-distribution")
        dist.locator("svg").wait_for(state="visible", timeout=60_000)
        assert dist.locator("line.threshold").count() == 1 and dist.locator("rect.review-band").count() == 1
        assert dist.locator("rect.bar[data-class='def_front']").count() > 0
        assert dist.locator("rect.bar[data-class='ok_front']").count() > 0
        assert "Porosity defect" in dist.inner_text() and "Good casting" in dist.inner_text()
        page.screenshot(path=str(ARTIFACTS / "browser_score_distribution.png"), full_page=True)


def test_a_blank_white_photo_shows_unusable_on_the_page(guarded_url, tmp_path):
    import numpy as np
    from PIL import Image

    blank = tmp_path / "blank_white.png"
    Image.fromarray(np.full((300, 300, 3), 255, np.uint8)).save(blank)
    with open_page(guarded_url) as page:
        page.locator("#model-status").get_by_text("guard on").wait_for(timeout=60_000)
        page.wait_for_selector("#batch-files input[type=file]", state="attached", timeout=60_000)
        page.set_input_files("#batch-files input[type=file]", [str(blank)])
        page.wait_for_function("document.querySelectorAll('#gallery img').length === 1", timeout=120_000)
        page.locator("#overlay img").wait_for(state="visible", timeout=30_000)
        badge = page.locator("#badge .badge")
        text = badge.inner_text().strip()
        assert re.fullmatch(r"UNUSABLE \u2014 (overexposed|not a casting)", text), text
        assert "unusable" in (badge.get_attribute("class") or "")
        colour = badge.evaluate("e => getComputedStyle(e).backgroundColor")
        assert colour not in ("rgb(21, 128, 61)", "rgb(185, 28, 28)"), colour  # neither OK green nor DEFECT red
        # the network's probability is still on the page, marked as no verdict
        assert "not judged" in page.locator("#badge").inner_text().lower()
        assert "1 UNUSABLE" in page.locator("#summary").inner_text()
        assert re.search(r"blank_white\.png\s+UNUSABLE\s", page.locator("#results").inner_text())
        assert "UNUSABLE" in page.locator("#gallery").inner_text()
        assert "UNUSABLE" in page.locator("#label-next").inner_text()
        page.screenshot(path=str(ARTIFACTS / "browser_unusable.png"), full_page=True)
