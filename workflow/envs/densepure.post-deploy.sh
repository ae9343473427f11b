#!/usr/bin/env bash
# Run by Snakemake (--use-conda) inside the new environment, from the working directory (the repository root):
# install the densepure package whose dependencies densepure.yaml pins.
set -euo pipefail
python -m pip install --no-deps -e .
