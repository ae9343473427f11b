# Checkpoints: downloaded (pooch: retries, verified against the sha256 lock file) or trained on the CPU. Downloads run
# on the host that runs Snakemake (`localrule`): on a cluster, the login node, which has internet access.


rule download_diffusion:
    output:
        f"{config['checkpoints_dir']}/{{file}}",
    log:
        f"logs/download/{{file}}.log",
    wildcard_constraints:
        file="|".join(grid.download_files(config, "diffusion_models")) or "^$",
    retries: 2
    localrule: True
    params:
        url=lambda wc: grid.download_url(config, "diffusion_models", wc.file),
        lock=config["checksums"],
    shell:
        DENSEPURE
        + " download --url {params.url:q} --out {output:q} --name {wildcards.file:q} --lock {params.lock:q} "
        "2> {log:q}"


rule download_classifier:
    output:
        f"{config['checkpoints_dir']}/{{file}}",
    log:
        f"logs/download/{{file}}.log",
    wildcard_constraints:
        file="|".join(grid.download_files(config, "classifiers")) or "^$",
    retries: 2
    localrule: True
    params:
        url=lambda wc: grid.download_url(config, "classifiers", wc.file),
        lock=config["checksums"],
    shell:
        DENSEPURE
        + " download --url {params.url:q} --out {output:q} --name {wildcards.file:q} --lock {params.lock:q} "
        "2> {log:q}"


rule train_diffusion:
    output:
        f"{WORK}/models/{{name}}.pt",
    log:
        f"logs/{RUN}/train/{{name}}.log",
    benchmark:
        f"{WORK}/benchmarks/train/{{name}}.tsv"
    wildcard_constraints:
        name="|".join(grid.trained(config, "diffusion_models")) or "^$",
    threads: 1
    params:
        options=lambda wc: grid.train_options(config, "diffusion_models", wc.name),
    shell:
        DENSEPURE
        + " train diffusion --out {output:q} --threads {threads} {params.options} 2> {log:q}"


rule train_classifier:
    output:
        f"{WORK}/models/{{name}}.pt",
    log:
        f"logs/{RUN}/train/{{name}}.log",
    benchmark:
        f"{WORK}/benchmarks/train/{{name}}.tsv"
    wildcard_constraints:
        name="|".join(grid.trained(config, "classifiers")) or "^$",
    threads: 1
    params:
        options=lambda wc: grid.train_options(config, "classifiers", wc.name),
    shell:
        DENSEPURE
        + " train classifier --out {output:q} --threads {threads} {params.options} 2> {log:q}"


rule download_cifar10:
    output:
        f"{config['datasets'].get('cifar10', {}).get('root') or 'data/cifar10'}/cifar-10-batches-py/test_batch",
    log:
        "logs/download/cifar10.log",
    localrule: True
    params:
        url=config["datasets"].get("cifar10", {}).get("download"),
        lock=config["checksums"],
        archive=lambda wc, output: str(
            Path(output[0]).parent.parent / "cifar-10-python.tar.gz"
        ),
        root=lambda wc, output: str(Path(output[0]).parent.parent),
    shell:
        DENSEPURE
        + " download --url {params.url:q} --out {params.archive:q} --lock {params.lock:q} "
        "--extract-to {params.root:q} 2> {log:q}"


rule checkpoint_by_hand:
    # Checkpoints without a public URL (e.g. the WRN-28-10 of wide-resnet.pytorch) are placed by hand; this rule
    # only explains that, so dry runs still show every job.
    output:
        f"{config['checkpoints_dir']}/{{file}}",
    log:
        "logs/download/{file}.log",
    wildcard_constraints:
        file="|".join(grid.by_hand_files(config)) or "^$",
    localrule: True
    shell:
        "echo '{output}: no public URL is known; place the file there by hand (see config/README.md)' "
        "| tee {log:q} >&2; exit 1"
