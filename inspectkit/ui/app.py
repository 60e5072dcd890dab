"""Casting inspection: the Gradio app (a Hugging Face Space). Run ``python app.py`` and open http://localhost:7860.

Drop photos of cast pump impellers (top view) and get OK or DEFECT for each, the defect probability, a Grad-CAM
heat map over the photo and the time each stage took. The same server answers ``POST /api/inspect`` (JSON; see
/docs) and the Gradio API (``gradio_client``, endpoints ``/predict`` and ``/predict_batch``).

The Adapt tab adapts the model to a new line from labelled photos (or loads an uploaded checkpoint) and switches
the browser session to it; other sessions and the APIs keep the default model.

This file is the UI only: layout and one-line callbacks. What they call lives in ``inspectkit/ui_support.py``
(the Inspect and Model tabs), ``inspectkit/shift_ui.py``, ``inspectkit/adapt_ui.py`` (the Adapt tab and the
per-session model) and ``inspectkit/service.py`` (the serving modules: model loading, the JSON endpoint, the
server); docs/architecture.md maps every module. Importing it loads no model and no torch: the model loads in a
background thread once the server is up.

Why this file is long: it is the layout of four tabs and their wiring; every callback is one line.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from inspectkit.limits import MAX_BATCH, MAX_UPLOAD_MB
from inspectkit.serve.http_api import serve
from inspectkit.ui import shift as sh
from inspectkit.ui.adapt import tab as aui
from inspectkit.ui.common import heatmap_view as uh
from inspectkit.ui.common import support as ui

ROOT = Path(__file__).resolve().parents[2]  # the checkout: examples/ and reports/ beside the package
EXAMPLES_DIR = ROOT / "examples"
REPORTS_DIR = ROOT / "reports"
MAX_EXAMPLES = 8
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

CSS = """
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
#gallery, #gallery .gallery-container {height:auto !important}
#gallery .grid-wrap {height:auto !important; min-height:0 !important; max-height:560px; overflow-y:auto}
#gallery .caption-label {white-space:normal; overflow-wrap:anywhere; max-width:calc(100% - 12px); font-size:.8em}
.status.session {background:#dbeafe}
.adapt-cols {display:flex; gap:18px; flex-wrap:wrap} .adapt-col {flex:1 1 300px; min-width:280px}
.adapt-mode {padding:6px 10px; border-radius:8px; margin:4px 0 8px 0}
.adapt-mode.heldout {background:#dcfce7} .adapt-mode.insample {background:#fde68a; border:1px solid #d97706}
table.adapt-metrics, table.cm {border-collapse:collapse; font-size:.9em; margin:6px 0}
table.adapt-metrics th, table.adapt-metrics td, table.cm th, table.cm td {border:1px solid #d1d5db; padding:3px 8px;
  text-align:right}
table.cm caption {text-align:left; font-weight:600; padding-bottom:4px}
table.cm td.diag {background:#dcfce7} table.cm td.off {background:#fee2e2}
td.missed {font-weight:700; color:#b91c1c}
ul.adapt-list {margin:0 0 6px 18px; font-size:.9em}
"""

INTRO = f"""
# Casting inspection
Photos of cast submersible-pump impellers (top view) are classified **OK** or **DEFECT** (porosity, pinholes,
burrs, shrinkage, cracks...), or **UNUSABLE** with the reason when nobody can judge the photo (too dark, overexposed,
out of focus, part not fully in frame, not a casting: a model with a guard). The heat map shows where the network
looked. Drag and drop up to **{MAX_BATCH}
images** at once (JPEG, PNG, BMP, TIFF or WebP, at most **{MAX_UPLOAD_MB} MB** each).
"""

API_DOC = f"""
### Gradio API (Python)
```python
from gradio_client import Client, handle_file

client = Client("http://localhost:7860/")          # or the Space id, e.g. Client("<user>/casting-inspection")
r = client.predict(handle_file("casting.jpg"), None, False, api_name="/predict")
print(r["verdict"], r["defect_probability"], r["threshold"], r["needs_review"], r["latency_ms"]["total"])
# several at once (at most {MAX_BATCH}); a bad file gets "error" and the others still complete:
rs = client.predict([handle_file("a.jpg"), handle_file("b.jpg")], None, api_name="/predict_batch")
```
Arguments of `/predict`: the image, the threshold (`None`: the model's), `heatmap` (True adds the heat-map overlay
as a base64 PNG).

### JSON endpoint
```bash
curl -F "file=@casting.jpg" "http://localhost:7860/api/inspect?heatmap=true"
```
Answers `{{"verdict": "DEFECT", "defect_probability": 0.97, "probabilities": {{...}}, "threshold": ...,
"needs_review": false, "review_band": {{"low": ..., "high": ...}}, "latency_ms": {{"decode": ..., "total": ...}},
"heatmap_png_base64": "..."}}`. `needs_review` is true when the defect probability lies in the review band around
the threshold (the model's band, moved with `threshold`; `review_margin=2` sets it to 2 logits either side). The
Gradio endpoints return the same two fields. With a model that has a guard, `verdict` is `"UNUSABLE"` for a photo
nobody can judge, at any threshold; `unusable_reason` says why ("too dark", "out of focus", "not a casting"...) and
`novelty` how unlike the training photos it is (about 1 for them). A file that is not an image gets
422 with a message, one over {MAX_UPLOAD_MB} MB gets 413. The schema is at `/docs` and `/openapi.json`;
`GET /api/health` says whether the model is loaded.
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
    return {"theme": gr.themes.Soft(primary_hue="blue", neutral_hue="slate"), "css": CSS + sh.CSS}


def build_demo(handler, reports_dir: str | Path = REPORTS_DIR, examples_dir: str | Path = EXAMPLES_DIR,
               adapt_settings: aui.AdaptSettings | None = None) -> gr.Blocks:
    """The whole UI around ``handler`` (an InferenceHandler, or a LazyHandler that is still loading).

    ``adapt_settings``: the Adapt tab's budget (default: ``aui.AdaptSettings.from_env()``, i.e. the
    ``INSPECT_ADAPT_*`` variables). Builds only; nothing is launched and no model call is made.
    """
    report, report_missing = ui.load_report(reports_dir)
    examples = example_images(Path(examples_dir))
    settings = adapt_settings or aui.AdaptSettings.from_env()

    # The Inspect tab's callbacks run on the session's model (``model``: None for the shared one).
    def inspect_files(model, files, opacity, state, progress=gr.Progress()):
        """Inspect the dropped photos."""
        return aui.inspect_call(ui.run_inspection, handler, model, files, opacity, state, progress)

    def inspect_single(model, path, opacity, state, progress=gr.Progress()):
        """Inspect the one uploaded, pasted or webcam photo (or a clicked example)."""
        return aui.inspect_call(ui.run_single, handler, model, path, opacity, state, progress)

    def redecide(model, state, threshold):
        """New verdicts at the slider's threshold, from the stored probabilities."""
        return aui.inspect_call(ui.redecide, handler, model, state, threshold)

    def rereview(model, state, margin):
        """Needs-review flags for a review band of ``margin`` logits either side of the threshold."""
        return aui.inspect_call(ui.rereview, handler, model, state, margin)

    def reblend(model, state, opacity):
        """Overlays redrawn at the slider's opacity, from the stored heat maps."""
        return aui.inspect_call(ui.reblend, handler, model, state, opacity)

    def select(model, state, evt: gr.SelectData):
        """Show the clicked gallery image in the detail panel."""
        return aui.inspect_call(ui.select, handler, model, state, evt.index)

    def send_to_adapt(model, state, files, single):
        """'Label these next' to the Adapt tab's 'to label' list, and show that tab."""
        return aui.adapt_call(aui.send_to_adapt, handler, model, state, files, single)

    def adapt_load(model):
        """On page load: the drop zones named after the model's classes."""
        return aui.on_load(handler, model)

    def adapt_score(model, zips, progress=gr.Progress(), *zones):
        """Check the labelled photos and score the session's model on them."""
        return aui.adapt_call(aui.score, handler, model, zips, zones, progress)

    def adapt_run(model, zips, progress=gr.Progress(), *zones):
        """Adapt the session's model to the labelled photos (one adaptation at a time on the server)."""
        return aui.adapt_call(aui.run_adaptation, handler, model, settings, zips, zones, progress)

    def adapt_use(model, result):
        """Switch this session to the model just adapted."""
        return aui.adapt_call(aui.use_adapted, handler, model, result)

    def adapt_default(model):
        """Switch this session back to the default model."""
        return aui.adapt_call(aui.use_default, handler, model)

    def adapt_upload(model, files):
        """Load an uploaded checkpoint (weights-only) and switch this session to it."""
        return aui.adapt_call(aui.load_uploaded_checkpoint, handler, model, files, settings,
                              title="Cannot load the checkpoint")

    def adapt_label(model, to_label, *zones_and_ticks):
        """Move the ticked 'to label' photos into their class zones."""
        n = aui.MAX_CLASS_ZONES
        return aui.adapt_call(aui.apply_labels, handler, model, to_label, zones_and_ticks[:n], zones_and_ticks[n:])

    def model_status():
        """On page load: the model's status and threshold once it is loaded."""
        return ui.model_status_update(handler)

    def reheat(model, state, mode, progress=gr.Progress()):
        """Inspect the session's photos again with the chosen heat map."""
        return aui.inspect_call(ui.reheat, handler, model, state, mode, progress)

    def heat_legend(model, mode):
        """The colour bar of the chosen heat map."""
        return uh.legend_for(aui.pick(handler, model), mode)

    def heat_load(model, state):
        """On page load and on a model switch: heat-map choice, colour bar and validation score distribution."""
        return uh.on_load(aui.pick(handler, model), (state or {}).get("heatmap_mode"))

    def predict(image, threshold, heatmap, heatmap_mode):
        """Inspect one image: verdict, probabilities, threshold, latency in ms (and the heat map as base64 PNG:
        heatmap_mode 'defect-evidence', 'class-normalised' or empty for the model's default)."""
        return ui.api_predict(handler, image, threshold, bool(heatmap), heatmap_mode)

    def predict_batch(images, threshold):
        """Inspect several images (at most MAX_BATCH): one result per image, bad files carry an error."""
        return ui.api_predict_batch(handler, images, threshold)

    def inspect_shift(model, files, folder, opacity, state):
        """Inspect any number of photos in chunks with the session's model; the results arrive as they are computed."""
        yield from aui.inspect_call(sh.run_shift, handler, model, files, folder, opacity, state)

    def shift_zip(state):
        """A zip of the Shift job's heat-map overlays."""
        return sh.ui_zip(state)

    # delete_cache: uploads and results older than 2 h are removed every hour, so a station left running on the
    # line does not fill its disk
    with gr.Blocks(title="Casting inspection", analytics_enabled=False, delete_cache=(3600, 7200)) as demo:
        session = gr.State(ui.new_state())
        model = gr.State(None)  # this session's adapted/uploaded model (adapt_ui.pick); None: the shared one
        adapted = gr.State(None)  # the last adaptation of this session, until it is used
        to_label = gr.State([])  # photos sent from "Label these next", not labelled yet
        with gr.Row(equal_height=True):
            gr.Markdown(INTRO)
        status = gr.HTML(ui.initial_status(handler), elem_id="model-status")
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("Inspect", id="inspect"):
                with gr.Row():
                    with gr.Column(scale=2, min_width=320):
                        files = gr.File(file_count="multiple", height=170, elem_id="batch-files",
                                        label="Casting photos")
                        gr.Markdown(f"<span class='muted'>Drag and drop up to {MAX_BATCH} photos, "
                                    f"{MAX_UPLOAD_MB} MB each. More, a folder or a zip: the Shift tab.</span>")
                        inspect_btn = gr.Button("Inspect", variant="primary")
                        with gr.Accordion("One photo: upload, paste from the clipboard, or webcam", open=False):
                            # image_mode=None: Gradio hands over the uploaded file as it is (no conversion and
                            # no lossy WebP re-encoding of grayscale photos); png for pasted/webcam frames
                            single = gr.Image(type="filepath", image_mode=None, format="png",
                                              sources=["upload", "clipboard", "webcam"],
                                              label="One photo", height=240, elem_id="single-image")
                        threshold = gr.Slider(0.0, 1.0, value=ui.initial_threshold(handler, report), step=0.001,
                                              label="Decision threshold on p(defect)", elem_id="threshold",
                                              info="DEFECT when p(defect) \u2265 threshold. Starts at the model's "
                                                   "threshold; moving it re-decides at once, without running the model.")
                        review_margin = gr.Slider(
                            0.0, ui.MAX_REVIEW_MARGIN, value=ui.initial_review_margin(handler), step=0.1,
                            label="Needs-review band, logits either side of the threshold", elem_id="review-margin",
                            info="Photos this close to the threshold are flagged NEEDS REVIEW. Until moved, the "
                                 "model's own band is used (derived on validation); 0 turns flagging off.")
                        opacity = gr.Slider(0.0, 1.0, value=ui.DEFAULT_OPACITY, step=0.05, label="Heat-map opacity",
                                            elem_id="opacity")
                        heat_mode = gr.Radio(uh.MODE_CHOICES, value=uh.EVIDENCE, label="Heat map",
                                             elem_id="heatmap-mode",
                                             info="Defect evidence: one scale for every photo, a good part stays "
                                                  "cool. Changing it inspects the photos again.")
                        if examples:
                            gr.Examples(examples=[[p] for p in examples], inputs=[single], label=(
                                "Examples: real castings from the dataset's test split (click one to inspect it)"),
                                examples_per_page=MAX_EXAMPLES, cache_examples=False)
                            all_examples = gr.Button(f"Inspect all {len(examples)} examples as a batch", size="sm")
                        gr.Markdown(f"<span class='muted'>Limits: {MAX_BATCH} images per batch, {MAX_UPLOAD_MB} MB "
                                    "per image. A file that cannot be read is reported and the rest of the batch "
                                    "still completes.</span>")
                    with gr.Column(scale=5):
                        summary = gr.HTML(elem_id="summary")
                        badge = gr.HTML(elem_id="badge")
                        with gr.Row():
                            original = gr.Image(label="Photo", interactive=False, height=340, format="png",
                                                elem_id="original")
                            overlay = gr.Image(label="Grad-CAM heat map", interactive=False, height=340, format="png",
                                               elem_id="overlay")
                        legend = gr.HTML(uh.PENDING, elem_id="heat-legend")
                        with gr.Row():
                            probabilities = gr.Label(label="Class probabilities", elem_id="probabilities")
                            latency = gr.HTML(elem_id="latency")
                        gallery = gr.Gallery(label="All images in this batch (click one to show it above)",
                                             columns=5, fit_columns=False, object_fit="contain",
                                             allow_preview=False,
                                             interactive=False, elem_id="gallery", format="jpeg")
                        table = gr.Dataframe(headers=ui.TABLE_HEADERS, interactive=False, wrap=True, label="Results",
                                             elem_id="results")
                        csv_file = gr.File(label="Results as CSV", interactive=False, elem_id="csv")
                        label_next = gr.Markdown(elem_id="label-next")
                        send_btn = gr.Button("Send 'Label these next' to the Adapt tab to label them", size="sm",
                                             elem_id="send-to-adapt")
            with gr.Tab("Adapt", id="adapt"):
                gr.Markdown(aui.intro_markdown(settings), elem_id="adapt-intro")
                adapt_session = gr.HTML(aui.session_line(None), elem_id="adapt-session")
                with gr.Row():
                    with gr.Column(scale=2, min_width=320):
                        gr.Markdown("### 1. Labelled photos of the new line")
                        adapt_zip = gr.File(file_count="multiple", file_types=[".zip"], height=120,
                                            label=f"Zip files, one folder per class (at most {aui.MAX_ZIP_MB} MB each)",
                                            elem_id="adapt-zip")
                        zones = [gr.File(file_count="multiple", file_types=list(aui.IMAGE_TYPES), height=120,
                                         label=f"Photos of class {i + 1}", visible=i < 2, elem_id=f"adapt-zone-{i}")
                                 for i in range(aui.MAX_CLASS_ZONES)]
                        with gr.Accordion("To label: photos sent from 'Label these next'", open=False,
                                          elem_id="to-label-box") as to_label_box:
                            to_label_gallery = gr.Gallery(label="To label", columns=5, height="auto",
                                                          allow_preview=False, interactive=False,
                                                          elem_id="to-label-gallery")
                            ticks = [gr.CheckboxGroup(choices=[], label=f"Label as class {i + 1}", visible=i < 2,
                                                      elem_id=f"label-as-{i}") for i in range(aui.MAX_CLASS_ZONES)]
                            label_btn = gr.Button("Add the ticked photos to their class", size="sm",
                                                  elem_id="apply-labels")
                        gr.Markdown("### 2. Score, then adapt")
                        score_btn = gr.Button("Score the current model on these photos", elem_id="adapt-score-btn")
                        adapt_btn = gr.Button("Adapt", variant="primary", elem_id="adapt-run-btn")
                    with gr.Column(scale=5):
                        adapt_before = gr.HTML(elem_id="adapt-score")
                        adapt_result = gr.HTML(elem_id="adapt-results")
                        gr.Markdown("### 3. Use it, download it")
                        adapt_download = gr.File(label="Adapted checkpoint and its .sha256", interactive=False,
                                                 file_count="multiple", elem_id="adapt-download")
                        with gr.Row():
                            use_btn = gr.Button("Use the adapted model in this session", variant="primary",
                                                elem_id="adapt-use-btn")
                            default_btn = gr.Button("Back to the default model", elem_id="adapt-default-btn")
                gr.Markdown("### Load a checkpoint")
                with gr.Row():
                    with gr.Column(scale=2, min_width=320):
                        ckpt_files = gr.File(file_count="multiple", file_types=[".pt", ".pth", ".sha256"], height=120,
                                             label=f"A checkpoint (.pt, at most {aui.MAX_CHECKPOINT_MB} MB), "
                                                   "optionally with its .sha256", elem_id="ckpt-upload")
                        load_btn = gr.Button("Load it and use it in this session", elem_id="ckpt-load-btn")
                    with gr.Column(scale=5):
                        ckpt_info = gr.Markdown("Loaded weights-only: a checkpoint cannot run code here. Its SHA-256 "
                                                "and weights digest are shown once loaded.", elem_id="ckpt-info")
            with gr.Tab("Model", id="model"):
                gr.Markdown("## The model in use")
                loaded = gr.Markdown("The model is loading...", elem_id="loaded-model")
                gr.Markdown("## Validation scores: the margin around the threshold")
                score_dist = gr.HTML("The model is loading...", elem_id="score-distribution")
                gr.Markdown("## How well it works (from the committed evaluation report)")
                if report is None:
                    gr.Markdown(report_missing, elem_id="report-missing")
                else:
                    gr.Markdown(ui.metrics_markdown(report), elem_id="metrics")
                for name, path, caption in ui.report_images(reports_dir):
                    if path:  # caption above, not as a label drawn over the plot's own title
                        gr.Markdown(f"**{caption}**")
                        gr.Image(path, show_label=False, interactive=False, buttons=["fullscreen"])
                    else:
                        gr.Markdown(f"*{caption}: `reports/{name}` is not present.*")
                full = ui.report_markdown_text(reports_dir)
                if full:
                    with gr.Accordion("Full evaluation report (reports/evaluation.md)", open=False):
                        gr.Markdown(full)
                gr.Markdown("## Where the data and the weights came from")
                gr.Markdown(ui.provenance_markdown(report))
            with gr.Tab("API", id="api"):
                gr.Markdown(API_DOC)
            with gr.Tab("Shift", id="shift"):
                gr.Markdown(sh.INTRO)
                with gr.Row():
                    with gr.Column(scale=2, min_width=320):
                        shift_files = gr.File(file_count="multiple", height=150, elem_id="shift-files",
                                              label="Photos or zip files of photos")
                        shift_folder = gr.File(file_count="directory", height=110, elem_id="shift-folder",
                                               label="Or a folder of photos")
                        with gr.Row():
                            shift_btn = gr.Button("Inspect", variant="primary", elem_id="shift-inspect")
                            shift_stop = gr.Button("Stop", elem_id="shift-stop")
                        gr.Markdown(sh.LIMITS, elem_id="shift-limits")
                        shift_zip_btn = gr.Button("Zip the heat-map overlays", size="sm", elem_id="shift-zip-btn")
                        shift_zip_file = gr.File(label="Overlays (zip)", interactive=False, elem_id="shift-zip")
                    with gr.Column(scale=5):
                        shift_progress = gr.HTML(elem_id="shift-progress")
                        shift_summary = gr.HTML(elem_id="shift-summary")
                        shift_gallery = gr.Gallery(label=f"Defects, UNUSABLE and needs-review photos first (at "
                                                         f"most {sh.GALLERY_MAX})", columns=6, object_fit="contain",
                                                   allow_preview=True, interactive=False, elem_id="shift-gallery")
                        shift_table = gr.Dataframe(headers=sh.TABLE_HEADERS, interactive=False, wrap=True,
                                                   label="Results (the gallery's photos)", elem_id="shift-results")
                        shift_csv = gr.File(label="All results as CSV", interactive=False, elem_id="shift-csv")
                shift_state = gr.State(sh.new_state())

        # Components of the programmatic endpoints only (gradio_client), never shown.
        with gr.Column(visible=False):
            api_image = gr.File(label="image", file_count="single")
            api_images = gr.File(label="images", file_count="multiple")
            api_threshold = gr.Number(label="threshold", value=None)
            api_heatmap = gr.Checkbox(label="heatmap", value=False)
            api_heatmap_mode = gr.Textbox(label="heatmap_mode", value="")
            api_result = gr.JSON(label="result")
            api_results = gr.JSON(label="results")
            api_go = gr.Button("predict")
            api_go_batch = gr.Button("predict_batch")

        view = [session, summary, gallery, badge, original, overlay, probabilities, latency, table, csv_file,
                label_next]
        detail = [session, badge, original, overlay, probabilities, latency]
        hidden = dict(api_visibility="undocumented")
        files.upload(inspect_files, [model, files, opacity, session], view, api_name="inspect_upload", **hidden)
        inspect_btn.click(inspect_files, [model, files, opacity, session], view, api_name="inspect_files", **hidden)
        # .change, not .input: an example click sets the value without user input and must inspect too
        single.change(inspect_single, [model, single, opacity, session], view, api_name="inspect_single", **hidden)
        if examples:
            all_examples.click(lambda: examples, None, files, api_visibility="private").then(
                inspect_files, [model, files, opacity, session], view, api_visibility="private")
        # Re-deciding, re-blending and selecting never run the network: no need to wait behind an inspection.
        light = dict(api_visibility="private", concurrency_limit=None)
        threshold.release(redecide, [model, session, threshold], view, **light)
        review_margin.release(rereview, [model, session, review_margin], view, **light)
        opacity.release(reblend, [model, session, opacity], view, **light)
        gallery.select(select, [model, session], detail, **light)
        demo.load(model_status, None, [status, threshold, loaded], concurrency_limit=None, api_visibility="private")
        # heat maps: the choice runs the network again (queued like an inspection); the colour bar follows it
        heat = [heat_mode, legend, score_dist]
        heat_mode.input(reheat, [model, session, heat_mode], view, api_visibility="private").then(
            heat_legend, [model, heat_mode], legend, **light)
        demo.load(heat_load, [model, session], heat, **light)
        # a session that switches model gets that model's scale and score distribution
        model.change(heat_load, [model, session], heat, **light)

        # Adapt tab. Switching model changes what aui.SWITCH_OUTPUTS lists, in that order.
        switch = [model, *view, status, threshold, review_margin, loaded, adapt_session, *zones, *ticks]
        demo.load(adapt_load, [model], [*zones, *ticks, adapt_session], **light)
        send_btn.click(send_to_adapt, [model, session, files, single],
                       [to_label, to_label_gallery, *ticks, tabs, to_label_box], **light)
        label_btn.click(adapt_label, [model, to_label, *zones, *ticks], [*zones, to_label, to_label_gallery, *ticks],
                        **light)
        score_btn.click(adapt_score, [model, adapt_zip, *zones], adapt_before, api_name="adapt_score", **hidden)
        # concurrency_limit=None: a second adaptation is refused at once by adapt_ui's lock, not queued behind
        # the first (which could take minutes)
        adapt_btn.click(adapt_run, [model, adapt_zip, *zones], [adapted, adapt_result, adapt_download],
                        api_name="adapt_run", concurrency_limit=None, **hidden)
        use_btn.click(adapt_use, [model, adapted], switch, **light)
        default_btn.click(adapt_default, [model], switch, **light)
        load_btn.click(adapt_upload, [model, ckpt_files], [ckpt_info, *switch], api_visibility="private")
        api_go.click(predict, [api_image, api_threshold, api_heatmap, api_heatmap_mode], api_result,
                     api_name="predict")
        api_go_batch.click(predict_batch, [api_images, api_threshold], api_results, api_name="predict_batch")
        # The Shift tab: its own concurrency group, so a long job never holds up the Inspect tab's queue; the
        # inference lock is taken per chunk, so other requests are served between two chunks.
        shift_view = [shift_state, shift_progress, shift_summary, shift_gallery, shift_table, shift_csv]
        shift_job = shift_btn.click(inspect_shift, [model, shift_files, shift_folder, opacity, shift_state], shift_view,
                                    concurrency_limit=sh.CONCURRENT_JOBS, concurrency_id="shift",
                                    show_progress="hidden", api_name="inspect_shift", **hidden)
        shift_stop.click(None, None, None, cancels=[shift_job], api_visibility="private")
        shift_zip_btn.click(shift_zip, [shift_state], shift_zip_file, api_visibility="private")
    return demo


def main() -> None:
    """Serve the app with the committed model on GRADIO_SERVER_NAME/GRADIO_SERVER_PORT (or PORT), default 0.0.0.0:7860."""
    serve(build_demo, **launch_options())


if __name__ == "__main__":
    main()
