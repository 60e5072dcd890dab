"""Write (or rewrite) the ONNX graph the app serves without torch, beside its checkpoint, bound to it.

The command lives in :mod:`inspectkit.cli.export_onnx` (also ``inspectkit export-onnx``); this file keeps ``python export_onnx.py`` working."""

import sys

from inspectkit.cli.export_onnx import main

if __name__ == "__main__":
    sys.exit(main())
