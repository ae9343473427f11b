"""``densepure claims``: decide sequential claims after a wave of images, and write their report."""

from __future__ import annotations

import argparse
from pathlib import Path

from densepure.cli.args import config_option

CLAIMS_CONFIG = "workflow config with a `claims` section (the workflow passes its effective config)"

EPILOG = """\
The workflow's target `claims` runs these after each wave (docs/claims.md):
  densepure claims decide --configfile work/default/config.effective.yaml --wave 0 --out work/default/claims/wave0.json
  densepure claims report --configfile work/default/config.effective.yaml --wave-file work/default/claims/wave2.json \\
      --out-dir results/default/claims
With probability at least 1 - alpha over the image order, every decided claim says what the full artifact would say
(anytime-valid confidence sequences for sampling without replacement, Waudby-Smith and Ramdas, NeurIPS 2020)."""


def register(subparsers) -> None:
    """Add ``densepure claims decide`` and ``densepure claims report`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "claims", help="decide the config's claims from the images certified so far",
        description="Sequential claims (the config's `claims` section): each claim is about a number the full "
                    "artifact prints (a cell's certified accuracy, or the paired difference of two settings), "
                    "decided from the first images of a seeded random order of its image set by a confidence "
                    "sequence at the claim's share of alpha. `decide` writes every claim's status after a wave "
                    "(and which claims need the next one); `report` writes claims.tsv, claims.md and the orders.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", required=True, metavar="{decide,report,shards}")
    decide = actions.add_parser("decide", help="every claim's status after a wave, as JSON",
                                description="Read the votes stores of each claim's settings for the images of "
                                            "waves 0..WAVE and write each claim's decision, estimate, sequence and "
                                            "images used, and the claims still open, as JSON.")
    config_option(decide, CLAIMS_CONFIG)
    decide.add_argument("--wave", type=int, required=True, help="the wave just certified (0, 1, ...)")
    decide.add_argument("--out", type=Path, required=True, help="JSON file to write")
    decide.set_defaults(handler=run_decide)
    report = actions.add_parser("report", help="claims.tsv, claims.md and the image orders",
                                description="Write claims.tsv (one row per claim), claims.md (with the guarantee) "
                                            "and order-<dataset>-<images>.txt from the last wave's JSON.")
    config_option(report, CLAIMS_CONFIG)
    report.add_argument("--wave-file", type=Path, required=True, help="the last wave's JSON (`decide --out`)")
    report.add_argument("--out-dir", type=Path, required=True, help="folder for the report files")
    report.set_defaults(handler=run_report)
    shards = actions.add_parser("shards", help="mark the full grid's jobs the claims left nothing to do",
                                description="Write the result TSV of every certification job of the full grid "
                                            "whose images (and the one-shot images it provides) are all stored, so "
                                            "that a later `snakemake all` lists no job for them.")
    config_option(shards, CLAIMS_CONFIG)
    shards.set_defaults(handler=run_shards)


def _claims_config(path: str) -> dict:
    from densepure.plan.claims import load_claims
    from densepure.plan.validation import load_config

    config = load_config(path)
    if not load_claims(config).claims:
        raise ValueError(f"{path}: claims.list: no claims configured")
    return config


def run_decide(args: argparse.Namespace) -> int:
    """Write the wave's decisions (:func:`densepure.report.claims.write_wave`); print the open claims."""
    from densepure.report.claims import write_wave

    if args.wave < 0:
        raise ValueError(f"--wave {args.wave}: waves count from 0")
    found = write_wave(_claims_config(args.configfile), args.wave, args.out)
    for name, status in found["claims"].items():
        print(f"{name}\t{status['decision'] or ('undecided' if status['closed'] else 'open')}\t"
              f"{status['images']}/{status['N']} images")
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Write the report (:func:`densepure.report.claims.write_report`) and print the paths."""
    from densepure.report.claims import write_report

    if not args.wave_file.is_file():
        raise ValueError(f"--wave-file {args.wave_file}: no such file")
    write_report(_claims_config(args.configfile), args.wave_file, args.out_dir)
    print(args.out_dir / "claims.tsv")
    print(args.out_dir / "claims.md")
    return 0


def run_shards(args: argparse.Namespace) -> int:
    """Write the TSVs of the full grid's jobs with nothing left (:func:`densepure.report.claims.
    mark_complete_shards`) and print them."""
    from densepure.plan.validation import load_config
    from densepure.report.claims import mark_complete_shards

    for path in mark_complete_shards(load_config(args.configfile)):
        print(path)
    return 0
