# densepure: the DensePure paper (ICLR 2023) as one Snakemake workflow.
#   snakemake --cores 2 all                                              # embedded default (digits, CPU)
#   snakemake --profile slurm all --configfile config/paper.yaml         # the paper, on a Slurm GPU cluster
#   snakemake --cores 1 table_B --configfile config/paper.yaml           # one table (or fig_3, fig_4_left, ...)
# The logic lives in the densepure package (densepure.grid builds the job list); rules only call its CLI.

from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless --configfile names another config (which then replaces it instead of merging).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/certify.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/theory.smk"


rule all:
    default_target: True
    input:
        [
            out
            for artifact in grid.selected_artifacts(config)
            for out in artifact_outputs(artifact)
        ],
        theory_outputs(),


# Stage targets (dvc.yaml runs one per DVC stage): every model and dataset, then every certification shard.
rule models:
    input:
        sorted(
            {
                path
                for s in grid.settings(config)
                for path in model_inputs(s.key).values()
            }
        ),


rule votes:
    input:
        [shard for s in grid.settings(config) for shard in shard_outputs(s.name)],
