"""The Inspect tab: one photo or ten thousand (files, a folder, zip files of photos) inspected in chunks with a
progress bar; the gallery leads with defects, UNUSABLE and needs-review photos, a click shows a photo large with its
probabilities, timings and reason, the table and the CSV hold every photo. The threshold and band sliders re-decide
the stored results without the network. Layout and one-line callbacks; the work is in
:mod:`inspectkit.ui.common.session` (and the job it runs, :mod:`inspectkit.ui.common.job`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from inspectkit.limits import MAX_BATCH, MAX_UPLOAD_MB
from inspectkit.ui.common import heatmap_view as uh
from inspectkit.ui.common import session as ss
from inspectkit.ui.common.job import MAX_JOB_BYTES, MAX_JOB_PHOTOS
from inspectkit.ui.common.job_view import GALLERY_MAX
from inspectkit.ui.common.page import HIDDEN, LIGHT, Page
from inspectkit.ui.common.render import DEFAULT_OPACITY, TABLE_HEADERS
from inspectkit.ui.common.report_view import initial_threshold, status_update
from inspectkit.ui.common.session_models import pick

#: Jobs running at once over all sessions (each takes the inference lock per chunk, so they interleave with
#: each other and with the JSON endpoint).
CONCURRENT_JOBS = 2
LIMITS = (f"<span class='muted'>One photo or up to {MAX_JOB_PHOTOS:,} photos and {MAX_JOB_BYTES / 1e9:.1f} GB per drop "
          f"(zips counted unpacked), {MAX_UPLOAD_MB} MB per file (a zip too), inspected {MAX_BATCH} at a time. A file "
          "that cannot be read is reported and the rest completes. More: <code>python batch_inspect.py FOLDER --out "
          "rows.csv</code>.</span>")
CSS = """
.job-progress {font-size:1.05em; padding:6px 2px} .job-progress progress {width:55%; height:14px; vertical-align:middle}
.job-msg {padding:8px 10px; border-radius:8px} .job-msg.error {background:#fee2e2; color:#7f1d1d}
.job-msg.muted {color:#6b7280}
#gallery, #gallery .gallery-container {height:auto !important}
#gallery .grid-wrap {height:auto !important; min-height:0 !important; max-height:560px; overflow-y:auto}
#gallery .caption-label {white-space:normal; overflow-wrap:anywhere; max-width:calc(100% - 12px); font-size:.8em}
.drift {padding:8px 12px; border-radius:8px; margin:2px 0 6px 0; font-size:1.05em}
.drift.alarm {background:#fee2e2; border:2px solid #b91c1c; color:#7f1d1d}
.drift.alarm .drift-head {font-weight:800; letter-spacing:.03em} .drift.alarm ul {margin:4px 0 0 18px}
.drift.steady {background:#f0fdf4; color:#166534} .drift.off {background:#f3f4f6; color:#6b7280}
"""


@dataclass
class InspectTab:
    """What the other tabs need of this one: the session's results (a ``gr.State``) and the button that sends
    "Label these next" to the Adapt tab."""

    session: Any
    send_btn: Any


def build(handler: Any, page: Page, report: dict | None, examples: list[str]) -> InspectTab:
    """The Inspect tab and its events, around ``handler`` (the shared model; a session that switched model inspects
    with its own, ``page.model``). ``report``: the evaluation report (the threshold slider starts at its threshold
    until the model is loaded); ``examples``: photos offered as examples."""

    def warn(text):
        """Files that could not be inspected: a toast (the table has every reason)."""
        gr.Warning(text, duration=12)

    def run(model, files, folder, opacity, state):
        """Inspect the dropped photos, zips and folder with the session's model, in chunks."""
        yield from ss.stream(ss.inspect, handler, model, files, folder, opacity, state, warn)

    def run_files(model, files, opacity, state):
        """Inspect the photos and zips just dropped."""
        yield from ss.stream(ss.inspect, handler, model, files, None, opacity, state, warn)

    def run_folder(model, folder, opacity, state):
        """Inspect the folder just uploaded."""
        yield from ss.stream(ss.inspect, handler, model, None, folder, opacity, state, warn)

    def run_single(model, path, opacity, state):
        """Inspect the one uploaded, pasted or webcam photo (or a clicked example)."""
        yield from ss.stream(ss.inspect_single, handler, model, path, opacity, state, warn)

    def stop(model, state):
        """Stop the running job after its current chunk, keeping every result."""
        return ss.call(ss.stop, handler, model, state)

    def redecide(model, state, threshold):
        """New verdicts at the slider's threshold, from the stored probabilities."""
        return ss.call(ss.redecide, handler, model, state, threshold)

    def rereview(model, state, margin):
        """Needs-review flags for a review band of ``margin`` logits either side of the threshold."""
        return ss.call(ss.rereview, handler, model, state, margin)

    def reblend(model, state, opacity):
        """The selected photo and the gallery redrawn at the slider's opacity, from the stored heat maps."""
        return ss.call(ss.reblend, handler, model, state, opacity)

    def select(model, state, evt: gr.SelectData):
        """Show the clicked gallery photo in the detail panel."""
        return ss.call(ss.select, handler, model, state, evt.index)

    def reheat(model, state, mode):
        """Inspect the gallery's photos again with the chosen heat map."""
        yield from ss.stream(ss.reheat, handler, model, state, mode)

    def heat_legend(model, mode):
        """The colour bar of the chosen heat map."""
        return uh.legend_for(pick(handler, model), mode)

    def heat_load(model, state):
        """On page load and on a model switch: the heat-map choice and its colour bar."""
        return uh.on_load(pick(handler, model), (state or {}).get("heatmap_mode"))

    def switched(model, state):
        """The session changed model: its results are cleared, the sliders go to the new model's."""
        return ss.call(ss.switched, handler, model, state)

    def page_status():
        """On page load: the model's status line and threshold once it is loaded."""
        return status_update(handler)

    def overlays(state):
        """A zip of the heat-map overlays of the session's photos."""
        try:
            return ss.overlays_zip(state)
        except ValueError as exc:
            raise gr.Error(str(exc), title="No overlays") from None

    with gr.Tab("Inspect", id="inspect"):
        session = gr.State(ss.new_state())
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                files = gr.File(file_count="multiple", height=170, elem_id="batch-files",
                                label="Casting photos, or zip files of photos (one or thousands)")
                folder = gr.File(file_count="directory", height=100, elem_id="inspect-folder",
                                 label="Or a folder of photos")
                with gr.Row():
                    inspect_btn = gr.Button("Inspect", variant="primary", elem_id="inspect-btn")
                    stop_btn = gr.Button("Stop", elem_id="inspect-stop")
                gr.Markdown(LIMITS, elem_id="inspect-limits")
                with gr.Accordion("One photo: upload, paste from the clipboard, or webcam", open=False):
                    # image_mode=None: Gradio hands over the uploaded file as it is (no conversion and no lossy WebP
                    # re-encoding of grayscale photos); png for pasted/webcam frames
                    single = gr.Image(type="filepath", image_mode=None, format="png",
                                      sources=["upload", "clipboard", "webcam"], label="One photo", height=240,
                                      elem_id="single-image")
                threshold = gr.Slider(0.0, 1.0, value=initial_threshold(handler, report), step=0.001,
                                      label="Decision threshold on p(defect)", elem_id="threshold",
                                      info="DEFECT when p(defect) \u2265 threshold. Starts at the model's threshold; "
                                           "moving it re-decides every photo at once, without running the model.")
                review_margin = gr.Slider(
                    0.0, ss.MAX_REVIEW_MARGIN, value=ss.initial_review_margin(handler), step=0.1,
                    label="Needs-review band, logits either side of the threshold", elem_id="review-margin",
                    info="Photos this close to the threshold are flagged NEEDS REVIEW. Until moved, the model's own "
                         "band is used (derived on validation); 0 turns flagging off.")
                opacity = gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Heat-map opacity",
                                    elem_id="opacity",
                                    info=f"Redraws the selected photo and the gallery (at most {GALLERY_MAX}) from "
                                         "the stored heat maps; the overlay zip keeps the opacity each photo was "
                                         "inspected with.")
                heat_mode = gr.Radio(uh.MODE_CHOICES, value=uh.EVIDENCE, label="Heat map", elem_id="heatmap-mode",
                                     info="Defect evidence: one scale for every photo, a good part stays cool. "
                                          f"Changing it inspects the gallery's photos again (at most {GALLERY_MAX}; "
                                          "the others keep theirs) and holds for the photos inspected next.")
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[single], label=(
                        "Examples: real castings from the dataset's test split (click one to inspect it)"),
                        examples_per_page=len(examples), cache_examples=False)
                    all_examples = gr.Button(f"Inspect all {len(examples)} examples together", size="sm")
                zip_btn = gr.Button("Zip the heat-map overlays", size="sm", elem_id="overlays-zip-btn")
                zip_file = gr.File(label="Overlays (zip)", interactive=False, elem_id="overlays-zip")
            with gr.Column(scale=5):
                progress = gr.HTML(elem_id="progress")
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
                gallery = gr.Gallery(label=f"Defects, UNUSABLE and needs-review photos first (at most {GALLERY_MAX}); "
                                           "click one to show it above", columns=6, fit_columns=False,
                                     object_fit="contain", allow_preview=False, interactive=False, elem_id="gallery",
                                     format="jpeg")
                table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, wrap=True, elem_id="results",
                                     label="Results: every photo, in the order given")
                csv_file = gr.File(label="Results as CSV (every photo)", interactive=False, elem_id="csv")
                label_next = gr.Markdown(elem_id="label-next")
                send_btn = gr.Button("Send 'Label these next' to the Adapt tab to label them", size="sm",
                                     elem_id="send-to-adapt")

    model = page.model
    view = [session, progress, summary, gallery, badge, original, overlay, probabilities, latency, table, csv_file,
            label_next]
    detail = [session, badge, original, overlay, probabilities, latency]
    # A job has its own concurrency group: a long one never holds up the page's light events, and two sessions'
    # jobs interleave chunk by chunk (each chunk takes the inference lock on its own).
    job = dict(concurrency_id="inspect", concurrency_limit=CONCURRENT_JOBS, show_progress="hidden")
    files.upload(run_files, [model, files, opacity, session], view, api_name="inspect_upload", **HIDDEN, **job)
    folder.upload(run_folder, [model, folder, opacity, session], view, api_visibility="private", **job)
    inspect_btn.click(run, [model, files, folder, opacity, session], view, api_name="inspect_files", **HIDDEN, **job)
    # .change, not .input: an example click sets the value without user input and must inspect too
    single.change(run_single, [model, single, opacity, session], view, api_name="inspect_single", **HIDDEN, **job)
    if examples:
        all_examples.click(lambda: examples, None, files, api_visibility="private").then(
            run_files, [model, files, opacity, session], view, api_visibility="private", **job)
    stop_btn.click(stop, [model, session], view, **LIGHT)
    threshold.release(redecide, [model, session, threshold], view, **LIGHT)
    review_margin.release(rereview, [model, session, review_margin], view, **LIGHT)
    opacity.release(reblend, [model, session, opacity], view, **LIGHT)
    gallery.select(select, [model, session], detail, **LIGHT)
    zip_btn.click(overlays, [session], zip_file, api_visibility="private")
    # heat maps: the choice runs the network again (a job like an inspection); the colour bar follows it
    heat_mode.input(reheat, [model, session, heat_mode], view, api_visibility="private", **job).then(
        heat_legend, [model, heat_mode], legend, **LIGHT)
    page.demo.load(page_status, None, [page.status, threshold], **LIGHT)
    page.demo.load(heat_load, [model, session], [heat_mode, legend], **LIGHT)
    model.change(heat_load, [model, session], [heat_mode, legend], **LIGHT)
    model.change(switched, [model, session], [*view, threshold, review_margin], **LIGHT)
    return InspectTab(session=session, send_btn=send_btn)
