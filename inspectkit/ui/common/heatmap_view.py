"""What the UI says about heat maps and scores: the colour bar under the overlay, the heat-map choice, and the Model
tab's validation score distribution (the margin around the threshold and the needs-review band).

Everything here renders from a handler (an InferenceHandler, or anything with the same attributes) into HTML
strings; the tab modules only place them. The colour bar samples the handler's own colour map, so it matches the overlay
whatever ``colormap`` the handler was built with.
"""

from __future__ import annotations

import html
import math
from typing import Any

from inspectkit.serve.model_source import ModelUnavailable, get_handler, model_state
from inspectkit.serve.results import HEATMAP_MODES, display_names_of

EVIDENCE, CLASS_NORMALISED = HEATMAP_MODES
#: The heat-map choice in the Inspect tab: (label, value).
MODE_CHOICES = [("Defect evidence, fixed scale (comparable between photos)", EVIDENCE),
                ("Per-image normalised class CAM (each photo scaled to its own maximum)", CLASS_NORMALISED)]
#: Where the colour bar is sampled (11 stops give the colour map's shape in a CSS gradient).
STOPS = 11
#: The score plot: size in px and the p(defect) values that get a tick (on the logit axis).
PLOT_W, PLOT_H, PAD_L, PAD_R, PAD_T, PAD_B = 680, 230, 46, 16, 18, 44
P_TICKS = (1e-5, 1e-3, 0.1, 0.5, 0.9, 0.999, 0.99999)
CLASS_COLOURS = ("#b91c1c", "#15803d", "#1d4ed8", "#7c3aed", "#c2410c", "#0f766e")
PENDING = ("<div class='heat-legend muted' id='heat-legend-pending'>The colour key appears once the model is "
           "loaded.</div>")


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _logit(p: float) -> float:
    p = min(max(float(p), 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


# ------------------------------------------------------------------------------------------- the colour bar

def gradient_css(colormap: Any = "jet") -> str:
    """A CSS ``linear-gradient`` (left to right, 0 to 1) through the colours of ``colormap``, as the overlay draws
    them (inspectkit.heatmap.colorize)."""
    import numpy as np

    from inspectkit.heatmap.render import colorize

    rgb = colorize(np.linspace(0.0, 1.0, STOPS, dtype=np.float32)[None, :], colormap)[0]
    stops = ", ".join(f"rgb({r},{g},{b}) {100 * i / (STOPS - 1):.0f}%" for i, (r, g, b) in enumerate(rgb.tolist()))
    return f"linear-gradient(to right, {stops})"


def mode_of(h: Any, mode: Any = None) -> str:
    """The heat map a session gets: ``mode`` when given, else the handler's default (the class CAM for a handler
    that has no modes)."""
    if mode == CLASS_NORMALISED or (mode == EVIDENCE and getattr(h, "defect_class", None) is not None):
        return str(mode)
    return getattr(h, "heatmap_mode", None) or CLASS_NORMALISED


def legend_html(h: Any, mode: Any = None) -> str:
    """The colour bar for the heat map ``mode`` (None: the handler's default): what 0, 0.5 and 1 mean, and whether
    two photos can be compared."""
    mode = mode_of(h, mode)
    scale = getattr(h, "heatmap_scale", None) if mode == EVIDENCE else None
    cmd = "python calibrate_heatmap.py --checkpoint &lt;model.pt&gt; --data &lt;its training data&gt;"
    if mode == EVIDENCE and scale:
        title = "Heat map: defect evidence on this model's fixed scale"
        ticks = [(0, "0", "no defect evidence"), (50, "0.5", "OK/defect boundary (learned on validation)"),
                 (100, "1", "a typical defect (validation median)")]
        note = (f"The same scale for every photo: a good part stays blue, and red marks where the network sees "
                f"evidence of a defect. 0.5 = {scale['threshold']:.1f} and 1 = {scale['value']:.1f} logits of "
                f"evidence for DEFECT over OK in one cell; above 1 stays red.")
        cls = "calibrated"
    elif mode == EVIDENCE:
        title = "Heat map: defect evidence, UNCALIBRATED (scaled per photo)"
        ticks = [(0, "0", "no defect evidence"), (100, "1", "this photo's strongest evidence")]
        note = ("This model has no calibrated heat-map scale, so each map is scaled to its own maximum: colours "
                "cannot be compared between photos, and a good part with faint evidence can look red. Add a scale "
                f"without retraining: <code>{cmd}</code>.")
        cls = "uncalibrated"
    else:
        title = "Heat map: per-image normalised class CAM"
        ticks = [(0, "0", "this photo's weakest evidence for the class shown"),
                 (100, "1", "this photo's strongest evidence")]
        note = ("Each photo is scaled to its own range, so every photo reaches 1 somewhere, a good part too: "
                "colours show where the network looked, not how strong the evidence is, and cannot be compared "
                "between photos.")
        cls = "normalised"
    bar = (f"<div class='heat-bar' style='height:14px; border-radius:4px; border:1px solid #9ca3af; "
           f"background:{gradient_css(getattr(h, 'colormap', 'jet'))}'></div>")
    marks = "".join(
        f"<span class='heat-tick' data-value='{v}' style='position:absolute; left:{pos}%; transform:translateX("
        f"{-pos}%); white-space:nowrap'><b>{v}</b> {_esc(text)}</span>" for pos, v, text in ticks)
    return (f"<div class='heat-legend {cls}' id='heat-legend-box' style='font-size:.85em; margin:4px 2px'>"
            f"<div class='heat-legend-title' style='font-weight:600; margin-bottom:3px'>{_esc(title)}</div>{bar}"
            f"<div style='position:relative; height:1.5em; margin-top:2px'>{marks}</div>"
            f"<div class='heat-note' style='color:{'#b45309' if cls == 'uncalibrated' else '#4b5563'}'>{note}</div>"
            f"</div>")


def mode_update(h: Any, mode: Any = None) -> dict:
    """For the heat-map radio once the model is known: its value, and no evidence choice without a defect class."""
    import gradio as gr

    choices = MODE_CHOICES if getattr(h, "defect_class", None) is not None else MODE_CHOICES[1:]
    return gr.update(choices=choices, value=mode_of(h, mode))


def heatmap_row(h: Any) -> str:
    """The Model tab's table row about the heat map: which map is served and its scale (or the fallback)."""
    mode = getattr(h, "heatmap_mode", None)
    scale = getattr(h, "heatmap_scale", None)
    if mode != EVIDENCE:
        return "| heat map | per-image normalised class CAM (the model has no defect class) |"
    if not scale:
        return ("| heat map | defect evidence, **uncalibrated**: the checkpoint has no scale, so each map is scaled to "
                "its own maximum (add one with `calibrate_heatmap.py`) |")
    src = service_md(scale.get("source", "validation"))
    n = scale.get("validation_defects_called")
    counts = f", {n} defects called DEFECT, {scale.get('validation_ok_called')} OK parts" if n is not None else ""
    return (f"| heat map | defect evidence on a fixed scale: 0.5 = {scale['threshold']:.2f}, 1 = {scale['value']:.2f} "
            f"logits (calibrated on {src}{counts}: 1 = median peak of the caught defects, 0.5 = midpoint between the "
            f"strongest OK and the weakest caught defects) |")


def service_md(x: Any) -> str:
    """Text safe in a Markdown table cell."""
    return html.escape(str(x)).replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------------------------- score distribution

def _histogram(h: Any) -> dict | None:
    from inspectkit.heatmap.scale import check_histogram

    hist = ((getattr(h, "checkpoint_info", None) or {}).get("metrics") or {}).get("validation_score_histogram")
    if hist is None:
        return None
    try:
        return check_histogram(hist)
    except ValueError:
        return None


def score_distribution_html(h: Any) -> str:
    """The validation p(defect) of each class as histograms on a logit axis, with the threshold and the needs-review
    band drawn in: how far the classes sit from the threshold (an inline SVG, no plotting library)."""
    if getattr(h, "defect_class", None) is None or getattr(h, "threshold", None) is None:
        return ("<div class='score-dist muted'>This model has no defect class, so it has no p(defect) score "
                "distribution.</div>")
    hist = _histogram(h)
    if hist is None:
        return ("<div class='score-dist muted' id='score-dist-missing'>This checkpoint stores no validation score "
                "histogram (it was made before one was recorded). Add it without retraining: "
                "<code>python calibrate_heatmap.py --checkpoint &lt;model.pt&gt; --data &lt;its training data&gt;"
                "</code>.</div>")
    low, high, bins = float(hist["low"]), float(hist["high"]), int(hist["bins"])
    t = float(h.threshold)
    band = getattr(h, "review_band", None) or {}
    names = display_names_of(h)
    pw, ph = PLOT_W - PAD_L - PAD_R, PLOT_H - PAD_T - PAD_B

    def x(z: float) -> float:
        return PAD_L + (min(max(z, low), high) - low) / (high - low) * pw

    peak = max([c for v in hist["counts"].values() for c in v] + [1])
    scale = math.log10(1 + peak)
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{PLOT_W}' height='{PLOT_H}' role='img' "
             f"aria-label='validation score distribution' style='max-width:100%; height:auto; font: 11px sans-serif'>",
             f"<rect x='{PAD_L}' y='{PAD_T}' width='{pw}' height='{ph}' fill='#f9fafb' stroke='#d1d5db'/>"]
    if band.get("low") is not None and band.get("high") is not None:
        x0, x1 = x(_logit(band["low"])), x(_logit(band["high"]))
        parts.append(f"<rect class='review-band' x='{x0:.1f}' y='{PAD_T}' width='{max(x1 - x0, 1):.1f}' "
                     f"height='{ph}' fill='#fde68a' fill-opacity='0.55'/>")
    width = pw / bins
    order = sorted(hist["counts"], key=lambda c: c != h.defect_class)  # the defect class first, drawn underneath
    for k, cls in enumerate(order):
        colour = CLASS_COLOURS[(0 if cls == h.defect_class else 1 + k) % len(CLASS_COLOURS)] if len(order) > 2 \
            else ("#b91c1c" if cls == h.defect_class else "#15803d")
        for i, c in enumerate(hist["counts"][cls]):
            if c <= 0:
                continue
            bh = ph * math.log10(1 + c) / scale
            parts.append(f"<rect class='bar' data-class='{_esc(cls)}' x='{PAD_L + i * width + 0.5:.1f}' "
                         f"y='{PAD_T + ph - bh:.1f}' width='{max(width - 1, 1):.1f}' height='{bh:.1f}' "
                         f"fill='{colour}' fill-opacity='0.6'><title>{_esc(names.get(cls, cls))}: {c}</title></rect>")
    xt = x(_logit(t))
    parts.append(f"<line class='threshold' x1='{xt:.1f}' x2='{xt:.1f}' y1='{PAD_T - 4}' y2='{PAD_T + ph}' "
                 f"stroke='#111827' stroke-width='2' stroke-dasharray='5 3'/>")
    parts.append(f"<text x='{xt + 4:.1f}' y='{PAD_T + 10}' fill='#111827'>threshold {t:.4f}</text>")
    for p in P_TICKS:
        z = _logit(p)
        if low <= z <= high:
            parts.append(f"<line x1='{x(z):.1f}' x2='{x(z):.1f}' y1='{PAD_T + ph}' y2='{PAD_T + ph + 4}' "
                         f"stroke='#6b7280'/><text x='{x(z):.1f}' y='{PAD_T + ph + 16}' text-anchor='middle' "
                         f"fill='#374151'>{p:g}</text>")
    parts.append(f"<text x='{PAD_L + pw / 2:.1f}' y='{PLOT_H - 8}' text-anchor='middle' fill='#374151'>"
                 f"p(defect) on validation, logit axis (end bars hold everything beyond)</text>")
    parts.append(f"<text x='12' y='{PAD_T + ph / 2:.1f}' transform='rotate(-90 12 {PAD_T + ph / 2:.1f})' "
                 f"text-anchor='middle' fill='#374151'>photos (log scale)</text></svg>")
    keys = []
    for k, cls in enumerate(order):
        colour = "#b91c1c" if cls == h.defect_class else "#15803d"
        if len(order) > 2:
            colour = CLASS_COLOURS[(0 if cls == h.defect_class else 1 + k) % len(CLASS_COLOURS)]
        n = sum(hist["counts"][cls])
        keys.append(f"<span style='margin-right:14px'><span style='display:inline-block; width:12px; height:12px; "
                    f"background:{colour}; opacity:.6; vertical-align:middle'></span> "
                    f"{_esc(names.get(cls, cls))} (<code>{_esc(cls)}</code>), {n} photos</span>")
    if band.get("low") is not None:
        keys.append(f"<span><span style='display:inline-block; width:12px; height:12px; background:#fde68a; "
                    f"vertical-align:middle'></span> needs-review band {band['low']:.3f} to {band['high']:.3f}</span>")
    inside = band.get("validation_in_band")
    note = (f" {inside} of {band.get('validation_n')} validation photos lie inside the band." if inside is not None
            else "")
    return (f"<div class='score-dist' id='score-dist-box'><div style='font-size:.9em; margin-bottom:4px'>"
            f"{''.join(keys)}</div>{''.join(parts)}<div class='muted' style='font-size:.85em'>Validation photos "
            f"by p(defect): the further each class sits from the dashed threshold, the larger the margin.{note}"
            f"</div></div>")


# ------------------------------------------------------------------------------------------------ callbacks

def on_load(handler: Any, mode: Any = None) -> tuple:
    """For the page-load event and a model switch: (heat-map radio update, colour bar) once the model is loaded; a
    model that failed to load leaves the radio as it is and says so."""
    import gradio as gr

    try:
        h = get_handler(handler)
    except ModelUnavailable as exc:
        return gr.update(), f"<div class='muted'>Model not available: {_esc(exc)}</div>"
    return mode_update(h, mode), legend_html(h, mode)


def score_distribution_for(handler: Any) -> str:
    """The Model tab's validation score distribution once the model is loaded (why not, when it failed to load)."""
    try:
        h = get_handler(handler)
    except ModelUnavailable as exc:
        return f"<div class='muted'>Model not available: {_esc(exc)}</div>"
    return score_distribution_html(h)


def legend_for(handler: Any, mode: Any = None) -> str:
    """The colour bar for ``mode`` once the model is loaded (the pending note before)."""
    if model_state(handler) != "ready":
        return PENDING
    return legend_html(get_handler(handler), mode)
