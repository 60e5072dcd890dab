"""What the Inspect tab says about a job as a whole: the progress bar, the drift monitor's line, the summary's counts,
and which photos the gallery shows in which order (defects, UNUSABLE and needs-review photos first). Pure functions
of stored rows: nothing here runs the network.
"""

from __future__ import annotations

import html
from typing import Any

from inspectkit.ui.common.render import band_text, fmt_p, reason_counts, unusable_count_html, verdict_text
from inspectkit.verdicts import UNUSABLE

#: Photos shown in the gallery, defects, UNUSABLE and needs-review photos first (the table and the CSV have all).
GALLERY_MAX = 200
#: Error messages listed under the summary (the table and the CSV have every one).
ERRORS_LISTED = 10


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def message_html(text: str, kind: str = "muted") -> str:
    """A message in the progress line's place: ``kind`` "error" (a refused job) or "muted"."""
    return f"<div class='job-msg {kind}'>{_esc(text)}</div>"


def progress_html(done: int, total: int, seconds: float, refused: int = 0, stopped: bool = False) -> str:
    """The progress bar: photos done of the total, photos per second and the time left at that rate ("done in",
    or "stopped" once the user stopped the job)."""
    inspected = max(done - refused, 0)
    rate = inspected / seconds if seconds > 0 and inspected else 0.0
    left = (total - done) / rate if rate > 0 else None
    if stopped and done < total:
        tail = f"stopped after {seconds:.1f} s; the results so far are kept"
    elif done >= total:
        tail = f"done in {seconds:.1f} s"
    elif left is None:
        tail = "starting..."
    else:
        tail = f"about {left:.0f} s left" if left < 120 else f"about {left / 60:.1f} min left"
    speed = f" &middot; {rate:.1f} photos/s" if rate else ""
    return (f"<div class='job-progress'><progress value='{done}' max='{max(total, 1)}'></progress> "
            f"<b>{done:,} / {total:,}</b> photos{speed} &middot; {tail}</div>")


def drift_html(drift: dict | None) -> str:
    """The drift monitor's word, the first line of the summary: "DRIFT ALARM from photo R (name): what changed",
    "No drift over N photos", or why it is off. Empty before the first photo is inspected."""
    if not drift:
        return ""
    if not drift.get("on"):
        return f"<div class='drift off'>Drift monitor off: {_esc(drift.get('off_reason'))}</div>"
    if not drift.get("alarm"):
        n = drift.get("photos", 0)
        return (f"<div class='drift steady'>No drift over {n:,} photo{'s' if n != 1 else ''} (compared with the "
                "model's validation photos)</div>")
    where = f"photo {drift['photo']:,}" + (f" ({_esc(drift['name'])})" if drift.get("name") else "")
    items = []
    for c in drift.get("changed") or []:
        rate = "n/a" if c.get("recent_rate") is None else f"{c['recent_rate']:.0%}"
        from_ = f", from photo {c['photo']:,}" if c.get("photo") else ""
        items.append(f"<li>{_esc(c['meaning'])}: {rate} of the last {drift.get('window', 0):,} photos against "
                     f"{c['reference_rate']:.0%} on validation{from_}</li>")
    what = "; ".join(_esc(c["meaning"]) for c in drift.get("changed") or [])
    return (f"<div class='drift alarm' role='alert'><span class='drift-head'>DRIFT ALARM from {where}</span>: {what}. "
            f"The photos have changed from those the model was validated on: check the lighting, the camera and "
            f"the framing before trusting the verdicts.<ul>{''.join(items)}</ul></div>")


def summary_html(rows: list[dict], verdicts: list, thr: float | None, band: dict | None, guard_on: bool = False,
                 drift: dict | None = None, reviews: list | None = None) -> str:
    """The drift monitor's word first (:func:`drift_html`), then counts over every photo: DEFECT, OK, UNUSABLE
    with its reasons (shown when the model has a guard or any photo is), needs review, files not inspected, the
    threshold; what the gallery leaves out; the first error messages."""
    n = len(rows)
    n_def = sum(1 for v in verdicts if str(v).upper() == "DEFECT")
    n_ok = sum(1 for v in verdicts if str(v).upper() == "OK")
    n_unusable = sum(1 for v in verdicts if v == UNUSABLE)
    bad = [r for r in rows if r.get("error")]
    parts = [f"<b>{n:,}</b> photo{'s' if n != 1 else ''}", f"<span class='count defect'>{n_def:,} DEFECT</span>",
             f"<span class='count ok'>{n_ok:,} OK</span>"]
    if n_unusable or guard_on:
        parts.append(unusable_count_html(n_unusable, reason_counts(rows, verdicts)))
    other = n - n_def - n_ok - n_unusable - len(bad)
    if other:
        parts.append(f"{other:,} other")
    if bad:
        parts.append(f"<span class='count error'>{len(bad):,} not inspected</span>")
    if band is not None and reviews is not None:
        n_rev = sum(1 for r in reviews if r)
        parts.append(f"<span class='count review'>{n_rev:,} need{'s' if n_rev == 1 else ''} review</span> "
                     f"(band {band_text(band)})")
    parts.append(f"threshold {fmt_p(thr)}")
    out = drift_html(drift) + "<div class='summary'>" + " &middot; ".join(parts) + "</div>"
    if n > GALLERY_MAX:
        out += (f"<div class='muted gallery-note'>The gallery shows {GALLERY_MAX} of the {n:,} photos: defects, "
                "UNUSABLE and needs-review photos first. The table and the CSV have every photo.</div>")
    if bad:
        more = f"<li>... and {len(bad) - ERRORS_LISTED:,} more (see the table)</li>" if len(bad) > ERRORS_LISTED else ""
        out += ("<ul class='errors'>" + "".join(f"<li>{_esc(r['error'])}</li>" for r in bad[:ERRORS_LISTED])
                + more + "</ul>")
    return out


def priority(row: dict, verdict: str | None = None, review: bool | None = None) -> tuple:
    """Gallery order: DEFECT needing review, DEFECT, UNUSABLE (a person must look: most novel first), OK needing
    review, errors, OK; within the others, the defect probability from high to low (so the clearest defects lead,
    and the OKs nearest the threshold)."""
    v = row.get("verdict") if verdict is None else verdict
    if v == UNUSABLE:
        return (2, -(row.get("novelty") or 0.0))
    review = row.get("review") if review is None else review
    group = {("DEFECT", True): 0, ("DEFECT", False): 1, ("OK", True): 3, ("ERROR", False): 4}.get((v, bool(review)), 5)
    return (group, -(row.get("defect_probability") or 0.0))


def gallery_order(rows: list[dict], verdicts: list, reviews: list, limit: int | None = None) -> list[int]:
    """The positions (in ``rows``) of the photos the gallery shows, in its order (:func:`priority`)."""
    order = sorted(range(len(rows)), key=lambda i: (priority(rows[i], verdicts[i], reviews[i]), i))
    return order[:GALLERY_MAX if limit is None else limit]


def caption(row: dict, verdict: str, review: bool | None) -> str:
    """A gallery caption: "name — DEFECT (p=0.912), needs review", "name — UNUSABLE — too dark (p=0.200, not
    judged)", "name — ERROR"."""
    if row.get("error"):
        return f"{row['name']} \u2014 ERROR"
    p = row.get("defect_probability")
    if verdict == UNUSABLE:
        return (f"{row['name']} \u2014 {verdict_text(UNUSABLE, row.get('unusable_reason'))}"
                + (f" (p={p:.3f}, not judged)" if p is not None else ""))
    return (f"{row['name']} \u2014 {verdict}" + (f" (p={p:.3f})" if p is not None else "")
            + (", needs review" if review else ""))
