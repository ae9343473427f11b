"""`snakemake` with no target does the default config's `all`: from the repository root (the root Snakefile includes
workflow/Snakefile, whose `default_target` Snakemake ignores in an included file, so the root file declares its own),
with `-s workflow/Snakefile`, and as a deployed module; `snakemake --report report.html` with no target reports what
`all` reports once the outputs exist, and before any run fails with Snakemake's one-line message, not a traceback.

Every run happens in a copy of the repository's tracked files (the Snakefile writes the effective config into its
work folder at parse time) with the Snakemake of the running interpreter, its bin folder first on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STORED = REPO / "tests" / "expected" / "default"  # the embedded default's stored votes and shard TSVs


def tracked_copy(dest: Path) -> Path:
    """The repository's tracked files (as they are in the working tree) copied into ``dest``."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    for name in filter(None, names):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is left out
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def env() -> dict[str, str]:
    environment = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    environment.pop("SNAKEMAKE_PROFILE", None)  # a user's cluster profile must not change the plan
    return environment


def snakemake(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``snakemake ARGS`` in ``cwd``; stdout and stderr together."""
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env(), timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


RULE_LINE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
FIELD_LINE = re.compile(r"^    (input|output): (.*)$")


def planned(cwd: Path, *args: str) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """The jobs a dry run plans, as (rule, sorted inputs, sorted outputs), sorted; fails the test on a non-zero
    exit."""
    result = snakemake(cwd, "-n", "--cores", "1", *args)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Traceback" not in result.stdout, result.stdout[-3000:]
    jobs, current = [], None
    for line in result.stdout.splitlines():
        if m := RULE_LINE.match(line):
            current = {"rule": m.group(1), "input": "", "output": ""}
            jobs.append(current)
        elif current is not None and (m := FIELD_LINE.match(line)):
            current[m.group(1)] = m.group(2)
        elif not line.startswith("    "):
            current = None

    def files(text: str) -> tuple[str, ...]:
        return tuple(sorted(f.removesuffix(" (cached)") for f in text.split(", ") if f))

    return sorted((job["rule"], files(job["input"]), files(job["output"])) for job in jobs)


def rules(jobs) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rule, _, _ in jobs:
        counts[rule] = counts.get(rule, 0) + 1
    return counts


def split_target(jobs, target: str):
    """The inputs of the one ``target`` job, and every other job."""
    targets = [inputs for rule, inputs, _ in jobs if rule == target]
    assert len(targets) == 1, rules(jobs)
    return targets[0], [job for job in jobs if job[0] != target]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return tracked_copy(tmp_path_factory.mktemp("snakefile") / "repo")


@pytest.fixture(scope="module")
def planned_all(repo):
    """A dry run of `all` (the target everyone agrees on) from the repository root."""
    jobs = planned(repo, "all")
    counts = rules(jobs)  # the embedded default: training, certification and every artifact, not an empty plan
    assert counts["all"] == 1 and counts["train_diffusion"] == counts["train_classifier"] == 1, counts
    assert counts["certify"] > 1 and counts["table"] >= 1 and counts["figure"] >= 1, counts
    return jobs


def test_no_target_from_the_root_plans_all(repo, planned_all):
    """`snakemake -n` with no target plans the jobs of `snakemake -n all`; its one target job (the root Snakefile's
    `default`) asks for exactly the files `all` asks for."""
    jobs = planned(repo)
    all_inputs, all_jobs = split_target(planned_all, "all")
    default_inputs, default_jobs = split_target(jobs, "default")
    assert default_inputs == all_inputs and len(all_inputs) > 10
    assert default_jobs == all_jobs


def test_workflow_snakefile_alone_plans_all(repo, planned_all):
    """The catalog's own entry point, `snakemake -s workflow/Snakefile -n`, plans `all` itself."""
    assert planned(repo, "-s", "workflow/Snakefile") == planned_all


def test_a_deployed_module_plans_all(repo, planned_all, tmp_path):
    """What snakedeploy writes in another folder: a Snakefile declaring workflow/Snakefile as a module and a copy of
    config/. With no target, `snakemake -n` plans the module's `all`, the same jobs as from the repository root."""
    deployed = tmp_path / "deployed"
    shutil.copytree(repo / "config", deployed / "config")
    (deployed / "Snakefile").write_text(f"""configfile: "config/config.yaml"


module densepure:
    snakefile:
        "{repo / "workflow" / "Snakefile"}"
    config:
        config


use rule * from densepure
""")
    jobs = planned(deployed)
    assert rules(jobs) == rules(planned_all)
    assert split_target(jobs, "all") == split_target(planned_all, "all")


def test_report_before_any_run_is_one_clear_error(repo):
    """`snakemake --report report.html` on a fresh clone: nothing is computed yet, so Snakemake names the first
    missing report file and exits 1, without a traceback (it used to crash on an empty rule graph)."""
    result = snakemake(repo, "--report", "report.html")
    assert result.returncode == 1, result.stdout[-3000:]
    assert "Traceback" not in result.stdout, result.stdout[-3000:]
    assert re.search(r"^File \S+ marked for report but does not exist\.$", result.stdout, re.M), result.stdout[-3000:]
    assert not (repo / "report.html").exists()


# --- the report once the outputs exist ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reported(tmp_path_factory) -> Path:
    """A copy whose votes and shard TSVs are the stored ones, with every table, figure and theory output built from
    them by `make report-from-votes` (the aggregation, table, figure and theory rules only: no training, no
    certification; about a minute on 2 cores)."""
    copy = tracked_copy(tmp_path_factory.mktemp("reported") / "repo")
    shutil.copytree(STORED / "votes", copy / "work/default/votes")
    shutil.copytree(STORED / "shards", copy / "work/default/shards")
    result = subprocess.run(["make", "report-from-votes"], cwd=copy, env=env(), capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return copy


def added(output: str) -> set[str]:
    """The files Snakemake's report says it adds."""
    return set(re.findall(r"^Adding (\S+) \(", output, re.M))


@pytest.mark.slow
def test_report_with_no_target_reports_what_all_reports(reported):
    """`snakemake --report report.html` with no target, after the outputs exist, writes the report with every table
    and figure that `snakemake --report all.html all` has."""
    default = snakemake(reported, "--report", "report.html")
    assert default.returncode == 0 and "Traceback" not in default.stdout, default.stdout[-3000:]
    explicit = snakemake(reported, "--report", "all.html", "all")
    assert explicit.returncode == 0, explicit.stdout[-3000:]
    assert added(default.stdout) == added(explicit.stdout)
    assert {"tableA.html", "table2.html", "fig3.png", "fig2.png", "theory_radius.png"} <= added(default.stdout)
    html = (reported / "report.html").read_text()
    assert "tableA.html" in html and "fig3.png" in html
