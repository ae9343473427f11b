"""The embedded default, run for real, against its stored numbers (tests/expected/default/, see stored_numbers.py).

* From the stored votes, exactly: every table and plotted number rebuilt by the workflow from the stored votes
  stores equals its stored copy byte for byte, on any CPU (counts and closed-form bounds of the same votes).
* From scratch, within stated bounds: `dvc repro` (= `make default`, stage by stage) trains and certifies anew in
  a clone (the `default_run` fixture, tests/conftest.py); per store at least 99% of the labels equal the stored
  votes' and every certified count is within one image (float kernels differ by CPU; measured and argued in
  stored_numbers.py), and the bounds are shown to catch a real change.
* The savings are exact: the same run with every saving off gives identical tables, figure data and per-image
  certified fields.

After a change that legitimately moves the numbers, `make refresh-default` stores them anew; commit the diff.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import stored_numbers as sn
import yaml
from conftest import ROOT, project_clone, run

from densepure.job import execution

STORED = sn.stored_files()
portable_cpu = pytest.mark.skipif(not execution.portable_cpu_env(),
                                  reason="the theory outputs are bit-identical only on x86-64 CPUs with AVX2")


def needs_portable(stored: Path):
    """The theory outputs are float arithmetic: exact under the portable kernels (x86-64 with AVX2) only."""
    return [portable_cpu] if stored.name.startswith(sn.THEORY) else []


@portable_cpu
def test_default_config_pins_the_math_libraries_to_avx2_kernels():
    """The jobs' environment (what common.smk sets) selects ATen's AVX2 kernels even on an AVX-512 CPU."""
    assert yaml.safe_load((ROOT / "config/config.yaml").read_text())["portable_cpu_numerics"] is True
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    env = {**os.environ, **execution.portable_cpu_env()}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "AVX2"


def test_stored_numbers_exist():
    assert len(STORED) >= 5, "tests/expected/default is missing: run `make refresh-default` and commit"
    stores = list((sn.EXPECTED / "votes").rglob("setting.json"))
    assert len(stores) >= 7 and list((sn.EXPECTED / "shards").rglob("*.tsv"))


# --- exact: from the stored votes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def from_stored_votes(tmp_path_factory) -> Path:
    """A clone whose votes and shard results are the stored ones, reported by `make report-from-votes` (no
    training, no certification)."""
    clone = project_clone(tmp_path_factory.mktemp("stored") / "repo")
    shutil.copytree(sn.EXPECTED / "votes", clone / sn.VOTES)
    shutil.copytree(sn.EXPECTED / "shards", clone / sn.SHARDS)
    run(["make", "report-from-votes"], clone)
    return clone


@pytest.mark.slow
@pytest.mark.parametrize("stored", [pytest.param(p, marks=needs_portable(p)) for p in STORED],
                         ids=[p.name for p in STORED])
def test_stored_votes_rebuild_every_stored_number_exactly(from_stored_votes, stored):
    fresh = from_stored_votes / STORED[stored]
    assert fresh.read_bytes() == stored.read_bytes(), f"{STORED[stored]} differs from {stored}"


# --- bounded: from scratch ----------------------------------------------------------------------------------------


@pytest.mark.slow
@portable_cpu
def test_default_from_scratch_is_within_the_bounds_of_the_stored_numbers(default_run):
    problems = sn.compare_run(default_run)
    assert not problems, "\n".join(problems)


def test_the_bounds_catch_a_count_off_by_two_and_two_percent_of_labels():
    """The check is not vacuous: one certified count off by 2 images, or 2% of one store's labels changed, is
    outside the bounds (a count off by 1 and 0.5% of labels are inside)."""
    cells = next(p for p in STORED if p.name.endswith("_cells.csv"))
    stored = pd.read_csv(cells)
    for delta, inside in ((1, True), (2, False)):
        fresh = stored.copy()
        fresh.loc[len(fresh) // 2, "count"] += delta
        assert (sn.count_differences(fresh, stored)[0] <= sn.COUNT_SLACK) == inside
    moved = stored.copy()
    moved["sigma"] = moved["sigma"] * 2
    moved["method_key"] = moved["method_key"][::-1].to_numpy()
    assert sn.count_differences(moved, stored)[0] > sn.COUNT_SLACK  # other rows: never within the bound


def test_the_label_bound_catches_changed_votes(tmp_path):
    store = next(p.parent for p in (sn.EXPECTED / "votes").rglob("setting.json"))
    name = store.relative_to(sn.EXPECTED / "votes")
    for share, inside in ((0.005, True), (0.02, False)):
        copy = tmp_path / f"{share}" / name
        shutil.copytree(store, copy)
        rng = np.random.default_rng(0)
        for path in copy.glob("*.npz"):
            with np.load(path) as data:
                labels, meta = data["labels"].copy(), data["meta"]
            computed = labels != np.iinfo(labels.dtype).max
            flip = computed & (rng.random(labels.shape) < share)
            labels[flip] = (labels[flip] + 1) % 10
            np.savez_compressed(path, labels=labels, meta=meta)
        agreement, n = sn.label_agreement(tmp_path / f"{share}", sn.EXPECTED / "votes")[str(name)]
        assert n > 0 and (agreement >= sn.LABELS_EQUAL) == inside, agreement


# --- the run's outputs ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_default_writes_every_artifact(default_run):
    for artifact in ("tableA", "table2"):
        for ext in ("csv", "md", "tex", "html"):
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


# --- the savings are exact on the default ---------------------------------------------------------------------------


NO_SAVINGS = {"savings": {"lazy_votes": False, "stop_abstain": False, "skip_hopeless": False,
                          "one_shot_from_densepure": False}}


def certified_fields(tsv: Path) -> list[tuple]:
    """What tables and figures use from a per-image TSV (label, correct, the radius of a correct image) and
    predict where the votes define it (None for a hopeless image)."""
    rows = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    predict = np.where(rows["stop"] == "hopeless", None, rows["predict"]) if "stop" in rows else rows["predict"]
    return list(zip(rows["idx"], rows["label"], rows["correct"], np.where(rows["correct"] == "1", rows["radius"], ""),
                    predict))


@pytest.mark.slow
def test_every_saving_off_gives_identical_tables_figures_and_certified_fields(default_run, tmp_path):
    """The same default (same trained models) certified with every saving off: every table cell, figure point and
    per-image certified field equals the run with them on, and the savings computed fewer votes."""
    full = tmp_path / "full"
    shutil.copytree(default_run, full, symlinks=True, ignore=shutil.ignore_patterns("default", ".snakemake"))
    shutil.copytree(default_run / "work/default/models", full / "work/default/models", dirs_exist_ok=True)
    (tmp_path / "no-savings.yaml").write_text(yaml.safe_dump(NO_SAVINGS))
    run(["snakemake", "--cores", "2", "all", "--configfile", str(tmp_path / "no-savings.yaml")], full)
    for stored, written in STORED.items():
        if not stored.name.startswith(sn.THEORY):
            assert (full / written).read_bytes() == (default_run / written).read_bytes(), written
    tsvs = sorted((default_run / "results/default/certify").rglob("*.tsv"))
    assert len(tsvs) >= 10
    for tsv in tsvs:
        other = full / tsv.relative_to(default_run)
        saved, complete = certified_fields(tsv), certified_fields(other)
        assert [r[:4] for r in saved] == [r[:4] for r in complete], tsv
        assert all(a[4] == b[4] for a, b in zip(saved, complete) if a[4] is not None), tsv
    computed = {name: sum(int((np.load(p)["labels"] != 255).sum()) for p in (root / sn.VOTES).rglob("*.npz"))
                for name, root in (("saved", default_run), ("full", full))}
    assert computed["saved"] < 0.8 * computed["full"], computed
