# The workflow lives in workflow/Snakefile (the Snakemake workflow catalog's layout); this keeps `snakemake ...` working
# from the repository root.
include: "workflow/Snakefile"
