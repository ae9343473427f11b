"""``densepure table``, ``figure``, ``compare``, ``import`` and ``export``: reports from per-image results."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from densepure.cli.args import alpha_or_word, check_output_path, count_or_unknown, non_negative_float, positive_float, \
    positive_int
from densepure.report.spec import default_spec

logger = logging.getLogger(__name__)

EPILOG_IMPORT = """\
examples:
  # Cohen et al.'s logs (locuslab/smoothing certify.py), one per sigma, and the table of all three; alpha is not
  # stated in their logs: 'infer' records the smallest standard alpha that certifies every radius, marked inferred
  densepure import cohen noise_0.25.tsv noise_0.50.tsv noise_1.00.tsv --sigma 0.25 0.5 1.0 \\
      --dataset cifar10 --classifier resnet-110 --method cohen --label "RS (Cohen et al.)" --alpha infer \\
      --out results/imported/cohen --table results/imported/tables
  # a whole tree in one command: placeholders named like setting keys set them, others fill the options
  densepure import cohen --pattern 'models/{model}/noise_{train}/test/sigma_{sigma}' --dataset cifar10 \\
      --classifier '{model}-noise{train}' --method cohen --source "Cohen et al. (2019)" --out results/imported/rs
  # the setting in a sidecar file next to each log instead (noise_0.25.tsv.yaml: dataset, classifier, ...)
  densepure import cohen noise_0.25.tsv --out results/imported/cohen
  # the official DensePure code's per-seed label files of seeds 0..39 as a votes store, then K-merging:
  densepure import densepure-votes --predictions exp/cifar10/0.25- --labels results/seed0_diffpure \\
      --dataset cifar10 --classifier vit-b16-cifar10 --sigma 0.25 --b 10 --votes-dir votes/official
  densepure aggregate --votes-dir votes/official --K 1 10 40 --out results/official/K{K}.tsv
"""


def _add_results(p) -> None:
    p.add_argument("--results", required=True, nargs="+", type=Path,
                   help="result TSVs, or directories searched recursively for *.tsv")


SPEC_HELP = ("YAML with the artifact specs (a workflow config); config/paper.yaml and "
             "config/config.yaml (or: paper, default) are found in the installed package when not in the current "
             "folder")


def register(subparsers) -> None:
    """Add ``table``, ``figure``, ``compare``, ``import``, ``export`` and ``ledger`` to an argparse subparsers object
    (each sets ``report_command``)."""
    p = subparsers.add_parser("table", help="write a table artifact as CSV, Markdown, LaTeX and HTML",
                              description="Write a table artifact from result TSVs: the paper's layout (.csv, .md, "
                                          ".tex, .html), the tidy cells (_cells.csv) and the paired differences "
                                          "with their intervals (_paired.csv). Without --spec: every setting in "
                                          "the results, at --radii.")
    p.add_argument("--artifact", required=True, help="artifact name in the spec (e.g. tableA), or any name "
                                                     "without --spec")
    p.add_argument("--spec", help=SPEC_HELP)
    _add_results(p)
    p.add_argument("--outdir", required=True, type=Path, help="output directory")
    p.add_argument("--paper", type=Path, help="published Table 1 CSV for the quoted baselines "
                                              "[results/paper/table1.csv]")
    p.add_argument("--radii", type=non_negative_float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0],
                   help="table columns without --spec [0 0.25 0.5 0.75 1.0]")
    p.add_argument("--allow-missing", action="store_true",
                   help="leave settings of the spec without results out (with a warning) instead of failing")
    p.add_argument("--style", choices=["compact", "full"], default="compact",
                   help="Markdown, LaTeX and HTML cells: compact (the paired difference only where its 95%% interval "
                        "excludes 0) or full (every difference with its interval); the CSV is always full "
                        "[compact]")
    p.set_defaults(report_command="table", handler=run_report)

    p = subparsers.add_parser("figure", help="draw a figure artifact as PNG and PDF",
                              description="Draw a figure artifact from result TSVs (PNG, PDF and the plotted data "
                                          "_data.csv with n and 95% intervals).")
    p.add_argument("--artifact", required=True, help="artifact name in the spec, e.g. fig3")
    p.add_argument("--spec", help=SPEC_HELP + "; without it: every setting of the results as curves")
    _add_results(p)
    p.add_argument("--outdir", required=True, type=Path, help="output directory")
    p.add_argument("--run", default="", help="run name, written into the PNG's and PDF's metadata (not drawn)")
    p.add_argument("--allow-missing", action="store_true", help="draw without the settings that have no results")
    p.add_argument("--bands", choices=["on", "off", "auto"],
                   help="95%% bands of the curves (and error bars of K ablations): auto draws them where a panel "
                        "has at most two curves whose bands overlap over at most half the radii [the spec's "
                        "`bands`, else auto]")
    p.set_defaults(report_command="figure", handler=run_report)

    p = subparsers.add_parser("compare", help="compare reproduced cells with the paper's numbers",
                              description="Each published cell next to the reproduced one: the difference with its "
                                          "95% interval and a p-value that counts Monte-Carlo variation (same "
                                          "images) or image sampling too (different images), Holm-adjusted over "
                                          "the artifact. Writes a CSV and an HTML page next to it.")
    p.add_argument("--artifact", required=True, help="artifact name, e.g. tableA or fig4_left")
    p.add_argument("--spec", required=True, help=SPEC_HELP)
    _add_results(p)
    p.add_argument("--paper", type=Path, help="published numbers [results/paper/<table>.csv or the reference plot "
                                              "data for K-ablation figures]")
    p.add_argument("--image-sets", type=Path, help="which images the paper certified [results/paper/image_sets.yaml]")
    p.add_argument("--out", required=True, type=Path, help="output CSV")
    p.set_defaults(report_command="compare", handler=run_report)

    p = subparsers.add_parser("import", help="bring in results produced elsewhere",
                              description="Turn foreign results into ones that tables, figures and comparisons "
                                          "accept.", epilog=EPILOG_IMPORT,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    formats = p.add_subparsers(dest="import_format", required=True, parser_class=type(p),
                               metavar="{cohen,densepure-votes}")
    c = formats.add_parser("cohen", help="per-image logs in Cohen et al.'s format (idx label predict radius correct "
                                         "[time])", epilog=EPILOG_IMPORT,
                           description="Import per-image logs as their files write them (radii keep their digits) "
                                       "into --out, all or nothing; a log goes to its path relative to the folder "
                                       "holding all the logs, so equal names in different folders never collide. "
                                       "Re-importing the same logs changes nothing; a different result is never "
                                       "overwritten.", formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("logs", nargs="*", type=Path, help="log files")
    c.add_argument("--pattern", help="import every file matching this path with {name} placeholders, e.g. "
                                     "'models/{model}/noise_{train}/test/sigma_{sigma}': a placeholder named like a "
                                     "setting key (sigma, N, alpha, dataset, classifier, ...) sets it, and any "
                                     "option below may use the placeholders, e.g. --classifier '{model}-{train}'")
    c.add_argument("--out", required=True, type=Path, help="output directory (one <log name>.tsv per log, in the "
                                                           "logs' folder structure)")
    c.add_argument("--sidecar", type=Path, help="YAML with the setting [<log>.yaml next to each log, if present]")
    g = c.add_argument_group("the setting (over the sidecar; N0, N, alpha default to Cohen et al.'s 100, 100000, "
                             "0.001)")
    g.add_argument("--dataset", help="cifar10, imagenet, ... (any name)")
    g.add_argument("--classifier", help="classifier name, e.g. resnet-110")
    g.add_argument("--method", help="method key of the rows, e.g. cohen (densepure, onestep, carlini are ours)")
    g.add_argument("--label", help="display label of the method's rows, e.g. 'RS (Cohen et al.)' [the method]")
    g.add_argument("--source", help="where the logs come from, e.g. a paper and its repository at a commit "
                                    "[import:cohen:<log path>]")
    g.add_argument("--sigma", type=positive_float, nargs="+", help="noise level: one for all logs, or one per log")
    g.add_argument("--b", type=positive_int)
    g.add_argument("--K", type=positive_int)
    g.add_argument("--N0", type=positive_int)
    g.add_argument("--N", type=count_or_unknown, help="estimation draws, or 'unknown'")
    g.add_argument("--alpha", type=alpha_or_word,
                   help="failure probability; 'infer': the smallest of 0.001, 0.005, 0.01, 0.05, 0.1 with which N "
                        "draws certify every radius of the log (recorded as inferred); 'unknown' (recorded as such)")
    g.add_argument("--precision", help="fp32, fp16, bf16 [fp32]")
    c.add_argument("--table", type=Path, help="also write the table of the imported results into this folder")
    c.add_argument("--radii", type=non_negative_float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0],
                   help="columns of --table [0 0.25 0.5 0.75 1.0]")
    c.set_defaults(report_command="import", handler=run_report)
    v = formats.add_parser("densepure-votes", help="the official DensePure code's per-seed label files as a votes "
                                                   "store", epilog=EPILOG_IMPORT,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("--predictions", required=True, help="path prefix of the label files: {prefix}{id}-{seed}-n0_"
                                                        "predictions.npy (the reference's exp/<dataset>/<sigma>-)")
    v.add_argument("--labels", required=True, type=Path, help="a certify output of the run (its idx and label "
                                                              "columns)")
    v.add_argument("--votes-dir", required=True, type=Path, help="votes store to write")
    v.add_argument("--dataset", required=True, help="cifar10 or imagenet")
    v.add_argument("--classifier", required=True, help="classifier name")
    v.add_argument("--diffusion", default="imported", help="diffusion model name [imported]")
    v.add_argument("--sigma", required=True, type=float)
    v.add_argument("--b", required=True, type=int, help="reverse steps of the run")
    v.add_argument("--K", type=positive_int, help="seeds to stack [all consecutive seeds found from 0]")
    v.add_argument("--N0", type=positive_int, default=100, help="selection draws (the rest of each label file's "
                                                                  "draws are the N estimation draws) [100]")
    v.set_defaults(report_command="import", handler=run_report)

    p = subparsers.add_parser("export", help="one JSON of a run's results for a leaderboard",
                              description="Per setting: certified accuracy at the radii with 95% intervals, clean "
                                          "accuracy, sigma, N0, N, alpha, the image ids, the checkpoints' sha256 "
                                          "(from the votes stores) and the cost per image.")
    _add_results(p)
    p.add_argument("--run", required=True, help="run name")
    p.add_argument("--votes-dir", nargs="*", type=Path, default=[], help="votes stores of the run (checkpoints, "
                                                                         "device)")
    p.add_argument("--radii", type=non_negative_float, nargs="+", help="radii [0, 0.25, ..., 4.0]")
    p.add_argument("--out", required=True, type=Path, help="output JSON")
    p.set_defaults(report_command="export", handler=run_report)

    p = subparsers.add_parser("ledger", help="one table of every reproduced and imported result",
                              description="Every certified result the results hold, one row per setting: where it "
                                          "comes from, images, clean and certified accuracy at the standard radii "
                                          "with 95%% intervals ('not certifiable' beyond what N and alpha allow), "
                                          "forward passes per image (measured from the votes stores for ours), the "
                                          "inputs' sha256; and every pair of results of one dataset and sigma (paired "
                                          "where both are ours on the same images). Writes ledger.csv, .md, .html, "
                                          ".json (checked against workflow/schemas/ledger.schema.json) and "
                                          "ledger_pairs.csv.")
    _add_results(p)
    p.add_argument("--outdir", required=True, type=Path, help="output directory")
    p.add_argument("--run", default="ledger", help="name of the run in the title and the JSON [ledger]")
    p.add_argument("--votes-dir", nargs="*", type=Path, default=[],
                   help="votes stores, or folders searched recursively for them (measured cost of our results)")
    p.add_argument("--radii", nargs="+", type=dataset_radii, metavar="DATASET:R,R,...",
                   help="standard radii per dataset [cifar10:0.25,0.5,0.75,1 imagenet:0.5,1,1.5,2,3]")
    p.set_defaults(report_command="ledger", handler=run_report)


def dataset_radii(text: str) -> tuple[str, list[float]]:
    """``cifar10:0.25,0.5`` -> ``("cifar10", [0.25, 0.5])``."""
    dataset, _, values = text.partition(":")
    try:
        radii = [non_negative_float(v) for v in values.split(",")]
    except argparse.ArgumentTypeError:
        radii = []
    if not dataset or not radii:
        raise argparse.ArgumentTypeError(f"expected DATASET:R,R,... with radii >= 0, got {text!r}")
    return dataset, radii


def _load(args):
    from densepure.report.load import load_results, log_summary

    results = load_results(args.results)
    log_summary(results)
    return results


def _table(args) -> list[Path]:
    from densepure.report.layout import write_table
    from densepure.report.spec import load_spec
    from densepure.report.tables import table_artifact

    spec = load_spec(args.spec, args.artifact) if args.spec else None
    results = _load(args)
    spec = spec or default_spec(results, args.radii)
    kwargs = {"allow_missing": args.allow_missing}
    if args.artifact == "table1" and args.paper:
        kwargs["paper_csv"] = args.paper
    table = table_artifact(results, spec, args.artifact, **kwargs)
    if table.provenance:
        logger.warning(table.provenance)
    paths = write_table(table, args.artifact, args.outdir, style=args.style)
    _warn_incomplete(table.cells)
    return paths


def _compare(args) -> list[Path]:
    from densepure.report.paper import compare_artifact, load_image_sets, write_comparison
    from densepure.report.spec import load_spec

    spec = load_spec(args.spec, args.artifact)
    sets = load_image_sets(args.image_sets) if args.image_sets else None
    results = _load(args)
    out = compare_artifact(results, spec, args.artifact, args.paper, sets)
    paths, summary = write_comparison(out, args.out, args.artifact)
    print(f"{args.out}: {summary}")
    return paths


def _import(args) -> list[Path]:
    from densepure.report.imports import import_cohen, import_densepure_votes

    if args.import_format == "densepure-votes":
        setting = {"dataset": args.dataset, "classifier": args.classifier, "sigma": args.sigma, "b": args.b,
                   "N0": args.N0, "diffusion": args.diffusion}
        return [import_densepure_votes(args.predictions, args.labels, args.votes_dir, setting, K=args.K)]
    if not args.logs and not args.pattern:
        raise ValueError("give the logs to import, or --pattern")
    given = {k: getattr(args, k) for k in ("dataset", "classifier", "method", "label", "source", "b", "K", "N0", "N",
                                           "alpha", "precision")}
    paths = import_cohen(args.logs, args.out, given, sigmas=args.sigma, sidecar=args.sidecar, pattern=args.pattern)
    if args.table:
        from densepure.report.layout import write_table
        from densepure.report.load import load_results
        from densepure.report.tables import table_artifact

        results = load_results(paths)
        name = args.method or results["method"].iloc[0]
        paths += write_table(table_artifact(results, default_spec(results, args.radii), name), name, args.table)
    return paths


def _export(args) -> list[Path]:
    from densepure.report.export import DEFAULT_RADII, export_run, write_export

    from densepure.report.export import find_stores

    stores = find_stores(args.votes_dir)
    results = _load(args)
    return [write_export(export_run(results, args.run, args.radii or DEFAULT_RADII, stores), args.out)]


def _ledger(args) -> list[Path]:
    from densepure.report.export import find_stores
    from densepure.report.ledger import check_document, ledger, ledger_document, ledger_pairs, ledger_table, \
        write_ledger

    stores = find_stores(args.votes_dir)
    results = _load(args)
    radii = dict(args.radii or [])
    entries = ledger(results, radii, stores)
    pairs = ledger_pairs(results, radii)
    document = ledger_document(entries, pairs, args.run)
    check_document(document)
    return write_ledger(document, ledger_table(entries), pairs, args.outdir)


def _figure(args) -> list[Path]:
    from densepure.report.figures import write_figure
    from densepure.report.spec import curves_spec, load_spec

    spec = load_spec(args.spec, args.artifact) if args.spec else None
    results = _load(args)
    spec = spec or curves_spec(results)
    paths = write_figure(results, spec, args.artifact, args.outdir, run=args.run, allow_missing=args.allow_missing,
                         bands=args.bands)
    _warn_incomplete(pd.read_csv(paths[-1]))
    return paths


RUNNERS = {"table": _table, "figure": _figure, "compare": _compare, "import": _import, "export": _export,
           "ledger": _ledger}


def run_report(args: argparse.Namespace) -> int:
    """Run a report command; prints the written paths. Errors are ValueError."""
    cmd = getattr(args, "report_command", None) or getattr(args, "command", None)
    if cmd not in RUNNERS:
        raise ValueError(f"unknown report command {cmd!r}")
    _check_outputs(args)
    for path in RUNNERS[cmd](args):
        print(path)
    return 0


def _check_outputs(args) -> None:
    """Refuse outputs that cannot be written, and artifact names that are no plain file name, before reading
    anything (one line naming the option)."""
    from densepure.files.paths import safe_name

    if getattr(args, "artifact", None) is not None and getattr(args, "report_command", "") in ("table", "figure"):
        safe_name(args.artifact, "--artifact")
    if getattr(args, "outdir", None) is not None:
        check_output_path(args.outdir, "--outdir", folder=True)
    if getattr(args, "out", None) is not None and getattr(args, "report_command", "") in ("compare", "export"):
        check_output_path(args.out, "--out")


def _warn_incomplete(cells: pd.DataFrame) -> None:
    from densepure.report.tables import incomplete_settings

    for line in incomplete_settings(cells):
        logger.warning(line)
