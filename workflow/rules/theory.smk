# Section 3 of the paper on an exact diffusion model (densepure.theory.exact), built when the config has a `theory`
# section: Theorem 3.1's sampler-vs-posterior table, Figure 2 (Theorem 3.3's robust region, r and r_sub) and the
# certified radius of DensePure's majority vote vs the one-shot posterior mean. CPU, seconds: run on the host that runs
# Snakemake (`localrule`), never submitted to a cluster.


# The section's values are a param too, so that editing them reruns the rules (the spec path alone would not).
THEORY = str(config.get("theory"))


rule theory_thm31:
    output:
        csv=f"{RESULTS}/tables/theory_thm31.csv",
        md=f"{RESULTS}/tables/theory_thm31.md",
        html=report(
            f"{RESULTS}/tables/theory_thm31.html",
            caption="../report/theory_thm31.rst",
            category="Theory",
        ),
    log:
        f"logs/{RUN}/theory/thm31.log",
    benchmark:
        f"{WORK}/benchmarks/theory/thm31.tsv"
    localrule: True
    params:
        spec=SPEC,
        settings=THEORY,
    shell:
        DENSEPURE
        + " theory thm31 --spec {params.spec:q} --csv {output.csv:q} --md {output.md:q} "
        "2> {log:q}"


rule theory_fig2:
    output:
        png=report(
            f"{FIGURES}/fig2.png",
            caption="../report/theory_fig2.rst",
            category="Theory",
        ),
        pdf=f"{FIGURES}/fig2.pdf",
        data=f"{FIGURES}/fig2_data.csv",
    log:
        f"logs/{RUN}/theory/fig2.log",
    benchmark:
        f"{WORK}/benchmarks/theory/fig2.tsv"
    localrule: True
    params:
        spec=SPEC,
        settings=THEORY,
    shell:
        DENSEPURE
        + " theory fig2 --spec {params.spec:q} --png {output.png:q} --pdf {output.pdf:q} "
        "--csv {output.data:q} 2> {log:q}"


rule theory_radius:
    output:
        png=report(
            f"{FIGURES}/theory_radius.png",
            caption="../report/theory_radius.rst",
            category="Theory",
        ),
        pdf=f"{FIGURES}/theory_radius.pdf",
        csv=f"{RESULTS}/tables/theory_radius.csv",
        md=f"{RESULTS}/tables/theory_radius.md",
        html=report(
            f"{RESULTS}/tables/theory_radius.html",
            caption="../report/theory_radius_table.rst",
            category="Theory",
        ),
    log:
        f"logs/{RUN}/theory/radius.log",
    benchmark:
        f"{WORK}/benchmarks/theory/radius.tsv"
    localrule: True
    params:
        spec=SPEC,
        settings=THEORY,
    shell:
        DENSEPURE
        + " theory radius --spec {params.spec:q} --csv {output.csv:q} --md {output.md:q} "
        "--png {output.png:q} --pdf {output.pdf:q} 2> {log:q}"


rule theory:
    input:
        theory_outputs(),
