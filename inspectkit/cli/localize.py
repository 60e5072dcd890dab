"""Measure how well Grad-CAM heat maps point at the real defects (boxes or masks) on a checkpoint's test split.

    python localize.py --checkpoint runs/neu-det/model.pt --data ../shared/data/neu-det --out reports/neu-det

Pointing game, energy inside the defect region (each next to its chance level), and the model-randomisation
sanity check; writes localization.json and localization.md. Exit status 1 when the sanity check fails.
See inspectkit/engine/localization.py.
"""

import sys

from inspectkit.engine.localization import main

if __name__ == "__main__":
    sys.exit(main())
