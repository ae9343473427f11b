# Helpers shared by the rules: config validation, the experiment grid (densepure.plan.grid) and output paths.
# No experiment logic lives here: it is in the densepure package, where the tests reach it.

import json
import os
import sys
from pathlib import Path

# Before any job: the schema (defaults filled in), then the cross-checks; a mistake exits with one line naming the key
# (status 2). A job that Snakemake runs on a cluster node reads this file again: its config was checked before it was
# submitted, so it skips the cross-checks (they import torch, seconds).
try:
    from densepure.job import execution
    from densepure.plan import grid
    from densepure.plan import validation
# e.g. a deployed module whose Snakemake runs in a Python without the package
except ImportError as err:
    print(
        f"densepure: {sys.executable} cannot import the densepure package ({err}); install it in the "
        "environment that runs Snakemake (`make install` from a clone of the repository)",
        file=sys.stderr,
    )
    sys.exit(2)

validation.validate_workflow_config(
    config,
    workflow.source_path("../schemas/config.schema.yaml"),
    cross_checks=workflow.is_main_process,
    config_files=workflow.configfiles,
)

# Jobs inherit this process's environment (locally, and through sbatch's default --export=ALL on Slurm).
if config["portable_cpu_numerics"]:
    os.environ.update(execution.portable_cpu_env())

# Rules run the package with the Python that runs Snakemake (the tested deployment: densepure installed in the
# environment of Snakemake, as `make install` does), so that `.venv/bin/snakemake` needs no activated venv and a
# cluster job uses the same interpreter. The interpreter travels as an environment variable so that the rules'
# commands stay the same wherever the venv lives (Snakemake reruns jobs whose command changed).
os.environ["DENSEPURE_PYTHON"] = sys.executable


envvars:
    "DENSEPURE_PYTHON",


DENSEPURE = '"$DENSEPURE_PYTHON" -m densepure'

RUN = config["run"]
WORK = f"{config['work_dir']}/{RUN}"
RESULTS = f"results/{RUN}"
FIGURES = f"paper_figures/{RUN}"
SPEC = grid.write_effective_config(config, f"{WORK}/config.effective.yaml")


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
    """Inputs of a certification job: both checkpoints and its data (CIFAR-10's extracted test batch, from its
    download rule; ImageNet's validation folder, checked before any job: a missing folder, class folder or image id
    stops the run with one line)."""
    setting = grid.setting_by_name(config, wildcards.store)
    validation.exit_on_data_error(config, setting.key.dataset, setting.ids)
    return model_inputs(setting.key)


def model_inputs(key):
    """Checkpoints (and data) a setting key certifies with; your own networks may have no checkpoint."""
    inputs = {
        "diffusion": diffusion_checkpoint(key.dataset),
        "classifier": classifier_checkpoint(key.classifier),
    }
    data = config["datasets"][key.dataset]
    if key.dataset == "cifar10" and not data.get("loader"):
        inputs["data"] = f"{data['root']}/cifar-10-batches-py/test_batch"
    elif data.get("loader") == "image_folder" or key.dataset == "imagenet":
        inputs["data"] = data["root"]
    return {name: path for name, path in inputs.items() if path is not None}


def store_dir(store):
    return f"{WORK}/votes/{store}"


def shard_outputs(store, ids=None):
    """The certification jobs' TSVs that mark a store's votes complete (of its images among ``ids``, all if None):
    its own jobs and, for the one-shot baseline, the DensePure jobs that compute its votes on the way.
    """
    setting = grid.setting_by_name(config, store)
    return [
        f"{WORK}/shards/{name}/shard{i}.tsv"
        for name, i in grid.shards_for(config, setting, ids)
    ]


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
    """The published numbers of an artifact (results/paper/ in the workflow's repository, found from the
    workflow's own location, so that a deployed module finds them too): its table's CSV, or the reference plot data
    (K-ablation figures)."""
    name = (
        f"{artifact}.csv"
        if grid.is_table(artifact)
        else "figure_k_ablation_refcode.csv"
    )
    return workflow.source_path(f"../../results/paper/{name}")


def paper_image_sets():
    """Which images the paper certified (results/paper/image_sets.yaml), found like :func:`paper_numbers`."""
    return workflow.source_path("../../results/paper/image_sets.yaml")


def artifact_names(kind):
    """Selected artifacts that are tables, figures or tables with the paper's numbers, as a wildcard pattern."""
    test = {
        "table": grid.is_table,
        "figure": lambda a: not grid.is_table(a),
        "compare": grid.has_paper_numbers,
    }[kind]
    return "|".join(a for a in grid.selected_artifacts(config) if test(a)) or "^$"


def certify_gpus():
    """The GPU request of a certification job: ``gpu: 1`` unless the config certifies on the CPU (``device: cpu``,
    the embedded default). Its time limit and memory come from the workflow profile (profiles/default), which
    cannot depend on the config."""
    return {} if config["device"] == "cpu" else {"gpu": 1}


def theory_outputs():
    """Files of the theory target; none when the config has no `theory` section."""
    if "theory" not in config:
        return []
    return [
        *multiext(f"{RESULTS}/tables/theory_thm31", ".csv", ".md", ".html"),
        *multiext(f"{FIGURES}/fig2", ".png", ".pdf", "_data.csv"),
        *multiext(f"{RESULTS}/tables/theory_radius", ".csv", ".md", ".html"),
        *multiext(f"{FIGURES}/theory_radius", ".png", ".pdf"),
    ]


def ledger_radii_option(config):
    """``--radii DATASET:R,R ...`` of the config's ledger radii, quoted for the shell ('' when none)."""
    import shlex

    radii = config["ledger"]["radii"]
    if not radii:
        return ""
    return "--radii " + " ".join(
        shlex.quote(f"{d}:{','.join(map(str, r))}") for d, r in radii.items()
    )
