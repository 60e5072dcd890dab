"""``python -m inspectkit.cli <command>``: the ``inspectkit`` command without installing its script."""

import sys

from inspectkit.cli.main import main

sys.exit(main())
