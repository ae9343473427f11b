"""DensePure: diffusion-purified randomized smoothing, faithful to the reference code."""
__version__ = "0.1.0"
