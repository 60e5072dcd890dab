"""The commands: ``inspectkit <command>`` (see :mod:`inspectkit.cli.main`) and the top-level scripts call these."""
