"""The Model tab: the model this session uses (its guard, heat-map scale and review band), the validation score
distribution around its threshold, the committed evaluation report with its plots, and where the data and weights
came from. Layout and one-line callbacks; the text is drawn by :mod:`inspectkit.ui.common.report_view` and
:mod:`inspectkit.ui.common.heatmap_view`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from inspectkit.ui.adapt.view import session_note
from inspectkit.ui.common.heatmap_view import score_distribution_for
from inspectkit.ui.common.page import LIGHT, Page
from inspectkit.ui.common.report_view import (
    loaded_text,
    metrics_markdown,
    provenance_markdown,
    report_images,
    report_markdown_text,
)
from inspectkit.ui.common.session_models import pick


def build(handler: Any, page: Page, reports_dir: str | Path, report: dict | None, report_missing: str | None) -> None:
    """The Model tab around ``handler`` (a session that switched model is shown its own); ``report``: the evaluation
    report read from ``reports_dir`` (None, and ``report_missing`` saying why, when there is none)."""

    def loaded_model(model):
        """The table of the model this session uses, once it is loaded."""
        return loaded_text(pick(handler, model), session_note(model))

    def score_distribution(model):
        """The validation scores of the model this session uses, around its threshold."""
        return score_distribution_for(pick(handler, model))

    with gr.Tab("Model", id="model"):
        gr.Markdown("## The model in use")
        loaded = gr.Markdown("The model is loading...", elem_id="loaded-model")
        gr.Markdown("## Validation scores: the margin around the threshold")
        score_dist = gr.HTML("The model is loading...", elem_id="score-distribution")
        gr.Markdown("## How well it works (from the committed evaluation report)")
        if report is None:
            gr.Markdown(report_missing, elem_id="report-missing")
        else:
            gr.Markdown(metrics_markdown(report), elem_id="metrics")
        for name, path, caption in report_images(reports_dir):
            if path:  # caption above, not as a label drawn over the plot's own title
                gr.Markdown(f"**{caption}**")
                gr.Image(path, show_label=False, interactive=False, buttons=["fullscreen"])
            else:
                gr.Markdown(f"*{caption}: `reports/{name}` is not present.*")
        full = report_markdown_text(reports_dir)
        if full:
            with gr.Accordion("Full evaluation report (reports/evaluation.md)", open=False):
                gr.Markdown(full)
        gr.Markdown("## Where the data and the weights came from")
        gr.Markdown(provenance_markdown(report))

    for event in (page.demo.load, page.model.change):  # a session that switches model is shown that model
        event(loaded_model, [page.model], loaded, **LIGHT)
        event(score_distribution, [page.model], score_dist, **LIGHT)
