# Tables (CSV, Markdown, LaTeX) under results/<run>/tables, figures (PNG, PDF) under paper_figures/<run>/,
# and, for the paper run, our numbers next to the paper's with 95% intervals under results/<run>/compare.


rule table:
    input:
        lambda wc: artifact_inputs(wc.artifact),
    output:
        multiext(f"{RESULTS}/tables/{{artifact}}", ".csv", ".md", ".tex"),
        cells=f"{RESULTS}/tables/{{artifact}}_cells.csv",
    log:
        f"logs/{RUN}/table/{{artifact}}.log",
    benchmark:
        f"{WORK}/benchmarks/table/{{artifact}}.tsv"
    wildcard_constraints:
        artifact=artifact_names("table"),
    localrule: True
    conda:
        SOFTWARE_ENV
    params:
        spec=SPEC,
        outdir=lambda wc, output: str(Path(output.cells).parent),
    shell:
        DENSEPURE
        + " table --artifact {wildcards.artifact} --spec {params.spec:q} --results {input:q} "
        "--outdir {params.outdir:q} 2> {log:q}"


rule figure:
    input:
        lambda wc: artifact_inputs(wc.artifact),
    output:
        report(
            multiext(f"{FIGURES}/{{artifact}}", ".png", ".pdf"),
            caption="../report/figure.rst",
            category="Figures",
        ),
        data=f"{FIGURES}/{{artifact}}_data.csv",
    log:
        f"logs/{RUN}/figure/{{artifact}}.log",
    benchmark:
        f"{WORK}/benchmarks/figure/{{artifact}}.tsv"
    wildcard_constraints:
        artifact=artifact_names("figure"),
    localrule: True
    conda:
        SOFTWARE_ENV
    params:
        spec=SPEC,
        outdir=lambda wc, output: str(Path(output.data).parent),
    shell:
        DENSEPURE
        + " figure --artifact {wildcards.artifact} --spec {params.spec:q} --results {input:q} "
        "--outdir {params.outdir:q} 2> {log:q}"


rule compare:
    input:
        cells=f"{RESULTS}/tables/{{artifact}}_cells.csv",
        paper=lambda wc: paper_numbers(wc.artifact),
    output:
        f"{RESULTS}/compare/{{artifact}}.csv",
    log:
        f"logs/{RUN}/compare/{{artifact}}.log",
    wildcard_constraints:
        artifact=artifact_names("compare"),
    localrule: True
    conda:
        SOFTWARE_ENV
    shell:
        DENSEPURE
        + " compare --artifact {wildcards.artifact} --reproduced {input.cells:q} --paper {input.paper:q} "
        "--out {output:q} 2> {log:q}"


# One target per artifact: `snakemake table_B`, `snakemake fig_3`, ...
for _artifact in grid.selected_artifacts(config):

    rule:
        name:
            grid.target_name(_artifact)
        input:
            artifact_outputs(_artifact),
