# Helpers shared by the rules: config validation, the experiment grid (densepure.grid) and output paths.
# No experiment logic lives here: it is in the densepure package, where the tests reach it.

import json
import os
import yaml
from pathlib import Path

from snakemake.utils import validate

# Validate before importing densepure (it loads torch, seconds): a config the schema rejects fails at once.
validate(config, "../schemas/config.schema.yaml")

from densepure import execution, grid

grid.check_config(config)

# Jobs inherit this process's environment (locally, and through sbatch's default --export=ALL on Slurm).
if config["portable_cpu_numerics"]:
    os.environ.update(execution.portable_cpu_env())

RUN = config["run"]
WORK = f"{config['work_dir']}/{RUN}"
RESULTS = f"results/{RUN}"
FIGURES = f"paper_figures/{RUN}"
SPEC = grid.write_effective_config(config, f"{WORK}/config.effective.yaml")
# Software of every rule under --use-conda (relative to the rule files, which all live in workflow/rules/).
SOFTWARE_ENV = "../envs/densepure.yaml"


wildcard_constraints:
    shard=r"\d+",
    K=r"\d+",
    key=r"[^/]+/[^/]+/[^/]+",
    store=r"[^/]+/[^/]+/[^/]+",
    artifact=r"[A-Za-z0-9_]+",
    images=r"[A-Za-z0-9_.]+",


def diffusion_checkpoint(dataset):
    """Path of the diffusion model used for a dataset (downloaded or trained)."""
    name = config["datasets"][dataset]["diffusion"]
    return grid.model_path(config, "diffusion_models", name)


def classifier_checkpoint(name):
    return grid.model_path(config, "classifiers", name)


def certify_inputs(wildcards):
    """Inputs of a certification job: both checkpoints and, for CIFAR-10, the extracted test batch."""
    return model_inputs(grid.setting_by_name(config, wildcards.store).key)


def model_inputs(key):
    """Checkpoints (and data) a setting key certifies with."""
    inputs = {
        "diffusion": diffusion_checkpoint(key.dataset),
        "classifier": classifier_checkpoint(key.classifier),
    }
    if key.dataset == "cifar10":
        inputs["data"] = (
            f"{config['datasets']['cifar10']['root']}/cifar-10-batches-py/test_batch"
        )
    return inputs


def store_dir(store):
    return f"{WORK}/votes/{store}"


def shard_outputs(store):
    setting = grid.setting_by_name(config, store)
    count = len(grid.job_shards(config, setting))
    return [f"{WORK}/shards/{store}/shard{i}.tsv" for i in range(count)]


def aggregate_path(agg):
    return f"{RESULTS}/certify/{agg.key.name}/K{agg.K}-{agg.images}.tsv"


def artifact_inputs(artifact):
    return [aggregate_path(agg) for agg in grid.aggregates(config, artifact)]


def artifact_outputs(artifact):
    """Files an artifact target builds: tables under results/, figures under paper_figures/."""
    if grid.is_table(artifact):
        outs = [f"{RESULTS}/tables/{artifact}.{ext}" for ext in ("csv", "md", "tex")]
    else:
        outs = [f"{FIGURES}/{artifact}.{ext}" for ext in ("png", "pdf")]
    if config["compare_with_paper"] and grid.has_paper_numbers(artifact):
        outs.append(f"{RESULTS}/compare/{artifact}.csv")
    return outs


def artifact_spec(artifact):
    """The artifact's spec and the image sets it names, as text: a param of the report rules, so a changed spec
    (radii, methods, mv_K, an image set) rebuilds the artifact."""
    spec = config["artifacts"][artifact]
    sets = {
        panel["images"]: config["datasets"][panel["dataset"]]["image_sets"][
            panel["images"]
        ]
        for panel in spec["panels"]
    }
    return json.dumps({"spec": spec, "image_sets": sets}, sort_keys=True)


def paper_numbers(artifact):
    """The published numbers of an artifact: its table's CSV, or the reference plot data (K-ablation figures)."""
    name = (
        f"{artifact}.csv"
        if grid.is_table(artifact)
        else "figure_k_ablation_refcode.csv"
    )
    return f"results/paper/{name}"


def resources_for(group):
    return config["resources"].get(group, {})


def theory_outputs():
    """Files of the theory target; none when the config has no `theory` section."""
    if "theory" not in config:
        return []
    return [
        *multiext(f"{RESULTS}/tables/theory_thm31", ".csv", ".md"),
        *multiext(f"{FIGURES}/fig2", ".png", ".pdf", "_data.csv"),
        *multiext(f"{RESULTS}/tables/theory_radius", ".csv", ".md"),
        *multiext(f"{FIGURES}/theory_radius", ".png", ".pdf"),
    ]
