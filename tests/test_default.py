"""The embedded default, run for real: the whole workflow on the CPU, compared with the stored numbers.

`make default` writes its tables and figures into results/default/ and paper_figures/default/, which are committed.
This test runs the same workflow in a scratch copy of the repository and compares every table cell
(`results/default/tables/*_cells.csv`) and every plotted number (`paper_figures/default/*_data.csv`) with the
stored ones. Tolerance: zero. Training and certification are seeded, run with one thread per job and never
depend on batch composition or job order, so the same machine type reproduces them bit for bit. If a change
legitimately moves the numbers, refresh them with `make refresh-default` and commit the diff.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
STORED = [*sorted((ROOT / "results/default/tables").glob("*_cells.csv")),
          *sorted((ROOT / "paper_figures/default").glob("*_data.csv"))]


@pytest.fixture(scope="module")
def rerun(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("default")
    for name in ("Snakefile", "workflow", "config", "results/paper"):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, work / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "all"], cwd=work, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return work


@pytest.mark.slow
def test_stored_numbers_exist():
    assert len(STORED) >= 5, "results/default is missing: run `make refresh-default` and commit"


@pytest.mark.slow
@pytest.mark.parametrize("stored", STORED, ids=[p.name for p in STORED])
def test_default_reproduces_stored_numbers(rerun, stored):
    fresh = rerun / stored.relative_to(ROOT)
    pd.testing.assert_frame_equal(pd.read_csv(fresh), pd.read_csv(stored), check_exact=True)


@pytest.mark.slow
def test_default_writes_every_artifact(rerun):
    for artifact in ("tableA", "table2"):
        for ext in ("csv", "md", "tex"):
            assert (rerun / f"results/default/tables/{artifact}.{ext}").stat().st_size > 0
    for artifact in ("fig3", "fig4_left", "fig4_right"):
        for ext in ("png", "pdf"):
            assert (rerun / f"paper_figures/default/{artifact}.{ext}").stat().st_size > 0
