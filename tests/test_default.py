"""The embedded default, run for real: the whole workflow on the CPU, compared with the stored numbers.

`dvc repro` (= `make default`'s Snakemake run, stage by stage) computes the default from scratch in a clone of
the repository (the `default_run` fixture, tests/conftest.py). Every table (`results/default/tables/*.csv`: cells,
formatted tables, the theory tables) and every plotted number (`paper_figures/default/*_data.csv`) must equal the
stored copy under tests/expected/default/. Tolerance: zero. Training and certification are seeded, run with one
thread per job and never depend on batch composition or job order, and the default's `portable_cpu_numerics` pins
the math libraries to the same AVX2 kernels on every CPU, so any x86-64 machine with AVX2 reproduces them bit for
bit (without the pinning, an AVX-512/AMX Xeon trained other models and moved a few radii). If a change legitimately
moves the numbers, refresh them with `make refresh-default` and commit the diff.
"""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT
from densepure import execution

EXPECTED = Path(__file__).parent / "expected/default"
# stored copy -> where the run writes it
STORED = {**{p: Path("results/default/tables") / p.name for p in sorted((EXPECTED / "tables").glob("*.csv"))},
          **{p: Path("paper_figures/default") / p.name for p in sorted((EXPECTED / "figures").glob("*.csv"))}}
portable_cpu = pytest.mark.skipif(not execution.portable_cpu_env(),
                                  reason="the stored numbers are bit-identical only on x86-64 CPUs with AVX2")


@portable_cpu
def test_default_config_pins_the_math_libraries_to_avx2_kernels():
    """The jobs' environment (what common.smk sets) selects ATen's AVX2 kernels even on an AVX-512 CPU."""
    assert yaml.safe_load((ROOT / "config/config.yaml").read_text())["portable_cpu_numerics"] is True
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    env = {**os.environ, **execution.portable_cpu_env()}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "AVX2"


@pytest.mark.slow
def test_stored_numbers_exist():
    assert len(STORED) >= 5, "tests/expected/default is missing: run `make refresh-default` and commit"


@pytest.mark.slow
@portable_cpu
@pytest.mark.parametrize("stored", STORED, ids=[p.name for p in STORED])
def test_default_reproduces_stored_numbers(default_run, stored):
    fresh = default_run / STORED[stored]
    pd.testing.assert_frame_equal(pd.read_csv(fresh), pd.read_csv(stored), check_exact=True)


@pytest.mark.slow
def test_default_writes_every_artifact(default_run):
    for artifact in ("tableA", "table2"):
        for ext in ("csv", "md", "tex"):
            assert (default_run / f"results/default/tables/{artifact}.{ext}").stat().st_size > 0
    for artifact in ("fig3", "fig4_left", "fig4_right"):
        for ext in ("png", "pdf"):
            assert (default_run / f"paper_figures/default/{artifact}.{ext}").stat().st_size > 0


@pytest.mark.slow
def test_every_stored_number_is_rebuilt(default_run):
    """The stored copy covers every table and figure the run writes (a new artifact needs `make refresh-default`)."""
    written = {p.relative_to(default_run) for p in (default_run / "results/default/tables").glob("*.csv")}
    written |= {p.relative_to(default_run) for p in (default_run / "paper_figures/default").glob("*_data.csv")}
    assert written == set(STORED.values())


@pytest.mark.slow
def test_cpu_benchmark_breaks_the_run_down_by_stage(default_run):
    """benchmarks/default_stages.py (the CPU benchmark of the default's stages) reads the run's Snakemake benchmark
    files: one row per stage, one job per certification shard, table and figure."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/default_stages.py"), "work/default/benchmarks"],
                         cwd=default_run, capture_output=True, text=True, check=True).stdout
    rows = {line.split("|")[1].strip(): line.split("|")[2:5] for line in out.splitlines()[2:] if line.startswith("|")}
    assert set(rows) == {"train", "certify", "aggregate", "table", "figure", "theory"}
    shards = list((default_run / "work/default/shards").rglob("*.tsv"))
    tables = list((default_run / "results/default/tables").glob("table*.tex"))
    figures = list((default_run / "paper_figures/default").glob("fig[34]*.png"))  # fig2 is a theory job
    assert [int(rows[stage][0]) for stage in ("certify", "table", "figure")] == [len(shards), len(tables),
                                                                                len(figures)]
    assert all(float(total) > 0 for _, total, _ in rows.values())
