"""Train the inspection model: two-stage transfer learning of a torchvision backbone; writes final_best_model.pt.

The command lives in :mod:`inspectkit.cli.train` (also ``inspectkit train``); this file keeps ``python train.py`` working."""

import sys

from inspectkit.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
