"""Give an existing checkpoint a fixed heat-map scale (and display names, and the validation score histogram for

The command lives in :mod:`inspectkit.cli.calibrate_heatmap` (also ``inspectkit calibrate-heatmap``); this file keeps ``python calibrate_heatmap.py`` working."""

import sys

from inspectkit.cli.calibrate_heatmap import main

if __name__ == "__main__":
    sys.exit(main())
