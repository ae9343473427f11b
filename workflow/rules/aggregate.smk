# Votes -> per-image TSV for each (setting, K, image set): a CPU aggregation, never a GPU job.


rule aggregate:
    input:
        lambda wc: [
            shard
            for store in grid.stores_for(config, grid.Aggregate(grid.SettingKey.parse(wc.key), int(wc.K), wc.images))
            for shard in shard_outputs(store.name)
        ],
    output:
        f"{RESULTS}/certify/{{key}}/K{{K}}-{{images}}.tsv",
    params:
        votes=lambda wc: [
            store_dir(store.name)
            for store in grid.stores_for(config, grid.Aggregate(grid.SettingKey.parse(wc.key), int(wc.K), wc.images))
        ],
        ids=lambda wc: ",".join(map(str, grid.image_ids(config, wc.key.split("/")[0], wc.images))),
        alpha=config["alpha"],
    log:
        f"logs/{RUN}/aggregate/{{key}}/K{{K}}-{{images}}.log",
    shell:
        "densepure aggregate --votes-dir {params.votes:q} --K {wildcards.K} --ids {params.ids} "
        "--alpha {params.alpha} --out {output:q} 2> {log:q}"
