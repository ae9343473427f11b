"""The paper's headline claims decided sequentially: expected images and GPU-hours next to the full tables'.

For Tables A (CIFAR-10) and B (ImageNet) of config/paper.yaml, one claim per sigma and table radius, "DensePure
(b = 10, K = 40) certifies more images than the one-shot baseline" (``greater`` than 0, paired on the same images),
each on its own at alpha = 0.05 in waves of 10 images. The assumed effect is the paper's numbers for the two cells
(the one-shot baseline's from its Carlini et al. rows) with 15% discordant images (fewer where the accuracies allow
fewer); a last row prices the ImageNet claim at sigma 0.5, r 0.5 under a 7-point difference (75.6 vs 68.6) instead
of the paper's 3.8. :func:`densepure.plan.claims_cost.claim_costs` simulates the stopping rule on that finite image set over
many random orders; GPU-hours are those of ``densepure estimate`` (one H200, the config's savings as stated
assumptions). Prints a Markdown table (docs/claims.md holds its output).

    python benchmarks/claims.py              # 200 orders per claim (a few minutes on a CPU)
    python benchmarks/claims.py --runs 50    # quicker
"""

from __future__ import annotations

import argparse

import numpy as np

from densepure.plan.claims import load_claims
from densepure.plan.claims_cost import Effect, claim_costs
from densepure.plan.shares import store_shares
from densepure.plan.validation import load_config


def headline_claims(config: dict, artifact: str) -> dict:
    """One claim per sigma and radius of the artifact's panel: DensePure minus the one-shot baseline > 0."""
    panel = config["artifacts"][artifact]["panels"][0]
    return {f"{artifact}-s{sigma:g}-r{radius:g}": {
        "artifact": artifact, "sigma": sigma, "radius": radius, "first": {"method": "densepure"},
        "second": {"method": "onestep"}, "claim": "greater"}
        for sigma in panel["sigmas"] for radius in panel["radii"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", default="config/paper.yaml")
    parser.add_argument("--runs", type=int, default=200, help="simulated orders per claim [200]")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--wave", type=int, default=10)
    args = parser.parse_args()
    config = load_config(args.configfile)
    print("| claim (DensePure > one-shot) | paper | images (mean) | p90 | of | decided | GPU-h | "
          "full table GPU-h | share |\n|---|---|---|---|---|---|---|---|---|")
    rows = [(artifact, name, spec, None) for artifact in ("tableA", "tableB")
            for name, spec in headline_claims(config, artifact).items()]
    # the ImageNet claim at sigma 0.5, r 0.5 once more under a 7-point difference instead of the paper's 3.8
    name = "tableB-s0.5-r0.5"
    rows.append(("tableB", name, headline_claims(config, "tableB")[name], Effect(0.756, 0.686)))
    for artifact, name, spec, effect in rows:
        # each claim alone at alpha: one claim per config, so no family split
        one = {**config, "claims": {"alpha": args.alpha, "wave": args.wave, "seed": 0, "list": {name: spec}}}
        plan = load_claims(one)
        [cost] = claim_costs(one, plan, shares=store_shares(one), runs=args.runs,
                             effects={name: effect} if effect else None)
        e, s = cost.effect, cost.stopping
        assumed = " (assumed)" if effect else ""
        print(f"| {artifact} sigma {spec['sigma']:g}, r {spec['radius']:g} | {100 * e.first:.1f} vs "
              f"{100 * e.second:.1f}{assumed} | {cost.images:.0f} | {np.percentile(s.images, 90):.0f} | "
              f"{cost.set_size} | {s.share('true'):.0%} true, {s.share('false'):.0%} false | {cost.hours:,.0f} | "
              f"{cost.artifact_hours:,.0f} | {cost.hours / cost.artifact_hours:.3f} |", flush=True)


if __name__ == "__main__":
    main()
