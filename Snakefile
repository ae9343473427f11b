# The workflow lives in workflow/Snakefile (the Snakemake workflow catalog's layout); this keeps `snakemake ...` working
# from the repository root.
include: "workflow/Snakefile"


# Snakemake ignores `default_target` in an included file (snakemake/snakemake#2056, #2773): without this rule,
# `snakemake` with no target would do nothing here and `snakemake --report` would fail. It asks for what `all` asks
# for, so `snakemake`, `snakemake --report report.html` and `snakemake all` do the same. A deployed module
# (snakefile: workflow/Snakefile) needs no such rule: Snakemake keeps the module's default target.
rule default:
    default_target: True
    input:
        rules.all.input,
