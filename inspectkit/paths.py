"""Where the package sits: the checkout around it holds the committed model, examples/ and reports/."""

from pathlib import Path

#: The package's own folder (shipped to a local Ray's workers).
PACKAGE = Path(__file__).resolve().parent
#: The folder the package sits in: a checkout (with final_best_model.pt, examples/, reports/) or site-packages.
CHECKOUT = PACKAGE.parent
