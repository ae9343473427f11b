"""The report rules as Snakemake runs them, on small synthetic result TSVs (only the report rules named may run):
outputs, a changed artifact spec rebuilding the table, and Snakemake's one-page report with the tables (the theory
tables too) and captions that say what each figure plots."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from report_helpers import abstain, ok, wrong

from densepure.plan import grid

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def snakemake(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env, timeout=300,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _results_for(config: dict, artifact: str, root: Path) -> None:
    """One TSV per aggregate the artifact reads, at the path the aggregate rule writes (3 kinds of rows)."""
    from densepure.job.results import SETTING_COLUMNS, TSV_COLUMNS

    for agg in grid.aggregates(config, artifact):
        ids = grid.image_ids(config, agg.key.dataset, agg.images)
        data = config["datasets"][agg.key.dataset]
        make = [ok, ok, abstain, wrong] if agg.key.one_shot else [ok, ok, ok, abstain]
        lines = ["\t".join(TSV_COLUMNS + SETTING_COLUMNS)]
        for j, i in enumerate(ids):
            row = make[j % 4](i) if make[j % 4] is abstain else make[j % 4](i, "0.2")
            lines.append("\t".join(map(str, [*row, "0:00:01", agg.key.dataset, agg.key.classifier, agg.key.method,
                                             agg.key.sigma, agg.key.b, agg.K, data["N0"], data["N"], 0.001, "fp32"])))
        path = root / f"results/{config['run']}/certify/{agg.key.name}/K{agg.K}-{agg.images}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_table_rule_rebuilds_on_a_changed_spec_and_reports(tmp_path):
    for name in ("Snakefile",):
        shutil.copy(REPO / name, tmp_path / name)
    for folder in ("workflow", "config", "results/paper"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    _results_for(config, "tableA", tmp_path)
    allowed = ["--allowed-rules", "table", "table_A", "--"]  # then the target
    done = snakemake(tmp_path, "--cores", "1", *allowed, "table_A")
    assert done.returncode == 0, done.stdout[-3000:]
    tables = tmp_path / "results/default/tables"
    for name in ("tableA.csv", "tableA.md", "tableA.tex", "tableA.html", "tableA_cells.csv", "tableA_paired.csv"):
        assert (tables / name).stat().st_size > 0, name
    assert "Ours minus the one-shot baseline" in (tables / "tableA.md").read_text()
    # nothing changed: nothing to do; another radius in the spec: the table is rebuilt because its params changed
    assert "Nothing to be done" in snakemake(tmp_path, "-n", "--cores", "1", *allowed, "table_A").stdout
    changed = yaml.safe_load((tmp_path / "config/config.yaml").read_text())
    changed["artifacts"]["tableA"]["panels"][0]["radii"] = [0.0, 0.25, 0.5]
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(changed))
    dry = snakemake(tmp_path, "-n", "--cores", "1", "--configfile", "changed.yaml", *allowed, "table_A")
    assert dry.returncode == 0 and "rule table:" in dry.stdout, dry.stdout[-3000:]
    assert "Params have changed since last execution" in dry.stdout
    page = snakemake(tmp_path, "--report", "report.html", *allowed, "table_A")
    assert page.returncode == 0, page.stdout[-3000:]
    html = (tmp_path / "report.html").read_text()
    assert "tableA.html" in html and "Table tableA of run" in html


def _captions(html: str) -> dict[str, str]:
    """Each reported file's caption in Snakemake's report page (its JSON of results)."""
    import json
    import re

    found = {}
    for match in re.finditer(r'"filename": ("(?:[^"\\]|\\.)*")(.{0,400}?)"caption": ("(?:[^"\\]|\\.)*")', html, re.S):
        found[json.loads(match.group(1))] = json.loads(match.group(3))
    return found


@pytest.mark.slow
def test_report_has_the_theory_tables_and_captions_that_say_what_is_plotted(tmp_path):
    for name in ("Snakefile",):
        shutil.copy(REPO / name, tmp_path / name)
    for folder in ("workflow", "config", "results/paper"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    _results_for(config, "fig3", tmp_path)
    small = yaml.safe_load((REPO / "config/config.yaml").read_text())  # the theory section, smaller (seconds)
    small["theory"]["thm31"].update(bs=[2, 5], samples=500)
    small["theory"]["fig2"].update(pixels=60, spacing=0.05)
    small["theory"]["radius"].update(sigmas=[0.25], Ks=[1, 3], N0=20, N=100)
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(small))
    rules = ["--configfile", "small.yaml", "--allowed-rules", "figure", "fig_3", "theory_thm31", "theory_fig2",
             "theory_radius", "theory", "--", "fig_3", "theory"]
    done = snakemake(tmp_path, "--cores", "2", *rules)
    assert done.returncode == 0, done.stdout[-3000:]
    page = snakemake(tmp_path, "--report", "report.html", *rules)
    assert page.returncode == 0, page.stdout[-3000:]
    captions = _captions((tmp_path / "report.html").read_text())
    assert {"fig3.png", "fig2.png", "theory_radius.png", "theory_thm31.html", "theory_radius.html"} <= set(captions)
    assert "<table>" in (tmp_path / "results/default/tables/theory_thm31.html").read_text()
    for name, caption in captions.items():  # each caption says what is shown, none sends the reader elsewhere
        assert not any(pointer in caption for pointer in ("docs/", "README", "--help", "see the")), (name, caption)
    assert "certified accuracy (%) against the L2 radius of Ours (b = 5, K = 10)" in captions["fig3.png"]
    assert "robust region D(G(x0); t)" in captions["fig2.png"] and "sigma = 0.25" in captions["theory_radius.png"]
    assert "Theorem 3.1" in captions["theory_thm31.html"]
