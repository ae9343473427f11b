"""The Snakemake workflow as Snakemake sees it: dry runs of the paper's grid and of the embedded default, lint and
formatting, the profiles, and the aggregation step (`densepure aggregate`, alone and as a rule). Config errors are
tests/test_validation.py.

Every workflow run happens in a copy of the workflow under tmp_path (the Snakefile writes the effective config into
its work folder at parse time), with the Snakemake of the running interpreter. The expected job counts are derived
here from the config by hand, independently of densepure.plan.grid.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
ONE_SHOT = {"onestep", "carlini"}
TARGETS = ["table_1", "table_2", "table_A", "table_B", "fig_3", "fig_4_left", "fig_4_right",
           "fig_A", "fig_B", "fig_C", "fig_D", "fig_E", "fig_F", "fig_G"]


# --- running Snakemake in a copy of the workflow ----------------------------------------------------------------


def workflow_copy(dest: Path, imagenet: bool = True) -> Path:
    """The workflow (Snakefile, workflow/, configs, profiles, the paper's numbers) copied into ``dest``; with
    ``imagenet``, a stand-in of the ImageNet validation folder at config/paper.yaml's root (1,000 class folders of
    50 empty images: the paper's ImageNet jobs are planned only where their data is)."""
    from test_data_checks import fake_imagenet

    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    for folder in ("workflow", "config", "slurm", "profiles", "results/paper"):
        if (REPO / folder).exists():
            shutil.copytree(REPO / folder, dest / folder)
    if imagenet:
        fake_imagenet(dest / "data/imagenet/val", per_class=50)
    return dest


def snakemake(cwd: Path, *args: str, timeout: float = 300, venv_on_path: bool = True) -> subprocess.CompletedProcess:
    """``snakemake ARGS`` in ``cwd`` with this interpreter's Snakemake (and, unless ``venv_on_path`` is False, its
    bin folder first on PATH, as an activated venv has it); stdout + stderr."""
    path = os.environ.get("PATH", "")
    if venv_on_path:
        path = f"{BIN}{os.pathsep}{path}"
    else:  # as `.venv/bin/snakemake` runs from a shell that never activated the venv
        path = os.pathsep.join(p for p in path.split(os.pathsep) if Path(p).resolve() != BIN.resolve())
    env = dict(os.environ, PATH=path)
    env.pop("SNAKEMAKE_PROFILE", None)
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env, timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class Job:
    rule: str
    fields: dict[str, str] = field(default_factory=dict)

    def _pairs(self, name: str) -> dict[str, str]:
        text = self.fields.get(name, "")
        return dict(item.split("=", 1) for item in text.split(", ") if "=" in item)

    @property
    def wildcards(self) -> dict[str, str]:
        return self._pairs("wildcards")

    @property
    def resources(self) -> dict[str, str]:
        return self._pairs("resources")

    def files(self, name: str) -> list[str]:
        text = self.fields.get(name, "")
        return text.split(", ") if text else []


RULE_LINE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
FIELD_LINE = re.compile(r"^    (\w+): (.*)$")


def parse_jobs(output: str) -> list[Job]:
    """The jobs a dry run (``snakemake -n``, not --quiet) prints: rule, input, output, wildcards, resources."""
    jobs: list[Job] = []
    current = None
    for line in output.splitlines():
        if m := RULE_LINE.match(line):
            current = Job(m.group(1))
            jobs.append(current)
        elif current is not None and (m := FIELD_LINE.match(line)):
            current.fields[m.group(1)] = m.group(2)
        elif not line.startswith("    "):
            current = None
    return jobs


def job_stats(output: str) -> dict[str, int]:
    """The ``Job stats`` table of a dry run: rule -> count."""
    stats, inside = {}, False
    for line in output.splitlines():
        if line.startswith("Job stats:"):
            inside, stats = True, {}
        elif inside and (m := re.match(r"^(\w+)\s+(\d+)$", line)):
            stats[m.group(1)] = int(m.group(2))
        elif inside and stats and not line.strip():
            inside = False
    return stats


def dry_run(cwd: Path, *args: str) -> tuple[list[Job], dict[str, int], str]:
    result = snakemake(cwd, "-n", "--cores", "1", *args)
    assert result.returncode == 0, result.stdout[-3000:]
    return parse_jobs(result.stdout), job_stats(result.stdout), result.stdout


def upstream(jobs: list[Job], target: Job) -> list[Job]:
    """Every job the ``target`` job depends on, following input files to the jobs that produce them."""
    producer = {out: job for job in jobs for out in job.files("output")}
    seen: dict[int, Job] = {}
    todo = [target]
    while todo:
        job = todo.pop()
        for path in job.files("input"):
            dep = producer.get(path)
            if dep is not None and id(dep) not in seen:
                seen[id(dep)] = dep
                todo.append(dep)
    return list(seen.values())


# --- the grid, by hand ------------------------------------------------------------------------------------------


def ids_of(spec: str) -> list[int]:
    """Image ids of an image-set string: ``start:stop:step``, ``start:stop`` or ``a,b,c``."""
    if ":" in spec:
        return list(range(*map(int, spec.split(":"))))
    return [int(i) for i in spec.split(",")]


def store_needs(config: dict) -> dict[tuple, dict[int, int]]:
    """(dataset, classifier, method, sigma, b) -> {image id: the largest K any panel asks of it}. One-shot methods
    (and b = 1) need one vote; b-step DensePure needs the panel's largest K (Ks and extra_Ks) whatever smaller Ks it
    lists, because those are aggregations of the same votes."""
    need: dict[tuple, dict[int, int]] = {}
    for artifact in config["artifacts"].values():
        if not artifact.get("enabled", True):
            continue
        for panel in artifact["panels"]:
            dataset = panel["dataset"]
            ids = ids_of(str(config["datasets"][dataset]["image_sets"][panel["images"]]))
            k_max = max(panel["Ks"] + panel.get("extra_Ks", []))
            for classifier in panel["classifiers"]:
                for sigma in panel["sigmas"]:
                    for method in panel["methods"]:
                        runs = [(1, 1)] if method in ONE_SHOT else [(b, 1 if b == 1 else k_max) for b in panel["bs"]]
                        for b, K in runs:
                            per_id = need.setdefault((dataset, classifier, method, float(sigma), b), {})
                            for i in ids:
                                per_id[i] = max(per_id.get(i, 0), K)
    return need


def key_name(key: tuple) -> str:
    dataset, classifier, method, sigma, b = key
    return f"{dataset}/{classifier}/{method}-sigma{sigma:g}-b{b}"


def store_name(key: tuple, K: int) -> str:
    return f"{key_name(key)}-K{K}"


def expected_stores(config: dict) -> dict[str, list[int]]:
    """Store name -> ids: one store per setting key and K group (ids grouped by the K they need)."""
    stores = {}
    for key, per_id in store_needs(config).items():
        for K in sorted(set(per_id.values())):
            stores[store_name(key, K)] = sorted(i for i, k in per_id.items() if k == K)
    return stores


def shard_size(config: dict, store: str) -> int:
    """Images per job of a store: its dataset's shard_size if set, else the top-level one."""
    return config["datasets"][store.split("/")[0]].get("shard_size") or config.get("shard_size", 20)


def provided_one_shot(config: dict) -> dict[str, dict[int, str]]:
    """One-shot store -> {id: the DensePure store whose job computes it}: among the DensePure stores of the same
    dataset, classifier and sigma holding the id, the one with the most steps, then the most votes."""
    stores = expected_stores(config)
    out = {}
    for name, ids in stores.items():
        dataset, classifier, rest = name.split("/")
        if not rest.startswith("onestep"):
            continue
        sigma = rest.split("-sigma")[1].split("-b")[0]
        prefix = f"{dataset}/{classifier}/densepure-sigma{sigma}-b"
        candidates = [n for n in stores if n.startswith(prefix)]
        candidates.sort(key=lambda n: (-int(n[len(prefix):].split("-K")[0]), -int(n.rsplit("-K", 1)[1]), n))
        out[name] = {i: next(n for n in candidates if i in stores[n]) for i in ids
                     if any(i in stores[n] for n in candidates)}
    return out


def job_ids(config: dict) -> dict[tuple[str, str], list[int]]:
    """(store, shard) of every certification job -> the ids it certifies: each store's ids in shards of
    shard_size, a one-shot store's only those no DensePure job provides."""
    provided = provided_one_shot(config)
    out = {}
    for name, ids in expected_stores(config).items():
        own = [i for i in ids if i not in provided.get(name, {})]
        size = shard_size(config, name)
        for s in range(math.ceil(len(own) / size)):
            out[(name, str(s))] = own[s * size:(s + 1) * size]
    return out


def expected_certify_jobs(config: dict) -> set[tuple[str, str]]:
    """(store, shard) of every certification job."""
    return set(job_ids(config))


def expected_jobs_per_target(config: dict) -> dict[str, int]:
    """Certification jobs each artifact target waits for: the jobs that compute an image it needs (its own store's
    shard holding it, or for the one-shot baseline the DensePure job providing it)."""
    stores, jobs, provided = expected_stores(config), job_ids(config), provided_one_shot(config)
    out = {}
    for artifact, spec in config["artifacts"].items():
        single = {"artifacts": {artifact: spec}, "datasets": config["datasets"]}
        needed = set()
        for key, per_id in store_needs(single).items():  # setting key -> ids this artifact certifies
            for name, ids in stores.items():
                if name.rsplit("-K", 1)[0] != key_name(key):
                    continue
                for i in set(ids) & set(per_id):
                    source = provided.get(name, {}).get(i, name)
                    needed |= {job for job, shard in jobs.items() if job[0] == source and i in shard}
        target = re.sub(r"^(table|fig)(?!_)", r"\1_", artifact)
        out[target] = len(needed)
    return out


def test_hand_counts_of_the_paper_grid():
    """The counting above, checked on numbers worked out on paper from config/paper.yaml (shard_size: CIFAR-10 2
    images per job, ImageNet 1): CIFAR-10 and ImageNet each have 500 main ids and 100 ablation ids (a subset)."""
    # Without DensePure jobs computing the one-shot baseline: 6500 jobs, of which 2900 one-shot (CIFAR-10: 3 x 500
    # ViT + 100 WRN images, 2 per job; ImageNet: 3 x 500 BEiT + 2 x 3 x 100 images, 1 per job). Every one-shot image
    # is also certified by a DensePure store of its dataset, classifier and sigma, so none needs a job of its own.
    assert len(expected_certify_jobs(PAPER)) == 6500 - 2900
    per_target = expected_jobs_per_target(PAPER)
    # Table B: BEiT at 3 sigmas. sigma 0.25: 400 ids at K = 40 (400 jobs) + the 100 ablation ids at K = 50 for
    # Fig. 4 left (100 jobs); sigma 0.5, 1.0: 500 ids at K = 40 (500 jobs each). Their one-shot images come from
    # those jobs (b = 10 before the b = 2 and 5 ablation stores). Total 1500.
    assert per_target["table_B"] == 1500
    assert per_target["table_A"] == 750  # 3 stores of 500 CIFAR-10 images, 2 per job
    assert per_target["table_1"] == 2250  # Table A's 750 + Table B's 1500
    assert per_target["fig_4_left"] == 100  # the K = 50 store's 100 ablation images, one-shot included
    # Figure F: 2 classifiers x 3 sigmas x the b = 2 store's 100 jobs; WRN-50-2's one-shot images at sigma 0.25 come
    # from its b = 10 store (Table 2's), another 100 jobs
    assert per_target["fig_F"] == 700


# --- dry runs of the paper's grid -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return workflow_copy(tmp_path_factory.mktemp("workflow"))


@pytest.fixture(scope="module")
def paper_targets(workdir) -> tuple[list[Job], dict[str, int]]:
    """One dry run of every artifact target of the paper's config."""
    jobs, stats, _ = dry_run(workdir, *TARGETS, "--configfile", "config/paper.yaml")
    return jobs, stats


@pytest.mark.slow
def test_paper_targets_and_their_certification_jobs(paper_targets):
    jobs, stats = paper_targets
    expected = expected_jobs_per_target(PAPER)
    assert set(expected) == set(TARGETS)
    by_rule = {job.rule: job for job in jobs}
    for target in TARGETS:
        assert target in by_rule, f"no job for target {target}"
        certify = [job for job in upstream(jobs, by_rule[target]) if job.rule == "certify"]
        assert len(certify) == expected[target], target
    assert stats["certify"] == len(expected_certify_jobs(PAPER)) == 3600


@pytest.mark.slow
def test_certify_jobs_are_one_per_store_and_shard(paper_targets):
    jobs, _ = paper_targets
    certify = [(job.wildcards["store"], job.wildcards["shard"]) for job in jobs if job.rule == "certify"]
    assert len(certify) == len(set(certify))
    assert set(certify) == expected_certify_jobs(PAPER)
    # a store's K is the largest K of a panel asking for its setting (1 one-shot): no smaller K reaches a GPU job
    panel_maxima: dict[str, set[int]] = {}
    for spec in PAPER["artifacts"].values():
        for panel in spec["panels"]:
            for classifier in panel["classifiers"]:
                for sigma in panel["sigmas"]:
                    for method in panel["methods"]:
                        for b in [1] if method in ONE_SHOT else panel["bs"]:
                            top = 1 if method in ONE_SHOT or b == 1 else max(panel["Ks"] + panel.get("extra_Ks", []))
                            name = key_name((panel["dataset"], classifier, method, float(sigma), b))
                            panel_maxima.setdefault(name, set()).add(top)
    for store, _shard in certify:
        name, K = store.rsplit("-K", 1)
        assert int(K) in panel_maxima[name], store


@pytest.mark.slow
def test_only_certification_asks_for_a_gpu(paper_targets):
    jobs, _ = paper_targets
    rules = {job.rule for job in jobs}
    assert {"certify", "aggregate", "table", "figure", "compare"} <= rules
    for job in jobs:
        if job.rule == "certify":
            assert job.resources.get("gpu") == "1", job.fields
        else:
            assert "gpu" not in job.resources, (job.rule, job.fields.get("resources"))


@pytest.mark.slow
def test_vote_counts_below_the_stored_one_cost_no_gpu_job(workdir, paper_targets, tmp_path):
    """More Ks below each panel's largest add aggregations only: the certification jobs stay the same."""
    jobs, stats = paper_targets
    more = copy.deepcopy(PAPER)
    for spec in more["artifacts"].values():
        for panel in spec["panels"]:
            top = max(panel["Ks"])
            panel["Ks"] = sorted(set(panel["Ks"]) | {k for k in (2, top - 1) if 1 <= k < top})
    new_jobs, new_stats, _ = dry_run(workdir, "all", "--configfile", str(write_config(tmp_path / "more.yaml", more)))
    certify = {(j.wildcards["store"], j.wildcards["shard"]) for j in jobs if j.rule == "certify"}
    new_certify = {(j.wildcards["store"], j.wildcards["shard"]) for j in new_jobs if j.rule == "certify"}
    assert new_certify == certify
    assert new_stats["aggregate"] > stats["aggregate"]
    new_Ks = {int(j.wildcards["K"]) for j in new_jobs if j.rule == "aggregate"}
    assert {2, 39} <= new_Ks


@pytest.mark.slow
def test_single_target_with_the_slurm_profile(workdir):
    """``snakemake --profile slurm table_B``: the profile parses, the DAG holds Table B's 1500 GPU jobs, which keep
    the workflow profile's resources, and the CPU rules get the profile's default resources."""
    jobs, stats, _ = dry_run(workdir, "--profile", "slurm", "table_B", "--configfile", "config/paper.yaml")
    assert stats["certify"] == expected_jobs_per_target(PAPER)["table_B"] == 1500
    certify = next(j for j in jobs if j.rule == "certify")
    assert certify.resources["gpu"] == "1" and certify.resources["runtime"] == "1440"
    aggregate = next(j for j in jobs if j.rule == "aggregate")
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "profile.yaml").read_text())
    assert aggregate.resources["mem_mb"] == str(profile["default-resources"]["mem_mb"])
    assert "gpu" not in aggregate.resources


@pytest.mark.slow
def test_embedded_default_dry_run_with_the_local_profile(workdir):
    jobs, stats, _ = dry_run(workdir, "--profile", "profiles/local", "all")
    assert stats["certify"] == len(expected_certify_jobs(DEFAULT))
    assert stats["train_diffusion"] == stats["train_classifier"] == 1
    assert not any("gpu" in job.resources for job in jobs)


# --- lint and formatting ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("configfile", [None, "config/paper.yaml"])
def test_snakemake_lint_passes(workdir, configfile):
    """Snakemake's linter finds nothing but the one lint the deployment answers otherwise: the rules declare no
    conda env, they run the densepure package of the Python that runs Snakemake (docs/cluster.md, "Deployment")."""
    args = ["--lint"] + (["--configfile", configfile] if configfile else [])
    result = snakemake(workdir, *args)
    lints = re.findall(r"^    \* (.+?):$", result.stdout, re.M)
    assert result.stdout.count("Lints for") == lints.count("Specify a conda environment or container for each rule.")
    assert set(lints) <= {"Specify a conda environment or container for each rule."}, result.stdout[-3000:]
    assert "Error" not in result.stdout and "Traceback" not in result.stdout, result.stdout[-3000:]


def test_snakefmt_leaves_the_workflow_unchanged():
    snakefmt = shutil.which("snakefmt", path=str(BIN)) or shutil.which("snakefmt")
    if snakefmt is None:
        pytest.skip("snakefmt is not installed")
    files = [REPO / "Snakefile", REPO / "workflow" / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    result = subprocess.run([snakefmt, "--check", *map(str, files)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout


# --- standardized usage: no tracebacks, overrides, a deployed module, what a cluster gets -----------------------


@pytest.fixture(scope="module")
def default_all(workdir):
    """A dry run of the embedded default's `all`."""
    return dry_run(workdir, "all")


@pytest.mark.slow
def test_dry_runs_print_no_traceback(default_all, paper_all):
    """The valid configs' dry runs print no exception at all (the `artifact` wildcard once matched theory outputs)."""
    for text in (default_all[2], paper_all[2]):
        assert "Traceback" not in text and "Exception" not in text and "Error" not in text, text[:3000]


def _with(config: dict, path: str, value) -> dict:
    """A copy of ``config`` with the dotted key ``path`` set to ``value``."""
    config = copy.deepcopy(config)
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[last] = value
    return config


@pytest.mark.slow
def test_a_one_key_configfile_overrides_the_defaults(workdir, tmp_path):
    """`--configfile` holding one key changes that key and keeps every other default (Snakemake's deep merge)."""
    override = tmp_path / "override.yaml"
    override.write_text("shard_size: 5\n")
    _, stats, text = dry_run(workdir, "all", "--configfile", str(override))
    assert stats["certify"] == len(expected_certify_jobs({**DEFAULT, "shard_size": 5})) > len(
        expected_certify_jobs(DEFAULT))
    assert stats["train_diffusion"] == stats["train_classifier"] == 1 and stats["theory_thm31"] == 1
    nested = tmp_path / "nested.yaml"  # a nested key: the other digits settings stay
    nested.write_text("datasets: {digits: {image_sets: {test30: '0:597:40'}}}\n")
    _, stats, _ = dry_run(workdir, "all", "--configfile", str(nested))
    assert stats["certify"] == len(expected_certify_jobs(
        _with(DEFAULT, "datasets.digits.image_sets", {"test30": "0:597:40"})))


@pytest.mark.slow
def test_a_wrong_key_in_a_configfile_is_one_line(workdir, tmp_path):
    override = tmp_path / "typo.yaml"
    override.write_text("shard_sise: 5\n")
    result = snakemake(workdir, "-n", "--cores", "1", "all", "--configfile", str(override))
    assert result.returncode == 2
    errors = [line for line in result.stdout.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("densepure: config error: shard_sise: unknown key; did you "
                                                     "mean 'shard_size'?"), result.stdout[-3000:]
    lines = [line for line in result.stdout.splitlines() if not line.startswith("Using workflow specific profile")]
    assert len(lines) <= 2, result.stdout[-3000:]  # with Snakemake's "config ... is extended"


@pytest.mark.slow
def test_the_workflow_deploys_as_a_module(tmp_path, default_all):
    """What snakedeploy writes: a Snakefile declaring the workflow as a module, and a copy of config/. The DAG is
    the one of the repository itself, the paper's numbers are found next to the module."""
    from test_data_checks import fake_imagenet

    deployed = tmp_path / "deployed"
    shutil.copytree(REPO / "config", deployed / "config")
    fake_imagenet(deployed / "data/imagenet/val", per_class=50)
    (deployed / "Snakefile").write_text(f"""configfile: "config/config.yaml"


module densepure:
    snakefile:
        "{REPO / "workflow" / "Snakefile"}"
    config:
        config


use rule * from densepure
""")
    _, stats, text = dry_run(deployed, "all")
    assert stats == default_all[1] and "Traceback" not in text
    jobs, stats, _ = dry_run(deployed, "table_2", "--configfile", "config/paper.yaml")
    compare = next(job for job in jobs if job.rule == "compare")
    inputs = [f.removesuffix(" (cached)") for f in compare.files("input")]
    paper = Path(next(f for f in inputs if f.endswith("table2.csv")))
    assert paper.samefile(REPO / "results/paper/table2.csv")


LOCALITY = """
import sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

with SnakemakeApi(OutputSettings()) as api:
    config = ConfigSettings(configfiles=[Path(p) for p in sys.argv[1:]])
    workflow = api.workflow(ResourceSettings(cores=1), config, snakefile=Path("Snakefile"))._workflow
    for rule in workflow.rules:  # Workflow.is_local, less the executor (a dry run executes everything locally)
        local = rule.group is None and (rule.name in workflow._localrules or rule.norun)
        print("RULE", rule.name, int(local))
"""


def submitted_jobs(cwd: Path, stats: dict[str, int], *configfiles: str) -> dict[str, int]:
    """Jobs per rule that a cluster executor submits: those of the rules that are not local."""
    out = subprocess.run([sys.executable, "-c", LOCALITY, *configfiles], cwd=cwd, capture_output=True, text=True,
                         check=True).stdout
    local = {name: bool(int(flag)) for name, flag in re.findall(r"^RULE (\w+) ([01])$", out, re.M)}
    assert {"certify", "aggregate", "download_diffusion"} <= set(local)
    return {rule: n for rule, n in stats.items() if rule != "total" and not local[rule]}


@pytest.fixture(scope="module")
def paper_all(workdir):
    """A dry run of the paper's `all` under the Slurm profile."""
    return dry_run(workdir, "--profile", "slurm", "all", "--configfile", "config/paper.yaml")


@pytest.mark.slow
def test_only_certification_goes_to_the_cluster(workdir, paper_all):
    """Under the Slurm profile the paper's 3600 certification jobs are submitted; the seconds-long CPU rules
    (aggregate, table, figure, compare, theory) and the downloads run on the submitting host, which has internet."""
    _, stats, _ = paper_all
    assert stats["certify"] == 3600 and stats["aggregate"] > 100 and stats["download_classifier"] >= 1
    assert submitted_jobs(workdir, stats, "config/paper.yaml") == {"certify": 3600}
    # the embedded default: training (minutes) and certification go out, the rest stays
    _, stats, _ = dry_run(workdir, "--profile", "slurm", "all")
    assert submitted_jobs(workdir, stats) == {"train_diffusion": 1, "train_classifier": 1,
                                              "certify": len(expected_certify_jobs(DEFAULT))}


TINY_RUN = """\
run: tiny
shard_size: 3
datasets: {digits: {N0: 4, N: 20, image_sets: {three: "0,1,2"}}}
diffusion_models: {digits-unet: {train: {seed: 0, steps: 2, batch: 8}}}
classifiers: {digits-cnn: {train: {seed: 0, epochs: 1}}}
artifacts:
  tabletiny:
    panels:
      - {dataset: digits, classifiers: [digits-cnn], sigmas: [0.5], bs: [3], Ks: [3], methods: [densepure],
         images: three, radii: [0.0]}
"""


@pytest.mark.slow
def test_rules_run_with_the_python_that_runs_snakemake(tmp_path):
    """`.venv/bin/snakemake TARGET` from a shell that never activated the venv: no `densepure` on PATH, yet the
    training, certification and aggregation jobs run (with this interpreter), and the certification job's log shows
    its first image at once and a summary."""
    work = workflow_copy(tmp_path / "wf")
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_RUN)
    target = "results/tiny/certify/digits/digits-cnn/densepure-sigma0.5-b3/K3-three.tsv"
    result = snakemake(work, target, "--cores", "1", "--configfile", str(config), venv_on_path=False, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:]
    assert shutil.which("densepure", path=os.environ.get("PATH", "").replace(str(BIN), "")) is None
    assert job_stats(result.stdout) == {"train_diffusion": 1, "train_classifier": 1, "certify": 1, "aggregate": 1,
                                        "total": 4}
    assert [row.split("\t")[0] for row in (work / target).read_text().splitlines()[1:]] == ["0", "1", "2"]
    log = (work / "logs/tiny/certify/digits/digits-cnn/densepure-sigma0.5-b3-K3/shard0.log").read_text()
    lines = log.splitlines()
    assert re.search(r"images 1/3 \(image [012]: ", lines[0]), log  # the first image to finish, whichever
    assert "job summary: 3 images certified, 0 skipped as already done" in lines[-1], log
    assert "final loss" in (work / "logs/tiny/train/digits-unet.log").read_text()


# --- aggregation: `densepure aggregate` on hand-made votes --------------------------------------------------------

N0, N, SIGMA, ALPHA = 4, 20, 0.5, 0.001
# every estimation vote for the selected class: pA_lower = alpha^(1/N) (Clopper-Pearson with nA = n)
R_ALL = SIGMA * NormalDist().inv_cdf(ALPHA ** (1 / N))


def _setting(K: int) -> dict:
    from densepure.job.results import Setting

    return Setting(dataset="digits", diffusion="bundle", classifier="digits-cnn", sigma=SIGMA, b=3, K=K, N0=N0,
                   N=N).as_dict()


def _votes_stores(root: Path) -> tuple[Path, Path]:
    """Two stores of one setting: K = 3 with images 0 and 1, K = 5 with image 2."""
    from densepure.job.votes import VotesStore

    k3 = VotesStore(root / "K3", _setting(3), num_classes=10, rows=N0 + N)
    # image 0 (label 3): every draw votes [7, 3, 3]: K'=1 -> 7, K'=2 -> tie, the first seen (7) wins, K'=3 -> 3
    k3.write(0, np.tile([7, 3, 3], (N0 + N, 1)), label=3)
    # image 1 (label 5): selection draws all 5, then half of the estimation draws 5 and half 2 -> abstain
    rows = [[5, 5, 5]] * N0 + [[5, 5, 5]] * (N // 2) + [[2, 2, 2]] * (N // 2)
    k3.write(1, np.array(rows), label=5)
    k5 = VotesStore(root / "K5", _setting(5), num_classes=10, rows=N0 + N)
    # image 2 (label 0): every draw votes [0, 1, 1, 0, 0]: K'=1, 2 -> 0 (right), K'=3 -> 1 (wrong)
    k5.write(2, np.tile([0, 1, 1, 0, 0], (N0 + N, 1)), label=0)
    return root / "K3", root / "K5"


# (idx, label, predict, radius, correct) per K', worked out above
EXPECTED = {
    1: [(0, 3, 7, R_ALL, 0), (1, 5, -1, 0.0, 0), (2, 0, 0, R_ALL, 1)],
    2: [(0, 3, 7, R_ALL, 0), (1, 5, -1, 0.0, 0), (2, 0, 0, R_ALL, 1)],
    3: [(0, 3, 3, R_ALL, 1), (1, 5, -1, 0.0, 0), (2, 0, 1, R_ALL, 0)],
}


def _check_tsv(path: Path, K: int, ids=(0, 1, 2)) -> None:
    with open(path) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [int(r["idx"]) for r in rows] == list(ids)
    for row, (idx, label, predict, radius, correct) in zip(rows, [e for e in EXPECTED[K] if e[0] in ids]):
        assert (int(row["label"]), int(row["predict"]), int(row["correct"])) == (label, predict, correct), row
        assert row["radius"] == f"{radius:.3}" and float(row["radius"]) == pytest.approx(radius, abs=5e-4)
        assert (int(row["K"]), int(row["N0"]), int(row["N"]), float(row["sigma"])) == (K, N0, N, SIGMA)


def test_hand_computed_radius():
    # alpha^(1/20) = 0.7079; Phi^-1(0.7079) = 0.5475; times sigma 0.5
    assert R_ALL == pytest.approx(0.27376, abs=1e-4)


def test_densepure_aggregate_cells(tmp_path):
    from densepure.cli.main import main

    k3, k5 = _votes_stores(tmp_path / "votes")
    out = tmp_path / "out" / "K{K}.tsv"
    assert main(["aggregate", "--votes-dir", str(k3), str(k5), "--K", "1", "2", "3", "--alpha", str(ALPHA),
                 "--ids", "0,1,2", "--out", str(out)]) == 0
    for K in (1, 2, 3):
        _check_tsv(tmp_path / "out" / f"K{K}.tsv", K)


def test_densepure_aggregate_refuses_more_votes_than_stored(tmp_path, capsys):
    from densepure.cli.main import main

    k3, k5 = _votes_stores(tmp_path / "votes")
    assert main(["aggregate", "--votes-dir", str(k3), str(k5), "--K", "4", "--out", str(tmp_path / "K{K}.tsv")]) == 2
    assert "K'=4 exceeds the K=3" in capsys.readouterr().err


def _tiny_config(**changes) -> dict:
    config = copy.deepcopy(DEFAULT)
    config.update(run="tiny", shard_size=2, checksums="config/tiny.lock", claims=None)  # its claims need tableA
    config["datasets"]["digits"].update(N0=N0, N=N, image_sets={"three": "0,1,2"})
    config["artifacts"] = {"tableA": {"panels": [{
        "dataset": "digits", "classifiers": ["digits-cnn"], "sigmas": [SIGMA], "bs": [3], "Ks": [1, 3],
        "methods": ["densepure"], "images": "three", "radii": [0.0, 0.25]}]}}
    config.update(changes)
    return config


@pytest.mark.slow
def test_aggregate_rule_on_stored_votes(tmp_path):
    """The aggregate rule turns the shards' votes store into one TSV per K, with the cells worked out above."""
    from densepure.job.votes import VotesStore

    work = workflow_copy(tmp_path / "wf")
    config = write_config(tmp_path / "tiny.yaml", _tiny_config())
    store = "digits/digits-cnn/densepure-sigma0.5-b3-K3"
    # the trained models, then the shards (newer): nothing upstream of the aggregation needs to run
    for model in ("digits-unet", "digits-cnn"):
        (work / "work/tiny/models").mkdir(parents=True, exist_ok=True)
        (work / f"work/tiny/models/{model}.pt").write_text("")
    votes = VotesStore(work / "work/tiny/votes" / store, _setting(3), num_classes=10, rows=N0 + N)
    votes.write(0, np.tile([7, 3, 3], (N0 + N, 1)), label=3)
    votes.write(1, np.array([[5, 5, 5]] * (N0 + N // 2) + [[2, 2, 2]] * (N // 2)), label=5)
    votes.write(2, np.tile([0, 1, 1], (N0 + N, 1)), label=0)
    for shard in (0, 1):  # shard_size 2: ids [0, 1] and [2]
        path = work / f"work/tiny/shards/{store}/shard{shard}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    target = "results/tiny/certify/digits/digits-cnn/densepure-sigma0.5-b3/K3-three.tsv"
    result = snakemake(work, target, "--cores", "1", "--configfile", str(config))
    assert result.returncode == 0, result.stdout[-3000:]
    assert job_stats(result.stdout) == {"aggregate": 1, "total": 1}
    _check_tsv(work / target, 3)
