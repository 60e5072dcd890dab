"""How a command names itself in its error messages: ``inspectkit adapt`` when run through the ``inspectkit``
command, else the top-level script (``adapt.py``), so a message points at what the user typed."""

from __future__ import annotations

import sys


def command_name(script: str) -> str:
    """``sys.argv[0]`` when it is an ``inspectkit <command>`` (set by :mod:`inspectkit.cli.main`), else ``script``."""
    prog = sys.argv[0] if sys.argv else ""
    return prog if prog.startswith("inspectkit ") else script


def error(script: str, message: str) -> None:
    """Print ``<command>: error: <message>`` to stderr, as argparse does."""
    print(f"{command_name(script)}: error: {message}", file=sys.stderr)
