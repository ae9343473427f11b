"""Section 3 of the paper on an exact diffusion model: Theorem 3.1's posterior (``exact``), Theorem 3.3's robust
regions and radii (``regions``), and the certified radius of DensePure against the one-shot baseline
(``radius``). The artifacts' writers live in :mod:`densepure.report.theory`."""
