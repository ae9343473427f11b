#!/usr/bin/env bash
# GPU check: `densepure certify` reference-equivalent vs fast mode on one GPU, full-size networks with random weights
# (ADM-256 + BEiT-large-512, the CIFAR-10 50M UNet + ViT-B/16), then the paper's cost at the measured rates with and
# without the exact savings (their share of UNet and classifier calls, applied to those rates: the savings change
# what is computed, not how fast). One command, at most 8 minutes:
#
#   bash benchmarks/gpu_check.sh [OUT_DIR [ARGS...]]   # OUT_DIR: $OUT if set, else benchmarks/results; ARGS go to
#                                                      # benchmarks/throughput.py (e.g. --smoke for a CPU try)
#
# Writes OUT_DIR/throughput.json (rates for `densepure estimate --rates`, everything measured under `benchmark`) and
# OUT_DIR/throughput.md (the table printed here). torch.compile keeps its kernels in $DENSEPURE_COMPILE_CACHE
# (default work/torch-compile): a second run on the same machine skips most of the compilation.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-benchmarks/results}}
shift $(( $# > 0 ? 1 : 0 ))
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
export DENSEPURE_COMPILE_CACHE=${DENSEPURE_COMPILE_CACHE:-work/torch-compile}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
# The script plans 420 s itself (skipping what does not fit, JSON after every stage); the hard limit is a backstop.
timeout 465 "$py" benchmarks/throughput.py --budget 420 --out "$out/throughput.json" "$@" > "$out/throughput.md"
status=$?
if [ $status -ne 0 ] && [ -f "$out/throughput.json" ]; then
    echo "benchmark stopped (status $status); stages finished before that:"
    "$py" benchmarks/throughput.py --print "$out/throughput.json" > "$out/throughput.md"
fi
cat "$out/throughput.md"
if [ -f "$out/throughput.json" ]; then
    for savings in --no-savings --savings; do
        echo "== the paper's cost at these rates ($savings)"
        "$py" -m densepure estimate --configfile config/paper.yaml --rates "$out/throughput.json" $savings \
            | grep -E "^(total|throughputs|With the savings)|stores, (assumed|measured)"
    done
fi
exit $status
