"""``densepure theory {thm31,fig2,radius}``: Section 3 of the paper on an exact diffusion model."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)

EPILOG_THEORY = """\
examples (SPEC is a config file with a `theory` section, e.g. the workflow's work/<run>/config.effective.yaml):
  densepure theory thm31 --spec SPEC --csv thm31.csv --md thm31.md
  densepure theory fig2 --spec SPEC --png fig2.png --pdf fig2.pdf --csv fig2_data.csv
  densepure theory fig2 --spec SPEC --png fig2.png          # any of its three outputs, at least one
  densepure theory radius --spec SPEC --csv r.csv --md r.md --png r.png --pdf r.pdf
"""


def register(sub) -> None:
    """``densepure theory {thm31,fig2,radius}``: Section 3 of the paper on an exact diffusion model."""
    p = sub.add_parser("theory", help="Section 3 of the paper on an exact diffusion model (CPU, seconds)",
                       description="Section 3 of the paper on an exact diffusion model (a Gaussian mixture whose "
                                   "noised score is closed form): Theorem 3.1, Theorem 3.3 / Figure 2, and the "
                                   "certified radius of the majority vote vs the one-shot posterior mean.",
                       epilog=EPILOG_THEORY, formatter_class=argparse.RawDescriptionHelpFormatter)
    artifacts = p.add_subparsers(dest="theory_command", required=True, parser_class=type(p))
    q = artifacts.add_parser("thm31", help="Theorem 3.1: the b-step sampler against the exact posterior (table)")
    q.add_argument("--spec", required=True, help="config YAML with a `theory` section")
    q.add_argument("--csv", required=True)
    q.add_argument("--md", required=True)
    q = artifacts.add_parser("fig2", help="Theorem 3.3 / Figure 2: robust region, sub-regions, r and r_sub "
                             "(figure + data)", description="Theorem 3.3 / Figure 2 on the exact model; writes "
                             "each output given (at least one of --png, --pdf, --csv).")
    q.add_argument("--spec", required=True, help="config YAML with a `theory` section")
    q.add_argument("--png", help="the figure as PNG")
    q.add_argument("--pdf", help="the figure as PDF")
    q.add_argument("--csv", help="the plotted numbers")
    q = artifacts.add_parser("radius", help="certified radius: DensePure majority vote vs one-shot posterior mean")
    q.add_argument("--spec", required=True, help="config YAML with a `theory` section")
    for name in ("csv", "md", "png", "pdf"):
        q.add_argument(f"--{name}", required=True)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """``densepure theory {thm31,fig2,radius}``: write one artifact from the `theory` section of ``args.spec``."""
    if args.theory_command == "fig2" and not (args.png or args.pdf or args.csv):
        raise ValueError("theory fig2 writes nothing: give at least one of --png, --pdf, --csv")
    import torch

    from densepure.report.theory import fig2_outputs, radius_outputs, theory_settings, thm31_outputs

    torch.set_num_threads(1)
    try:
        settings = theory_settings(args.spec)
        if args.theory_command == "thm31":
            for row in thm31_outputs(settings, args.csv, args.md):
                logger.info(f"sigma {row['sigma']:g} b {row['b']:4d}: tv {row['tv']:.4f} std_ratio "
                            f"{row['std_ratio']:.3f} p {row['p']:.2g}")
        elif args.theory_command == "fig2":
            num = fig2_outputs(settings, args.png, args.pdf, args.csv)
            logger.info(f"sigma_t {num['sigma_t']:.4f}: r {num['r']:.4f}, r_sub {num['r_sub']:.4f}")
        else:
            radius_outputs(settings, args.csv, args.md, args.png, args.pdf)
    except (KeyError, OSError) as err:  # a missing setting or an unreadable spec: one line, like a ValueError
        raise ValueError(f"{args.spec}: {err}") from err
    return 0
