"""``densepure estimate``: the GPU-hours of a workflow config, before running it."""

from __future__ import annotations

import argparse
from pathlib import Path

from densepure.cli.args import config_option


def register(subparsers) -> None:
    """Add ``densepure estimate`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "estimate", help="GPU-hours of a workflow config, per artifact and in total",
        description="Estimate the GPU-hours of the certification jobs of a workflow config: per votes store, "
                    "images x (N0 + N) x (UNet calls per draw / UNet throughput + classifier calls per draw / "
                    "classifier throughput). UNet calls per draw: 1 one-shot, 1 + (b-1) K for b reverse steps "
                    "(the K votes share the first step); classifier calls: K (1 one-shot). An artifact costs the "
                    "stores it reads; the total counts every store once.",
        epilog="Throughputs (images/s) are those of one H200 (see densepure/plan/rates.py; the digits models: one CPU "
               "thread). Override them with --rates FILE, e.g. the JSON of benchmarks/throughput.py, or\n"
               "  diffusion: {guided-imagenet256: {fp16: 120.0}}\n  classifiers: {beit-large-512: {bf16: 150.0}}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    config_option(p)
    p.add_argument("--rates", type=Path, help="YAML/JSON file of throughputs replacing the built-in ones")
    p.add_argument("--format", choices=["text", "csv"], default="text", help="output format [text]")
    p.add_argument("--stores", action="store_true", help="one row per votes store instead of per artifact")
    p.add_argument("--savings", action=argparse.BooleanOptionalAction, default=True,
                   help="count the config's exact savings (lazy votes, hopeless images, certain abstention, the "
                        "one-shot baseline from DensePure jobs); --no-savings: every draw and vote [yes]")
    p.add_argument("--from-votes", type=Path, metavar="DIR",
                   help="measure the savings' shares of draws and votes on the finished stores under DIR (the "
                        "workflow's <work_dir>/<run>/votes); stores not there, or holding votes of another setting "
                        "than the config's (a warning names them), use the mean of the measured ones of their "
                        "dataset, else stated assumptions")
    p.add_argument("--shared-first-step", action=argparse.BooleanOptionalAction, default=None,
                   help="count 1 + (b-1) K UNet calls per draw for every store; --no-shared-first-step counts b K, "
                        "as the reference code runs [as each dataset's mode runs: b K in mode reference]")
    claims = p.add_argument_group(
        "claims", "the expected images and GPU-hours of the config's `claims:` (decided sequentially, see the claims "
                  "docs), simulated with their stopping rule under an assumed effect: the paper's numbers for the "
                  "claim's cells by default")
    claims.add_argument("--claims", action="store_true", help="estimate the config's claims instead of its artifacts")
    claims.add_argument("--effect", action="append", default=[], metavar="NAME=FIRST[,SECOND]",
                        help="assumed certified accuracies (fractions) of claim NAME's first and second setting, e.g. "
                             "--effect dp_beats_onestep=0.67,0.6 (repeatable) [the paper's numbers]")
    claims.add_argument("--discordant", type=float, default=0.15, metavar="SHARE",
                        help="assumed share of images only one side of a paired claim certifies [0.15]")
    claims.add_argument("--runs", type=int, default=200, help="simulated image orders per claim [200]")
    p.set_defaults(handler=run_estimate)


def run_estimate(args: argparse.Namespace) -> int:
    """Print the estimate for ``args`` (from :func:`register`); returns the exit status."""
    from densepure.files import resources
    from densepure.plan.estimate_text import estimate_text
    from densepure.plan.rates import load_rates
    from densepure.plan.shares import store_shares
    from densepure.plan.validation import load_config

    config = load_config(args.configfile)
    rates = load_rates(args.rates)
    shares = store_shares(config, args.from_votes) if args.savings else None
    if args.claims:
        print(claims_estimate(config, args, rates, shares), end="")
        return 0
    print(estimate_text(config, str(resources.config_file(args.configfile)), rates, args.shared_first_step,
                        args.stores, shares, args.format), end="")
    return 0


def claims_estimate(config: dict, args: argparse.Namespace, rates: dict, shares: dict | None) -> str:
    """The text of ``densepure estimate --claims``."""
    from densepure.plan.claims import load_claims
    from densepure.plan.claims_cost import claim_costs, claims_text, parse_effect
    from densepure.plan.validation import ConfigError

    if not 0 <= args.discordant <= 1:
        raise ConfigError(f"--discordant {args.discordant}: a share in [0, 1]")
    if args.runs < 1:
        raise ConfigError(f"--runs {args.runs}: at least 1")
    plan = load_claims(config)
    if not plan.claims:
        raise ConfigError(f"{args.configfile}: no claims (add a `claims:` section, see the claims docs)")
    effects = dict(parse_effect(text, args.discordant) for text in args.effect)
    unknown = sorted(set(effects) - {c.name for c in plan.claims})
    if unknown:
        raise ConfigError(f"--effect: no claim named {', '.join(unknown)} (claims: "
                          f"{', '.join(c.name for c in plan.claims)})")
    costs = claim_costs(config, plan, rates, shares, args.runs, args.discordant, effects)
    return claims_text(costs, plan.alpha, plan.wave, args.runs)
