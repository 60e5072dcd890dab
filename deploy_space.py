"""Publish the app as a Hugging Face Space: create the Space repo and upload exactly the files it needs.

The command lives in :mod:`inspectkit.cli.deploy_space` (also ``inspectkit deploy-space``); this file keeps ``python deploy_space.py`` working."""

import sys

from inspectkit.cli.deploy_space import main

if __name__ == "__main__":
    sys.exit(main())
