"""inspectkit: visual inspection of metal castings, OK / DEFECT / UNUSABLE with a heat map of the defect evidence.

The package is in layers (docs/architecture.md): a small core at this level (verdicts, limits, metrics, the
network, the guard, ...), then ``data``, ``heatmap``, ``inference``, ``engine`` and ``batch``, ``serve``, ``ui``
and ``cli``; a module imports only its own package or a lower layer. ``inspectkit --help`` lists the commands;
the top-level scripts of a checkout (app.py, train.py, ...) are doors into them.
"""

__version__ = "0.1.0"
