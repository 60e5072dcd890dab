"""The Adapt tab's components and events: labelled photos in (zips, one drop zone per class, photos sent from the
Inspect tab's "Label these next"), score, adapt, use and download, or load a checkpoint. Layout and one-line
callbacks; the work is in :mod:`inspectkit.ui.adapt.tab`.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from inspectkit.ui.adapt import tab as at
from inspectkit.ui.adapt.intake import IMAGE_TYPES, MAX_CHECKPOINT_MB, MAX_ZIP_MB
from inspectkit.ui.adapt.settings import AdaptSettings
from inspectkit.ui.adapt.view import intro_markdown, session_line
from inspectkit.ui.common.page import HIDDEN, LIGHT, Page

CSS = """
.status.session {background:#dbeafe}
.adapt-cols {display:flex; gap:18px; flex-wrap:wrap} .adapt-col {flex:1 1 300px; min-width:280px}
.adapt-mode {padding:6px 10px; border-radius:8px; margin:4px 0 8px 0}
.adapt-mode.heldout {background:#dcfce7} .adapt-mode.kept {background:#e0f2fe; border:1px solid #0284c7} .adapt-mode.insample {background:#fde68a; border:1px solid #d97706}
table.adapt-metrics, table.cm {border-collapse:collapse; font-size:.9em; margin:6px 0}
table.adapt-metrics th, table.adapt-metrics td, table.cm th, table.cm td {border:1px solid #d1d5db; padding:3px 8px;
  text-align:right}
table.cm caption {text-align:left; font-weight:600; padding-bottom:4px}
table.cm td.diag {background:#dcfce7} table.cm td.off {background:#fee2e2}
td.missed {font-weight:700; color:#b91c1c}
ul.adapt-list {margin:0 0 6px 18px; font-size:.9em}
"""


def build(handler: Any, page: Page, settings: AdaptSettings, send_btn: Any, inspect_state: Any) -> None:
    """The Adapt tab around ``handler`` (the shared model) with the adaptation budget ``settings``. ``send_btn`` and
    ``inspect_state``: the Inspect tab's "send 'Label these next'" button and its session results, whose photos
    land in this tab's "to label" list. Switching model sets ``page.model``; the other tabs follow that."""

    def load(model):
        """On page load: the drop zones named after the model's classes."""
        return at.on_load(handler, model)

    def send(model, state):
        """'Label these next' to the 'to label' list, and show this tab."""
        return at.adapt_call(at.send_to_adapt, handler, model, state)

    def label(model, to_label, *zones_and_ticks):
        """Move the ticked 'to label' photos into their class zones."""
        n = at.MAX_CLASS_ZONES
        return at.adapt_call(at.apply_labels, handler, model, to_label, zones_and_ticks[:n], zones_and_ticks[n:])

    def score(model, zips, progress=gr.Progress(), *zones):
        """Check the labelled photos and score the session's model on them."""
        return at.adapt_call(at.score, handler, model, zips, zones, progress)

    def run(model, zips, force, progress=gr.Progress(), *zones):
        """Adapt the session's model to the labelled photos (one adaptation at a time on the server)."""
        return at.adapt_call(at.run_adaptation, handler, model, settings, zips, zones, progress, force)

    def use(model, result):
        """Switch this session to the model just adapted."""
        return at.adapt_call(at.use_adapted, handler, model, result)

    def default(model):
        """Switch this session back to the default model."""
        return at.adapt_call(at.use_default, handler, model)

    def upload(model, files):
        """Load an uploaded checkpoint (weights-only) and switch this session to it."""
        return at.adapt_call(at.load_uploaded_checkpoint, handler, model, files, settings,
                             title="Cannot load the checkpoint")

    with gr.Tab("Adapt", id="adapt"):
        adapted = gr.State(None)  # the last adaptation of this session, until it is used
        to_label = gr.State([])  # photos sent from "Label these next", not labelled yet
        gr.Markdown(intro_markdown(settings), elem_id="adapt-intro")
        session = gr.HTML(session_line(None), elem_id="adapt-session")
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                gr.Markdown("### 1. Labelled photos of the new line")
                zips = gr.File(file_count="multiple", file_types=[".zip"], height=120, elem_id="adapt-zip",
                               label=f"Zip files, one folder per class (at most {MAX_ZIP_MB} MB each)")
                zones = [gr.File(file_count="multiple", file_types=list(IMAGE_TYPES), height=120,
                                 label=f"Photos of class {i + 1}", visible=i < 2, elem_id=f"adapt-zone-{i}")
                         for i in range(at.MAX_CLASS_ZONES)]
                with gr.Accordion("To label: photos sent from 'Label these next'", open=False,
                                  elem_id="to-label-box") as to_label_box:
                    to_label_gallery = gr.Gallery(label="To label", columns=5, height="auto", allow_preview=False,
                                                  interactive=False, elem_id="to-label-gallery")
                    ticks = [gr.CheckboxGroup(choices=[], label=f"Label as class {i + 1}", visible=i < 2,
                                              elem_id=f"label-as-{i}") for i in range(at.MAX_CLASS_ZONES)]
                    label_btn = gr.Button("Add the ticked photos to their class", size="sm", elem_id="apply-labels")
                gr.Markdown("### 2. Score, then adapt")
                score_btn = gr.Button("Score the current model on these photos", elem_id="adapt-score-btn")
                adapt_btn = gr.Button("Adapt", variant="primary", elem_id="adapt-run-btn")
                force = gr.Checkbox(False, label="Adapt even if the current model gets every photo right (by default "
                                    "it is then kept: there is nothing to correct)", elem_id="adapt-force")
            with gr.Column(scale=5):
                before = gr.HTML(elem_id="adapt-score")
                result = gr.HTML(elem_id="adapt-results")
                gr.Markdown("### 3. Use it, download it")
                download = gr.File(label="Adapted checkpoint and its .sha256", interactive=False,
                                   file_count="multiple", elem_id="adapt-download")
                with gr.Row():
                    use_btn = gr.Button("Use the adapted model in this session", variant="primary",
                                        elem_id="adapt-use-btn")
                    default_btn = gr.Button("Back to the default model", elem_id="adapt-default-btn")
        gr.Markdown("### Load a checkpoint")
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                ckpt_files = gr.File(file_count="multiple", file_types=[".pt", ".pth", ".sha256"], height=120,
                                     label=f"A checkpoint (.pt, at most {MAX_CHECKPOINT_MB} MB), optionally with its "
                                           ".sha256", elem_id="ckpt-upload")
                load_btn = gr.Button("Load it and use it in this session", elem_id="ckpt-load-btn")
            with gr.Column(scale=5):
                ckpt_info = gr.Markdown("Loaded weights-only: a checkpoint cannot run code here. Its SHA-256 and "
                                        "weights digest are shown once loaded.", elem_id="ckpt-info")

    model = page.model
    # switching model changes what at.SWITCH_OUTPUTS lists, in that order
    switch = [model, page.status, session, *zones, *ticks]
    page.demo.load(load, [model], [*zones, *ticks, session], **LIGHT)
    send_btn.click(send, [model, inspect_state], [to_label, to_label_gallery, *ticks, page.tabs, to_label_box],
                   **LIGHT)
    label_btn.click(label, [model, to_label, *zones, *ticks], [*zones, to_label, to_label_gallery, *ticks], **LIGHT)
    score_btn.click(score, [model, zips, *zones], before, api_name="adapt_score", **HIDDEN)
    # concurrency_limit=None: a second adaptation is refused at once by the tab's lock, not queued behind the first
    # (which could take minutes)
    adapt_btn.click(run, [model, zips, force, *zones], [adapted, result, download], api_name="adapt_run",
                    concurrency_limit=None, **HIDDEN)
    use_btn.click(use, [model, adapted], switch, **LIGHT)
    default_btn.click(default, [model], switch, **LIGHT)
    load_btn.click(upload, [model, ckpt_files], [ckpt_info, *switch], api_visibility="private")
