"""``inspectkit``: one command for everything the product does, with a subcommand per job.

    inspectkit app                                   # the Gradio app on http://localhost:7860
    inspectkit train --data ../shared/data/casting   # two-stage transfer learning -> final_best_model.pt
    inspectkit adapt --data photos-of-line-b/        # adapt a model to a new line
    inspectkit evaluate --data ../shared/data/casting
    inspectkit batch /data/shift-0412 --out shift-0412.csv
    inspectkit <command> --help

Each subcommand is one module of :mod:`inspectkit.cli`, imported only when it runs, so ``inspectkit --help`` needs
neither torch nor Gradio. The top-level scripts (``python train.py``, ...) call the same functions.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

#: subcommand -> (module with ``main(argv)``, one line of help); users' commands first, then the maintainers'
COMMANDS = {
    "app": ("inspectkit.cli.app", "serve the Gradio app (Inspect, Model, Adapt tabs) and the JSON API"),
    "train": ("inspectkit.cli.train", "train the model (two-stage transfer learning); writes final_best_model.pt"),
    "adapt": ("inspectkit.cli.adapt", "adapt a trained model to a new line from a few labelled photos"),
    "evaluate": ("inspectkit.cli.evaluate", "evaluate a checkpoint on a test split; writes reports/"),
    "batch": ("inspectkit.batch.job", "inspect a whole shift of photos into CSV, JSON Lines or Parquet"),
    "export-onnx": ("inspectkit.cli.export_onnx", "write the ONNX graph the lean install serves"),
    "fit-guard": ("inspectkit.cli.fit_guard", "fit a checkpoint's guard (UNUSABLE) on its own training photos"),
    "set-threshold": ("inspectkit.cli.set_threshold", "change a checkpoint's decision threshold"),
    "calibrate-heatmap": ("inspectkit.cli.calibrate_heatmap", "give a checkpoint its fixed heat-map scale"),
    "compare-models": ("inspectkit.cli.compare_models", "compare checkpoints on the same validation photos"),
    "audit": ("inspectkit.cli.audit", "list near-duplicates across a data set's splits"),
    "localize": ("inspectkit.cli.localize", "score the heat maps against defect boxes (NEU-DET)"),
    "deploy-space": ("inspectkit.cli.deploy_space", "upload the app to a Hugging Face Space"),
}


def usage() -> str:
    """The command's help: its subcommands, one line each."""
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items())
    return f"usage: inspectkit <command> [options]\n\ncommands:\n{rows}\n\n'inspectkit <command> --help' for its options."


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``inspectkit <command> ...``; returns the subcommand's exit status (2 for an unknown command)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    if args[0] == "--version":
        from inspectkit import __version__

        print(f"inspectkit {__version__}")
        return 0
    if args[0] not in COMMANDS:
        print(f"inspectkit: error: unknown command {args[0]!r}; one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    sys.argv[0] = f"inspectkit {args[0]}"  # argparse's usage line names the subcommand
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
