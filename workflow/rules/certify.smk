# One job per (votes store, shard of image ids): N0 + N draws x K votes per image, stored as they finish.
# A job that dies resumes where it stopped (finished images are skipped by `densepure certify`).
# Resources: one GPU unless the config's device is cpu (certify_gpus); CPUs = threads; the time limit and the memory
# come from the workflow profile profiles/default/profile.yaml (`set-resources: certify`).


rule certify:
    input:
        unpack(certify_inputs),
    output:
        f"{WORK}/shards/{{store}}/shard{{shard}}.tsv",
    log:
        f"logs/{RUN}/certify/{{store}}/shard{{shard}}.log",
    benchmark:
        f"{WORK}/benchmarks/certify/{{store}}/shard{{shard}}.tsv"
    threads: config["threads"]
    resources:
        **certify_gpus(),
    params:
        args=lambda wc: grid.certify_arguments(config, wc.store, int(wc.shard)),
        checkpoints=lambda wc, input: grid.checkpoint_arguments(dict(input.items())),
        votes=lambda wc: store_dir(wc.store),
    shell:
        DENSEPURE
        + " certify {params.args} {params.checkpoints} --threads {threads} --votes-dir {params.votes:q} "
        "--out {output:q} 2> {log:q}"
