"""Casting inspection: the Gradio app (a Hugging Face Space). Run ``python app.py`` and open http://localhost:7860.

Drop photos of cast pump impellers (top view), one or thousands, and get OK, DEFECT or UNUSABLE for each, the defect
probability, a Grad-CAM heat map over the photo and the time each stage took. The same server answers
``POST /api/inspect`` (JSON; see /docs) and the Gradio API (``gradio_client``, endpoints ``/predict`` and
``/predict_batch``). The Adapt tab adapts the model to a new line from labelled photos (or loads an uploaded
checkpoint) and switches the browser session to it; other sessions and the APIs keep the default model.

:func:`build_demo` composes the page from one module per tab, each holding its layout and one-line callbacks:
:mod:`inspectkit.ui.inspect_tab`, :mod:`inspectkit.ui.adapt.layout`, :mod:`inspectkit.ui.model_tab` and
:mod:`inspectkit.ui.api_tab`; what the callbacks call lives in ``inspectkit/ui/common`` and ``inspectkit/ui/adapt``
(docs/architecture.md maps every module). Importing it loads no model and no torch: the model loads in a
background thread once the server is up.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from inspectkit.limits import MAX_UPLOAD_MB
from inspectkit.paths import CHECKOUT
from inspectkit.serve.http_api import serve
from inspectkit.ui import api_tab, inspect_tab, model_tab
from inspectkit.ui.adapt import layout as adapt_tab
from inspectkit.ui.adapt.settings import AdaptSettings
from inspectkit.ui.common.job import MAX_JOB_PHOTOS
from inspectkit.ui.common.page import Page
from inspectkit.ui.common.report_view import initial_status, load_report

ROOT = CHECKOUT  # examples/ and reports/ beside the package
EXAMPLES_DIR = ROOT / "examples"
REPORTS_DIR = ROOT / "reports"
MAX_EXAMPLES = 8
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

BASE_CSS = """
.badge-box {display:flex; align-items:center; gap:14px; padding:10px 4px; min-height:64px}
.badge {font-size:1.6em; font-weight:800; letter-spacing:.04em; padding:6px 22px; border-radius:10px; color:#fff}
.badge.ok {background:#15803d} .badge.defect {background:#b91c1c} .badge.error {background:#6b7280}
.badge.other {background:#1d4ed8}
.badge.unusable {background:#a16207; border:2px dashed #fde68a}
.not-judged {color:#6b7280; font-style:italic} .not-judged b {color:#6b7280}
.guard.off {font-weight:700; color:#92400e}
.badge-text {font-size:1.05em; line-height:1.5; word-break:break-all}
.summary {font-size:1.1em; padding:6px 2px}
.count {font-weight:700} .count.defect {color:#b91c1c} .count.ok {color:#15803d} .count.error {color:#6b7280}
.count.review {color:#b45309} .count.unusable {color:#a16207}
.flag.review {font-size:.9em; font-weight:800; letter-spacing:.04em; padding:4px 10px; border-radius:8px;
  color:#78350f; background:#fde68a; border:1px solid #d97706; white-space:nowrap}
.errors {color:#b91c1c; margin:4px 0 0 0}
.muted {color:#6b7280}
.status {padding:6px 10px; border-radius:8px; font-size:.95em}
.status.loading {background:#fef9c3} .status.ready {background:#dcfce7} .status.failed {background:#fee2e2}
table.latency {border-collapse:collapse; font-size:.9em; margin-top:6px}
table.latency th, table.latency td {border:1px solid #d1d5db; padding:3px 8px; text-align:right}
table.latency caption {text-align:left; font-weight:600; padding-bottom:4px}
"""
#: The page's whole stylesheet: what every tab uses, then each tab's own.
CSS = BASE_CSS + inspect_tab.CSS + adapt_tab.CSS

INTRO = f"""
# Casting inspection
Photos of cast submersible-pump impellers (top view) are classified **OK** or **DEFECT** (porosity, pinholes,
burrs, shrinkage, cracks...), or **UNUSABLE** with the reason when nobody can judge the photo (too dark, overexposed,
out of focus, part not fully in frame, not a casting: a model with a guard). The heat map shows where the network
looked. Drop **one photo or up to {MAX_JOB_PHOTOS:,}**, a folder or zip files (JPEG, PNG, BMP, TIFF or WebP, at most
**{MAX_UPLOAD_MB} MB** per file).
"""


def example_images(folder: Path = EXAMPLES_DIR, limit: int = MAX_EXAMPLES) -> list[str]:
    """The example photos shipped with the app (at most ``limit``), defects first, sorted by name."""
    if not folder.is_dir():
        return []
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: ("def" not in p.name, p.name))
    return [str(p) for p in files[:limit]]


def launch_options() -> dict:
    """Theme and CSS: Gradio 6 takes them at launch/mount time, not in gr.Blocks()."""
    return {"theme": gr.themes.Soft(primary_hue="blue", neutral_hue="slate"), "css": CSS}


def build_demo(handler, reports_dir: str | Path = REPORTS_DIR, examples_dir: str | Path = EXAMPLES_DIR,
               adapt_settings: AdaptSettings | None = None) -> gr.Blocks:
    """The whole UI around ``handler`` (an InferenceHandler, or a LazyHandler that is still loading).

    ``adapt_settings``: the Adapt tab's budget (default: ``AdaptSettings.from_env()``, i.e. the ``INSPECT_ADAPT_*``
    variables). Builds only; nothing is launched and no model call is made.
    """
    report, report_missing = load_report(reports_dir)
    # delete_cache: uploads and results older than 2 h are removed every hour, so a station left running on the
    # line does not fill its disk
    with gr.Blocks(title="Casting inspection", analytics_enabled=False, delete_cache=(3600, 7200)) as demo:
        model = gr.State(None)  # this session's adapted/uploaded model (session_models.pick); None: the shared one
        with gr.Row(equal_height=True):
            gr.Markdown(INTRO)
        status = gr.HTML(initial_status(handler), elem_id="model-status")
        with gr.Tabs(elem_id="tabs") as tabs:
            page = Page(demo=demo, model=model, status=status, tabs=tabs)
            inspect = inspect_tab.build(handler, page, report, example_images(Path(examples_dir)))
            adapt_tab.build(handler, page, adapt_settings or AdaptSettings.from_env(), inspect.send_btn,
                            inspect.session)
            model_tab.build(handler, page, reports_dir, report, report_missing)
            api_tab.build(handler)
    return demo


def main() -> None:
    """Serve the app with the committed model on GRADIO_SERVER_NAME/GRADIO_SERVER_PORT (or PORT), default 0.0.0.0:7860."""
    serve(build_demo, **launch_options())


if __name__ == "__main__":
    main()
