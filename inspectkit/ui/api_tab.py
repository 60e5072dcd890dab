"""The API tab: how to call the server from Python (``gradio_client``: ``/predict`` and ``/predict_batch``) and with
curl (``POST /api/inspect``), and the hidden components behind those two Gradio endpoints. Their names, parameters
and answers are a contract (scripts and docs call them): they do not change with the page's layout.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from inspectkit.limits import MAX_BATCH, MAX_UPLOAD_MB
from inspectkit.ui.common.support import api_predict, api_predict_batch

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


def build(handler: Any) -> None:
    """The API tab, and the ``/predict`` and ``/predict_batch`` endpoints on ``handler`` (always the shared model)."""

    def predict(image, threshold, heatmap, heatmap_mode):
        """Inspect one image: verdict, probabilities, threshold, latency in ms (and the heat map as base64 PNG:
        heatmap_mode 'defect-evidence', 'class-normalised' or empty for the model's default)."""
        return api_predict(handler, image, threshold, bool(heatmap), heatmap_mode)

    def predict_batch(images, threshold):
        """Inspect several images (at most MAX_BATCH): one result per image, bad files carry an error."""
        return api_predict_batch(handler, images, threshold)

    with gr.Tab("API", id="api"):
        gr.Markdown(API_DOC)
        # Components of the programmatic endpoints only (gradio_client), never shown.
        with gr.Column(visible=False):
            image = gr.File(label="image", file_count="single")
            images = gr.File(label="images", file_count="multiple")
            threshold = gr.Number(label="threshold", value=None)
            heatmap = gr.Checkbox(label="heatmap", value=False)
            heatmap_mode = gr.Textbox(label="heatmap_mode", value="")
            result = gr.JSON(label="result")
            results = gr.JSON(label="results")
            go = gr.Button("predict")
            go_batch = gr.Button("predict_batch")
    go.click(predict, [image, threshold, heatmap, heatmap_mode], result, api_name="predict")
    go_batch.click(predict_batch, [images, threshold], results, api_name="predict_batch")
