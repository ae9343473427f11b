"""The paper's maths: noise addressed by indices, diffusion schedules and timesteps, the reverse process, Cohen et
al.'s certification with its stopping rules, and the lazy votes of one image. No files, no command line, no
networks (these come in as callables)."""
