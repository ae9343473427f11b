"""Slurm for real: the embedded default through `snakemake --profile slurm all` on a one-node cluster.

tools/slurm-localhost/start-slurm.sh installs Debian's Slurm (slurmctld, slurmd, slurmdbd with MariaDB, so `sacct`
works) and starts it on this machine, with two fake GPUs (gres backed by /dev/null: only the request path is real).
The run uses the committed profiles as typed (`--profile slurm`, and the workflow profile profiles/default that
Snakemake reads without a flag) and the real snakemake-executor-plugin-slurm; like config/paper.yaml
(`device: auto`), the certify rule asks for one GPU (here `--config device=auto`: the fake GPUs are no CUDA
devices, so the jobs still run on the CPU), training for none, and the seconds-long CPU rules (aggregate, table,
figure, theory: `localrule`) run on the submitting host. Every job goes out with `--slurm-requeue`, the option for
preemptible partitions. Checked: `sacct` lists every job Snakemake submitted, completed, with the resources asked
(the workflow profile's time limit and memory per CPU for certification); Slurm kept the requeue flag; the outputs
equal the local run's (`default_run`, tests/conftest.py). Needs root (the cluster's daemons); skipped otherwise.
"""

import os
import re
import subprocess
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import ROOT, project_clone, run, tool_env

START_SLURM = ROOT / "tools/slurm-localhost/start-slurm.sh"
CERTIFY = yaml.safe_load((ROOT / "profiles/default/profile.yaml").read_text())["set-resources"]["certify"]
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="the localhost Slurm cluster needs root (CI runs as root)")]


@pytest.fixture(scope="module")
def cluster():
    was_up = cluster_answers()
    env = {**tool_env(), "SLURM_FAKE_GPUS": "2"}
    run(["bash", str(START_SLURM), "start"], ROOT, env)
    yield
    if not was_up:  # leave a cluster someone else started running; stopping ours is best effort
        run(["bash", str(START_SLURM), "stop"], ROOT, env, check=False)


def cluster_answers() -> bool:
    """A Slurm controller is up (`start-slurm.sh status` only reports, it exits 0 either way)."""
    try:
        return subprocess.run(["sinfo"], capture_output=True, timeout=30).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """The default through Slurm; returns the clone, Snakemake's output and the sacct rows of its jobs."""
    clone = project_clone(tmp_path_factory.mktemp("slurm") / "repo")
    assert (clone / "slurm").is_symlink()  # as in the repository: profiles/ and the link slurm -> profiles/slurm
    # The plugin's first status check comes 40 s after a submission by default; 2 s keeps CI's waves short.
    result = run(["snakemake", "--profile", "slurm", "all", "--slurm-init-seconds-before-status-checks", "2",
                  "--slurm-requeue", "--config", "device=auto", "--verbose"], clone)  # --verbose: the sbatch calls
    log = result.stdout + result.stderr
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log))
    ids = ",".join(submitted.values())
    sacct = run(["sacct", "-X", "--parsable2", "--noheader", "-j", ids,
                 "-o", "JobIDRaw,Comment,AllocTRES,ReqMem,State,TimelimitRaw"], clone).stdout
    rows = [dict(zip(("id", "comment", "tres", "mem", "state", "limit"), line.split("|")))
            for line in sacct.splitlines()]
    calls = re.findall(r"^sbatch call: (.*)$", log, re.M)
    return clone, log, submitted, rows, calls


def job_stats(log: str) -> Counter:
    """Snakemake's own count of jobs per rule (the "Job stats" table it prints first)."""
    table = log.split("Job stats:", 1)[1].split("total", 1)[0]
    return Counter({rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)})


def test_every_job_went_through_slurm_but_the_local_rules(slurm_run):
    """Training and certification are submitted; the seconds-long CPU rules run on the submitting host."""
    clone, log, submitted, rows, _ = slurm_run
    assert "Using profiles slurm and workflow specific profile profiles/default" in log
    local = Counter(re.findall(r"^localrule (\w+):$", log, re.M))
    assert set(local) == {"aggregate", "table", "figure", "theory_thm31", "theory_fig2", "theory_radius", "all"}
    planned = job_stats(log) - local
    assert set(planned) == {"train_diffusion", "train_classifier", "certify"}
    assert len(submitted) == sum(planned.values())
    assert {row["id"] for row in rows} == set(submitted.values())
    assert all(row["state"] == "COMPLETED" for row in rows), rows
    per_rule = Counter(re.match(r"rule_(\w+?)(_wildcards_.*)?$", row["comment"]).group(1) for row in rows)
    assert per_rule == planned


def test_resources_as_requested(slurm_run):
    """Certification jobs hold one GPU each and the workflow profile's time limit and memory per CPU; training holds
    no GPU and the slurm profile's default resources."""
    _, _, _, rows, _ = slurm_run
    for row in rows:
        tres = dict(item.split("=", 1) for item in row["tres"].split(","))
        certify = row["comment"].startswith("rule_certify")
        assert tres["cpu"] == "1", row  # threads: 1
        # 8000 MB: certification's mem_mb_per_cpu x 1 CPU, training the slurm profile's default mem_mb
        assert row["mem"] == ("%dM" % CERTIFY["mem_mb_per_cpu"] if certify else "8000M"), row
        assert row["limit"] == str(CERTIFY["runtime"] if certify else 60), row
        assert tres.get("gres/gpu") == ("1" if certify else None), row


def test_jobs_were_submitted_requeueable(slurm_run):
    """`--slurm-requeue` (preemptible partitions) became `sbatch --requeue` for every job, and the cluster ran them
    (all completed: test_every_job_went_through_slurm_but_the_local_rules). Requeue=1 in `scontrol show job` would
    prove nothing here: this cluster's JobRequeue default is already 1."""
    _, _, submitted, _, calls = slurm_run
    assert len(calls) == len(submitted), calls
    assert all(" --requeue" in call for call in calls), calls


def test_outputs_equal_the_local_run(slurm_run, default_run):
    clone = slurm_run[0]
    compared = 0
    for pattern in ("results/default/tables/*.csv", "paper_figures/default/*_data.csv"):
        for local in sorted(default_run.glob(pattern)):
            assert (clone / local.relative_to(default_run)).read_bytes() == local.read_bytes(), local.name
            compared += 1
    for local in sorted(default_run.glob("results/default/certify/**/*.tsv")):
        # less each run's own wall-clock time and the provenance of the code that ran
        frames = [pd.read_csv(p, sep="\t").drop(columns=["time", "version"])
                  for p in (local, clone / local.relative_to(default_run))]
        pd.testing.assert_frame_equal(*frames, check_exact=True)
        compared += 1
    for local in sorted(default_run.glob("work/default/votes/**/*.npz")):
        with np.load(local) as a, np.load(clone / local.relative_to(default_run)) as b:
            # the votes themselves; the metadata holds each run's own wall-clock seconds
            np.testing.assert_array_equal(a["labels"], b["labels"], err_msg=str(local))
        compared += 1
    assert compared > 20
