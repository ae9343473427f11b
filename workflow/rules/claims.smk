# Sequential claims (docs/claims.md; target `claims`, not part of `all`): waves of certification jobs on the images of
# a seeded random order, into the same votes stores as the full tables; after each wave a checkpoint decides which
# claims need the next one, so the DAG grows only as far as the claims need. A later `all` computes only the rest.
# A wave job's ids are every claim's wave images in its store, cut into the grid's job size
# (densepure.plan.claims.wave_shards): its command never depends on decisions.

from densepure.plan import claims as claims_plan


wildcard_constraints:
    wave=r"\d+",
    part=r"\d+",


rule claims_certify:
    input:
        # a certification job's inputs: the store's images checked in the data while the run is planned
        unpack(certify_inputs),
    output:
        f"{WORK}/claims/shards/{{store}}/wave{{wave}}-{{part}}.tsv",
    log:
        f"logs/{RUN}/claims/certify/{{store}}/wave{{wave}}-{{part}}.log",
    benchmark:
        f"{WORK}/benchmarks/claims/{{store}}/wave{{wave}}-{{part}}.tsv"
    threads: config["threads"]
    resources:
        **certify_gpus(),
    params:
        args=lambda wc: grid.certify_arguments(
            config,
            wc.store,
            0,
            claims_plan.wave_shard_ids(config, int(wc.wave), wc.store, int(wc.part)),
        ),
        checkpoints=lambda wc, input: grid.checkpoint_arguments(dict(input.items())),
        votes=lambda wc: store_dir(wc.store),
    shell:
        DENSEPURE
        + " certify {params.args} {params.checkpoints} --threads {threads} --votes-dir {params.votes:q} "
        "--out {output:q} 2> {log:q}"


checkpoint claims_wave:
    input:
        lambda wc: [
            f"{WORK}/claims/shards/{store}/wave{wc.wave}-{part}.tsv"
            for store, part, _ in claims_plan.wave_shards(
                config,
                int(wc.wave),
                claims_plan.open_claims(
                    config,
                    int(wc.wave),
                    lambda w: checkpoints.claims_wave.get(wave=w).output[0],
                ),
            )
        ],
    output:
        f"{WORK}/claims/wave{{wave}}.json",
    log:
        f"logs/{RUN}/claims/wave{{wave}}.log",
    localrule: True
    params:
        spec=SPEC,
    shell:
        DENSEPURE
        + " claims decide --configfile {params.spec:q} --wave {wildcards.wave} --out {output:q} 2> {log:q}"


rule claims:
    input:
        lambda wc: claims_plan.last_wave(
            lambda w: checkpoints.claims_wave.get(wave=w).output[0]
        ),
    output:
        multiext(f"{RESULTS}/claims/claims", ".tsv", ".md"),
    log:
        f"logs/{RUN}/claims/report.log",
    localrule: True
    params:
        spec=SPEC,
        out=lambda wc, output: str(Path(output[0]).parent),
    shell:
        "("
        + DENSEPURE
        + " claims report --configfile {params.spec:q} --wave-file {input:q} --out-dir {params.out:q} && "
        + DENSEPURE
        + " claims shards --configfile {params.spec:q}) 2> {log:q}"
