"""Per-stage breakdown of the embedded default from Snakemake's benchmark files (work/default/benchmarks/).

Usage: python benchmarks/default_stages.py [BENCHMARK_DIR]. Prints, per stage (rule), the number of jobs, the
summed job seconds and the longest job; the wall time of `make default` is what `time` printed around it.
"""

import sys
from pathlib import Path

import pandas as pd


def stage_table(root: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        seconds = float(pd.read_csv(path, sep="\t")["s"].iloc[-1])
        rows.append({"stage": path.relative_to(root).parts[0], "job": str(path.relative_to(root)), "s": seconds})
    df = pd.DataFrame(rows)
    return df.groupby("stage")["s"].agg(jobs="count", total_s="sum", longest_s="max").round(1)


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "work/default/benchmarks")
    table = stage_table(root)
    print(table.to_markdown())
    print(f"\nsum of job seconds: {table['total_s'].sum():.0f} (on 2 cores, jobs run two at a time)")
