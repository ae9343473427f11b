"""``python -m densepure``: the command line (what the workflow's rules run, with the Python that runs Snakemake)."""

import sys

from densepure.cli.main import main

sys.exit(main())
