"""What every tab's builder gets of the page around it, and the event options the tabs share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Events that never run the network (re-deciding, re-drawing, a click, a page load): no need to queue them behind
#: an inspection, and no API endpoint.
LIGHT = {"api_visibility": "private", "concurrency_limit": None}
#: Events callable from gradio_client by name but left out of the API page (the documented ones are /predict and
#: /predict_batch).
HIDDEN = {"api_visibility": "undocumented"}


@dataclass
class Page:
    """The page a tab is built into: the Blocks (for load events), this session's model choice (a ``gr.State``:
    None for the shared model, else the adapted or uploaded model it switched to; every tab that shows a model's
    results listens to it changing), the status line above the tabs, and the tabs (to bring one to the front)."""

    demo: Any
    model: Any
    status: Any
    tabs: Any
