# Tables (CSV, Markdown, LaTeX, HTML; tidy cells; paired differences) under results/<run>/tables, figures (PNG,
# PDF) under paper_figures/<run>/, for the paper run our numbers next to the paper's under results/<run>/compare,
# and one JSON of the run's results (`snakemake export`). `snakemake --report report.html` afterwards gathers the
# tables, comparisons and figures into one page.


report: "../report/workflow.rst"


from densepure.report.figures import figure_caption
from densepure.report.spec import collect_image_sets


rule table:
    input:
        lambda wc: artifact_inputs(wc.artifact),
    output:
        multiext(f"{RESULTS}/tables/{{artifact}}", ".csv", ".md", ".tex"),
        html=report(
            f"{RESULTS}/tables/{{artifact}}.html",
            caption="../report/table.rst",
            category="Tables",
            labels={"artifact": "{artifact}"},
        ),
        cells=f"{RESULTS}/tables/{{artifact}}_cells.csv",
        paired=f"{RESULTS}/tables/{{artifact}}_paired.csv",
    log:
        f"logs/{RUN}/table/{{artifact}}.log",
    benchmark:
        f"{WORK}/benchmarks/table/{{artifact}}.tsv"
    wildcard_constraints:
        artifact=artifact_names("table"),
    localrule: True
    params:
        spec=SPEC,
        artifact_spec=lambda wc: artifact_spec(wc.artifact),
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
            f"{FIGURES}/{{artifact}}.png",
            caption="../report/figure.rst",
            category="Figures",
            labels={"artifact": "{artifact}"},
        ),
        f"{FIGURES}/{{artifact}}.pdf",
        data=f"{FIGURES}/{{artifact}}_data.csv",
    log:
        f"logs/{RUN}/figure/{{artifact}}.log",
    benchmark:
        f"{WORK}/benchmarks/figure/{{artifact}}.tsv"
    wildcard_constraints:
        artifact=artifact_names("figure"),
    localrule: True
    params:
        spec=SPEC,
        artifact_spec=lambda wc: artifact_spec(wc.artifact),
        outdir=lambda wc, output: str(Path(output.data).parent),
        run=RUN,
        caption=lambda wc: figure_caption(
            config["artifacts"][wc.artifact], collect_image_sets(config)
        ),
    shell:
        DENSEPURE
        + " figure --artifact {wildcards.artifact} --spec {params.spec:q} --results {input:q} "
        "--outdir {params.outdir:q} --run {params.run:q} 2> {log:q}"


rule compare:
    input:
        results=lambda wc: artifact_inputs(wc.artifact),
        paper=lambda wc: paper_numbers(wc.artifact),
        images=lambda wc: paper_image_sets(),
    output:
        csv=f"{RESULTS}/compare/{{artifact}}.csv",
        html=report(
            f"{RESULTS}/compare/{{artifact}}.html",
            caption="../report/compare.rst",
            category="Comparison with the paper",
            labels={"artifact": "{artifact}"},
        ),
    log:
        f"logs/{RUN}/compare/{{artifact}}.log",
    wildcard_constraints:
        artifact=artifact_names("compare"),
    localrule: True
    params:
        spec=SPEC,
        artifact_spec=lambda wc: artifact_spec(wc.artifact),
    shell:
        DENSEPURE
        + " compare --artifact {wildcards.artifact} --spec {params.spec:q} --results {input.results:q} "
        "--paper {input.paper:q} --image-sets {input.images:q} --out {output.csv:q} 2> {log:q}"


rule export:
    input:
        results=sorted({aggregate_path(agg) for agg in grid.aggregates(config)}),
        shards=[shard for s in grid.settings(config) for shard in shard_outputs(s.name)],
    output:
        f"{RESULTS}/export/{RUN}.json",
    log:
        f"logs/{RUN}/export.log",
    localrule: True
    params:
        votes=[store_dir(s.name) for s in grid.settings(config)],
        run=RUN,
    shell:
        DENSEPURE
        + " export --run {params.run:q} --results {input.results:q} --votes-dir {params.votes:q} "
        "--out {output:q} 2> {log:q}"


# Every result of the run and the imported ones the config names, in one table with intervals, cost and provenance
# (`snakemake ledger`).
rule ledger:
    input:
        results=sorted({aggregate_path(agg) for agg in grid.aggregates(config)}),
        imported=config["ledger"]["imports"],
        shards=[shard for s in grid.settings(config) for shard in shard_outputs(s.name)],
    output:
        report(
            f"{RESULTS}/ledger/ledger.html",
            caption="../report/ledger.rst",
            category="Ledger",
        ),
        csv=f"{RESULTS}/ledger/ledger.csv",
        json=f"{RESULTS}/ledger/ledger.json",
    log:
        f"logs/{RUN}/ledger.log",
    localrule: True
    params:
        votes=[store_dir(s.name) for s in grid.settings(config)],
        run=RUN,
        radii=ledger_radii_option(config),
        outdir=lambda wc, output: os.path.dirname(output.csv),
    shell:
        DENSEPURE
        + " ledger --run {params.run:q} --results {input.results:q} {input.imported:q} --votes-dir {params.votes:q} "
        "--outdir {params.outdir:q} {params.radii} 2> {log:q}"


# One target per artifact: `snakemake table_B`, `snakemake fig_3`, ...
for _artifact in grid.selected_artifacts(config):

    rule:
        name:
            grid.target_name(_artifact)
        input:
            artifact_outputs(_artifact),
