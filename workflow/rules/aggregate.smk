# Votes -> per-image TSV for each (setting, K, image set): a CPU aggregation, never a GPU job.


rule aggregate:
    input:
        lambda wc: [
            shard
            for store in grid.stores_for(
                config,
                grid.Aggregate(grid.SettingKey.parse(wc.key), int(wc.K), wc.images),
            )
            for shard in shard_outputs(
                store.name, grid.image_ids(config, wc.key.split("/")[0], wc.images)
            )
        ],
    output:
        f"{RESULTS}/certify/{{key}}/K{{K}}-{{images}}.tsv",
    log:
        f"logs/{RUN}/aggregate/{{key}}/K{{K}}-{{images}}.log",
    benchmark:
        f"{WORK}/benchmarks/aggregate/{{key}}/K{{K}}-{{images}}.tsv"
    localrule: True
    params:
        votes=lambda wc: [
            store_dir(store.name)
            for store in grid.stores_for(
                config,
                grid.Aggregate(grid.SettingKey.parse(wc.key), int(wc.K), wc.images),
            )
        ],
        ids=lambda wc: ",".join(
            map(str, grid.image_ids(config, wc.key.split("/")[0], wc.images))
        ),
        alpha=config["alpha"],
        # `densepure aggregate` writes one TSV per K' and wants a path pattern containing {K}
        pattern=lambda wc, output: str(
            Path(output[0]).with_name(f"K{{K}}-{wc.images}.tsv")
        ),
    shell:
        DENSEPURE
        + " aggregate --votes-dir {params.votes:q} --K {wildcards.K} --ids {params.ids} "
        "--alpha {params.alpha} --out {params.pattern:q} 2> {log:q}"
