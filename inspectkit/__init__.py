"""Shared code for the casting inspection product: data, preprocessing, model, checkpoint, metrics.

The top-level scripts (train.py, evaluate.py, audit.py, inference_handler.py, app.py) are thin entry
points; everything they share lives here so training and inference can never drift apart.
"""

__version__ = "0.1.0"
