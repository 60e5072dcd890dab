"""``inspectkit app``: serve the Gradio app and the JSON API with the committed model (or INSPECT_MODEL_*)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Serve on GRADIO_SERVER_NAME/GRADIO_SERVER_PORT (or PORT), default 0.0.0.0:7860, until interrupted."""
    argparse.ArgumentParser(prog="inspectkit app", description=__doc__).parse_args(argv)
    from inspectkit.ui.app import main as serve

    serve()
    return 0
