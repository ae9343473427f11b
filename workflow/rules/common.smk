# Helpers shared by the rules: config validation, the experiment grid (densepure.grid) and output paths.
# No experiment logic lives here: it is in the densepure package, where the tests reach it.

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
    """Checkpoints (and data) a setting key certifies with; your own networks may have no checkpoint."""
    inputs = {
        "diffusion": diffusion_checkpoint(key.dataset),
        "classifier": classifier_checkpoint(key.classifier),
    }
    data = config["datasets"][key.dataset]
    if key.dataset == "cifar10" and not data.get("loader"):
        inputs["data"] = f"{data['root']}/cifar-10-batches-py/test_batch"
    elif data.get("loader") == "image_folder":
        inputs["data"] = data["root"]
    return {name: path for name, path in inputs.items() if path is not None}


def store_dir(store):
    return f"{WORK}/votes/{store}"


def shard_outputs(store):
    """The certification jobs' TSVs that mark a store's votes complete: its own jobs and, for the one-shot
    baseline, the DensePure jobs that compute its votes on the way."""
    setting = grid.setting_by_name(config, store)
    return [
        f"{WORK}/shards/{name}/shard{i}.tsv"
        for name, i in grid.shards_for(config, setting)
    ]


def aggregate_path(agg):
    return f"{RESULTS}/certify/{agg.key.name}/K{agg.K}-{agg.images}.tsv"


def artifact_inputs(artifact):
    return [aggregate_path(agg) for agg in grid.aggregates(config, artifact)]


def artifact_outputs(artifact):
    """Files an artifact target builds: tables under results/, figures under paper_figures/."""
    if grid.is_table(artifact):
        outs = [f"{RESULTS}/tables/{artifact}.{ext}" for ext in ("csv", "md", "tex")]
        if config["compare_with_paper"] and grid.has_paper_numbers(artifact):
            outs.append(f"{RESULTS}/compare/{artifact}.csv")
        return outs
    return [f"{FIGURES}/{artifact}.{ext}" for ext in ("png", "pdf")]


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
