"""A certification job: execution options, network wrappers, the purifier, the scheduler of rows, the runner over
votes stores, the per-image results and progress. Networks come in as callables; :func:`densepure.job.assemble.
certify_images` assembles a job from a setting and the networks."""
