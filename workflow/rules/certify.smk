# One job per (votes store, shard of image ids): N0 + N draws x K votes per image, stored as they finish.
# A job that dies resumes where it stopped (finished images are skipped by `densepure certify`).


def certify_inputs(wildcards):
    key = grid.setting_by_name(config, wildcards.store).key
    inputs = {
        "diffusion": diffusion_checkpoint(key.dataset),
        "classifier": classifier_checkpoint(key.classifier),
    }
    if key.dataset == "cifar10":
        inputs["data"] = f"{config['datasets']['cifar10']['root']}/cifar-10-batches-py/test_batch"
    return inputs


rule certify:
    input:
        unpack(certify_inputs),
    output:
        f"{WORK}/shards/{{store}}/shard{{shard}}.tsv",
    params:
        args=lambda wc: grid.certify_arguments(config, wc.store, int(wc.shard)),
        votes=lambda wc: store_dir(wc.store),
    threads: config["threads"]
    resources:
        **resources_for("certify"),
    log:
        f"logs/{RUN}/certify/{{store}}/shard{{shard}}.log",
    shell:
        "densepure certify {params.args} --diffusion-ckpt {input.diffusion:q} --classifier-ckpt {input.classifier:q} "
        "--threads {threads} --votes-dir {params.votes:q} --out {output:q} 2> {log:q}"
