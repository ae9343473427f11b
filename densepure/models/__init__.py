"""The networks and data a job runs on: the ADM UNet and diffusion bundles, classifiers with their preprocessing,
weights files, datasets, plug-ins, downloads, and the embedded default's small models with their training."""
