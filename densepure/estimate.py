"""``densepure estimate``: the GPU-hours a workflow config costs, per artifact and in total, before running it.

Cost model. A votes store (:class:`densepure.grid.Setting`) certifies ``images`` images with ``N0 + N`` noisy
draws each; per draw it makes

* ``u`` UNet forward passes: 1 for a one-shot method (``onestep``, ``carlini`` or b = 1), else
  ``1 + (b - 1) K`` -- the K votes of a draw share the first reverse step (:func:`densepure.denoise.purify_votes`
  calls the network once on the draw, then once per vote for each of the b - 1 remaining steps). The reference
  code runs every vote from scratch, ``b K`` calls (a dataset's ``mode: reference``, or ``--no-shared-first-step``
  for every store);
* ``c`` classifier forward passes: K, or 1 for a one-shot method (its votes are copies of one image).

so that ``seconds = images (N0 + N) (u / unet_rate + c / classifier_rate)``, with the throughputs (images per
second) of :data:`RATES` for the UNet precision and classifier precision of the dataset's execution mode
(:func:`densepure.execution.resolve_execution`: the ``mode`` key, then ``precision`` if set). An artifact costs
the stores it reads (:func:`densepure.grid.stores_for` of each of its aggregations); a store read by several
artifacts is computed once, so the total counts each store once and is less than the sum of the artifact rows. Data loading, checkpoint loading and certification arithmetic are left out.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from . import grid, resources
from .execution import resolve_execution

# Images per second of one forward pass, on one NVIDIA H200 unless noted. "measured" numbers are ours; the others
# are assumptions, to be replaced with measured ones through --rates (benchmarks/throughput.py writes such a file:
# fp16/fp32 from the reference mode, bf16 from the fast mode).
RATES: dict[str, dict] = {
    "diffusion": {  # per (architecture, UNet precision)
        # measured: 87.7 img/s in fp16 at batch 16 (the reference's batch, einsum attention); bf16: 182.5 compiled
        # with SDPA and channels_last (the fast mode). fp32: assumed 3x slower than fp16 (TF32 convs).
        "guided-imagenet256": {"fp16": 87.7, "bf16": 182.5, "fp32": 29.2},
        # measured: 2,600 img/s in fp32 at batch 100 (the reference's); bf16: 5,900 is fp32 at batch 1000 (the
        # fast mode's batch), bf16 assumed no slower; fp16: assumed as fp32 at batch 100.
        "improved-cifar10": {"fp32": 2600.0, "fp16": 2600.0, "bf16": 5900.0},
        # the embedded default's 8x8 UNet, measured on ONE CPU THREAD at batch 200 (the default runs on the CPU)
        "bundle": {"fp32": 1290.0, "fp16": 1290.0, "bf16": 1290.0},
    },
    "classifiers": {  # per registered classifier name: images/s in any precision, or per precision
        "beit-large-512": {"fp32": 127.0, "bf16": 376.0},  # measured (BEiT-L/16 at 512 x 512; bf16 at batch 64)
        "vit-b16-cifar10": {"fp32": 4500.0, "bf16": 10800.0},  # measured (ViT-B/16 at 224 x 224)
        "wrn-28-10": 5000.0,  # assumed: 10.5 GFLOP per 32 x 32 image, ~0.6x ViT-B/16's (17.6 GFLOP) efficiency
        "wrn-50-2": 2000.0,  # assumed: ~23 GFLOP at 224 x 224
        "resnet-152": 2000.0,  # assumed: ~23 GFLOP at 224 x 224
        "mixer-b16-miil": 2000.0,  # assumed: ~25 GFLOP at 224 x 224
        "digits-cnn": 8000.0,  # measured on ONE CPU THREAD at batch 200
    },
}


class RatesError(ValueError):
    """A throughput that is missing or malformed (in the table or a --rates file); the message names it."""


# --- the cost model --------------------------------------------------------------------------------------------


def unet_calls_per_draw(b: int, K: int, one_shot: bool, shared_first_step: bool = True) -> int:
    """UNet forward passes per noisy draw: 1 one-shot; ``1 + (b - 1) K`` with the first step shared, else ``b K``."""
    if one_shot:
        return 1
    return 1 + (b - 1) * K if shared_first_step else b * K


def classifier_calls_per_draw(K: int, one_shot: bool) -> int:
    """Classifier forward passes per noisy draw: one per vote, 1 for a one-shot method."""
    return 1 if one_shot else K


@dataclass(frozen=True)
class StoreCost:
    """Cost of one votes store (one per (setting, K group), see :func:`densepure.grid.settings`)."""

    name: str
    key: grid.SettingKey
    unet_model: str  # "<architecture> <precision>", the key of its UNet throughput
    images: int
    jobs: int
    shard_images: int  # images of its largest certification job
    draws: float  # draws computed per image: N0 + N, less with the savings
    unet_per_draw: float
    classifier_per_draw: float
    unet_rate: float
    classifier_rate: float

    @property
    def seconds_per_image(self) -> float:
        return self.draws * (self.unet_per_draw / self.unet_rate + self.classifier_per_draw / self.classifier_rate)

    @property
    def seconds(self) -> float:
        return self.images * self.seconds_per_image

    @property
    def longest_job_seconds(self) -> float:
        return self.shard_images * self.seconds_per_image

    @property
    def unet_calls(self) -> int:
        return round(self.images * self.draws * self.unet_per_draw)

    @property
    def classifier_calls(self) -> int:
        return round(self.images * self.draws * self.classifier_per_draw)


@dataclass(frozen=True)
class Row:
    """Cost of a set of stores: one artifact, or the total (every store once)."""

    name: str
    target: str
    stores: list[StoreCost]

    @property
    def jobs(self) -> int:
        return sum(s.jobs for s in self.stores)

    @property
    def images(self) -> int:
        return sum(s.images for s in self.stores)

    @property
    def unet_calls(self) -> int:
        return sum(s.unet_calls for s in self.stores)

    @property
    def classifier_calls(self) -> int:
        return sum(s.classifier_calls for s in self.stores)

    @property
    def hours(self) -> float:
        return sum(s.seconds for s in self.stores) / 3600

    @property
    def longest_job_hours(self) -> float:
        return max((s.longest_job_seconds for s in self.stores), default=0.0) / 3600


def load_rates(path: str | Path | None = None) -> dict[str, dict]:
    """The throughput table, with the entries of a YAML/JSON file ``path`` replacing the built-in ones::

        diffusion: {guided-imagenet256: {fp16: 120.0}}   # images/s per architecture and precision
        classifiers: {beit-large-512: 150.0}             # images/s per classifier, any precision
        classifiers: {beit-large-512: {bf16: 376.0}}     # ... or per precision
        benchmark: {...}                                 # ignored (what benchmarks/throughput.py measured)

    The JSON written by ``benchmarks/throughput.py`` is such a file.
    """
    rates = copy.deepcopy(RATES)
    if path is None:
        return rates
    try:
        extra = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise RatesError(f"{path}: cannot read rates file ({' '.join(str(err).split())})") from None
    if not isinstance(extra, dict) or set(extra) - {"diffusion", "classifiers", "benchmark"}:
        raise RatesError(f"{path}: expected a mapping with keys `diffusion` and/or `classifiers` (and `benchmark`)")
    for arch, per_precision in (extra.get("diffusion") or {}).items():
        if not isinstance(per_precision, dict):
            raise RatesError(f"{path}: diffusion.{arch} must map precisions (fp32, fp16, bf16) to images/s")
        for precision, value in per_precision.items():
            rates["diffusion"].setdefault(arch, {})[precision] = _rate(value, f"{path}: diffusion.{arch}.{precision}")
    for name, value in (extra.get("classifiers") or {}).items():
        if isinstance(value, dict):
            entry = rates["classifiers"].get(name)
            entry = dict.fromkeys(("fp32", "fp16", "bf16"), entry) if isinstance(entry, float) else dict(entry or {})
            entry.update({p: _rate(v, f"{path}: classifiers.{name}.{p}") for p, v in value.items()})
            rates["classifiers"][name] = entry
        else:
            rates["classifiers"][name] = _rate(value, f"{path}: classifiers.{name}")
    return rates


def _rate(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise RatesError(f"{where} must be a positive number of images/s, got {value!r}")
    return float(value)


def _unet_rate(rates: dict, arch: str, precision: str) -> float:
    try:
        return rates["diffusion"][arch][precision]
    except KeyError:
        raise RatesError(f"no UNet throughput for diffusion architecture {arch!r} in {precision}; give one in a "
                         f"--rates file (diffusion: {{{arch}: {{{precision}: IMAGES_PER_SECOND}}}})") from None


def _classifier_rate(rates: dict, name: str, precision: str = "fp32") -> float:
    entry = rates["classifiers"].get(name)
    if isinstance(entry, dict):
        entry = entry.get(precision)
    if entry is None:
        raise RatesError(f"no throughput for classifier {name!r} in {precision}; give one in a --rates file "
                         f"(classifiers: {{{name}: {{{precision}: IMAGES_PER_SECOND}}}})")
    return entry


def dataset_execution(config: dict, dataset: str):
    """The execution (:class:`densepure.execution.Execution`) of a dataset's certification jobs on a GPU."""
    data = config["datasets"][dataset]
    return resolve_execution(data.get("mode") or "custom", dataset, "cuda", precision=data.get("precision"),
                             batch=data.get("batch"))


def store_costs(config: dict, rates: dict | None = None, shared_first_step: bool | None = None,
                shares: dict | None = None) -> dict[str, StoreCost]:
    """Cost of every votes store of a (validated) config, by store name. ``shared_first_step`` None: as each
    dataset's execution mode runs; True/False: for every store. ``shares`` (:func:`densepure.shares.store_shares`):
    the share of draws and votes the savings compute per store; None: every draw and vote (no savings).

    A one-shot store's images that DensePure jobs provide (:func:`densepure.grid.one_shot_providers`) cost one
    classifier call per draw, and a UNet call only for the draws the DensePure job did not run itself (its share of
    draws is smaller)."""
    from .shares import NONE

    rates = RATES if rates is None else rates
    shares = shares or {}
    providers = grid.one_shot_providers(config) if shares else {}
    out = {}
    for setting in grid.settings(config):
        key, data = setting.key, config["datasets"][setting.key.dataset]
        arch = config["diffusion_models"][data["diffusion"]]["arch"]
        if arch == grid.PLUGIN_ARCH:  # your own network: its rate goes by its name in the config
            arch = data["diffusion"]
        shards = grid.job_shards(config, setting)
        execution = dataset_execution(config, key.dataset)
        precision = execution.precision
        shared = execution.shared_first_step if shared_first_step is None else shared_first_step
        share = shares.get(setting.name, NONE)
        unet = unet_calls_per_draw(key.b, setting.K, key.one_shot, shared)
        if not key.one_shot:
            unet = 1 + (key.b - 1) * setting.K * share.vote_share if shared else key.b * setting.K * share.vote_share
        provided = providers.get(setting.name, {})
        if provided:  # those draws' first step is a DensePure job's, but for draws it stopped before
            dp_share = np.mean([shares.get(name, NONE).draw_share for name in provided.values()])
            extra = max(0.0, share.draw_share - dp_share) / share.draw_share
            unet = (len(setting.ids) - len(provided) + len(provided) * extra) / len(setting.ids)
        out[setting.name] = StoreCost(
            name=setting.name,
            key=key,
            unet_model=f"{arch} {precision}",
            images=len(setting.ids),
            jobs=len(shards),
            shard_images=max((len(s) for s in shards), default=0),
            draws=(data.get("N0", 100) + data["N"]) * share.draw_share,
            unet_per_draw=unet,
            classifier_per_draw=classifier_calls_per_draw(setting.K, key.one_shot) * share.vote_share,
            unet_rate=_unet_rate(rates, arch, precision),
            classifier_rate=_classifier_rate(rates, key.classifier, execution.classifier_precision),
        )
    return out


def estimate(config: dict, rates: dict | None = None, shared_first_step: bool | None = None,
             shares: dict | None = None) -> tuple[list[Row], Row]:
    """One row per selected artifact (the stores it reads) and the total row (every store once). Without
    ``shares``: the cost with every saving off (every draw and vote, one-shot stores certified by their own jobs)."""
    if shares is None:
        config = {**config, "savings": {name: False for name in grid.savings(config)}}
    costs = store_costs(config, rates, shared_first_step, shares)
    rows, used = [], set()
    for artifact in grid.selected_artifacts(config):
        names = sorted({s.name for agg in grid.aggregates(config, artifact) for s in grid.stores_for(config, agg)})
        used.update(names)
        rows.append(Row(artifact, grid.target_name(artifact), [costs[n] for n in names]))
    total = Row("total", "all", [costs[n] for n in sorted(used)])
    return rows, total


def load_config(path: str | Path) -> dict:
    """A workflow config (a file, or a packaged one by name: :func:`densepure.resources.config_file`), validated
    against the workflow's schema with its defaults filled in."""
    path = resources.config_file(path)
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read config ({' '.join(str(err).split())})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a workflow config must be a mapping")
    from .validation import ConfigError, check_config, check_schema, load_schema

    try:
        check_schema(config, load_schema(resources.resource(resources.SCHEMA)))
        check_config(config)
    except ConfigError as err:
        raise ValueError(f"{path}: {err}") from None
    return config


# --- output ----------------------------------------------------------------------------------------------------

COLUMNS = ["artifact", "target", "stores", "jobs", "images", "unet_calls", "classifier_calls", "gpu_hours",
           "longest_job_hours"]
STORE_COLUMNS = ["store", "images", "jobs", "draws", "unet_per_draw", "classifier_per_draw", "unet_rate",
                 "classifier_rate", "hours_per_image", "gpu_hours"]


def _row_values(row: Row) -> list:
    return [row.name, row.target, len(row.stores), row.jobs, row.images, row.unet_calls, row.classifier_calls,
            round(row.hours, 2), round(row.longest_job_hours, 2)]


def _store_values(s: StoreCost) -> list:
    return [s.name, s.images, s.jobs, s.draws, s.unet_per_draw, s.classifier_per_draw, s.unet_rate,
            s.classifier_rate, round(s.seconds_per_image / 3600, 4), round(s.seconds / 3600, 2)]


def format_csv(rows: list[Row], total: Row, stores: bool = False) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if stores:
        writer.writerow(STORE_COLUMNS)
        writer.writerows(_store_values(s) for s in total.stores)
    else:
        writer.writerow(COLUMNS)
        writer.writerows(_row_values(r) for r in [*rows, total])
    return buffer.getvalue()


def _hours(h: float) -> str:
    return f"{h:,.1f}" if h >= 100 else f"{h:.3g}"


def _human(n: float) -> str:
    return f"{n:.2e}" if n >= 1e6 else f"{n:,.0f}"


def runtime_warnings(config: dict, total: Row) -> list[str]:
    """Warnings when a certification job, or one image (the unit a killed job resumes from), needs more than the
    configured ``resources.certify.runtime`` (minutes)."""
    runtime = (config.get("resources") or {}).get("certify", {}).get("runtime")
    if not runtime or not total.stores:
        return []
    limit_h = float(runtime) / 60
    worst_image = max(total.stores, key=lambda s: s.seconds_per_image)
    worst_job = max(total.stores, key=lambda s: s.longest_job_seconds)
    out = []
    if worst_image.seconds_per_image / 3600 > limit_h:
        out.append(f"warning: one image of {worst_image.name} needs {worst_image.seconds_per_image / 3600:.1f} "
                   f"GPU-hours, more than resources.certify.runtime ({runtime} min): it finishes over several runs "
                   f"of its job (a killed job resumes from the image's last checkpoint, every checkpoint_seconds = "
                   f"{config.get('checkpoint_seconds', 300):g} s), so Snakemake's retries or a rerun are needed; "
                   f"raise the runtime to avoid them")
    elif worst_job.longest_job_seconds / 3600 > limit_h:
        slow = sum(1 for s in total.stores if s.longest_job_seconds / 3600 > limit_h)
        out.append(f"note: the longest certification job ({worst_job.name}) needs "
                   f"{worst_job.longest_job_seconds / 3600:.1f} GPU-hours, more than resources.certify.runtime "
                   f"({runtime} min), as do the jobs of {slow} stores: the time limit kills them and a rerun (or "
                   f"Snakemake's retries) resumes after their last finished image; raise the runtime or lower "
                   f"shard_size")
    return out


def format_text(config: dict, source: str, rows: list[Row], total: Row, shared_first_step: bool | None,
                stores: bool = False) -> str:
    modes = ", ".join(f"{name}: {dataset_execution(config, name).mode}" for name in config["datasets"])
    calls = {True: "1 + (b-1) K (the first reverse step is shared by the K votes)",
             False: "b K (every vote from scratch, as the reference code)",
             None: f"1 + (b-1) K with the first step shared, b K in mode reference (modes: {modes})"}
    lines = [
        f"densepure estimate: run {config.get('run', 'default')!r} ({source}): {len(total.stores)} votes stores, "
        f"{total.jobs} certification jobs",
        f"UNet calls per draw: {calls[shared_first_step]}, 1 one-shot; classifier calls per draw: K, 1 one-shot",
    ]
    unets = sorted({f"{s.unet_model} {s.unet_rate:g}" for s in total.stores})
    classifiers = sorted({f"{s.key.classifier} {s.classifier_rate:g}" for s in total.stores})
    lines.append("throughputs (images/s; one H200 unless densepure/estimate.py says otherwise): UNet "
                 + ", ".join(unets) + "; classifier " + ", ".join(classifiers))
    if config.get("device") == "cpu":
        lines.append("device: cpu (the config certifies on the CPU: read GPU-hours as hours of one CPU thread)")
    lines.append("")
    if stores:
        lines += _aligned([STORE_COLUMNS, *([_fmt(v) for v in _store_values(s)] for s in total.stores)], left=1)
    else:
        header = ["artifact", "target", "stores", "jobs", "images", "UNet calls", "classifier calls", "GPU-hours",
                  "longest job [h]"]
        body = [[r.name, r.target, str(len(r.stores)), str(r.jobs), str(r.images), _human(r.unet_calls),
                 _human(r.classifier_calls), _hours(r.hours), _hours(r.longest_job_hours)]
                for r in [*rows, total]]
        lines += _aligned([header, *body], left=2)
        artifact_sum = sum(r.hours for r in rows)
        lines += ["", f"The total counts each votes store once. A store shared by several artifacts (e.g. the main "
                      f"runs behind Tables 1, A, B and Figure 3) is counted in each of their rows but computed once, "
                      f"so the total is less than the sum of the rows ({_hours(artifact_sum)} GPU-hours)."]
    lines += runtime_warnings(config, total)
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _aligned(table: list[list[str]], left: int) -> list[str]:
    """Rows of a text table: the first ``left`` columns left-aligned, the others right-aligned; a rule under the
    header."""
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    out = []
    for n, r in enumerate(table):
        cells = [c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


# --- command line ----------------------------------------------------------------------------------------------


def add_estimate_command(subparsers) -> argparse.ArgumentParser:
    """Add ``densepure estimate`` to the CLI's subparsers; returns its parser."""
    p = subparsers.add_parser(
        "estimate", help="GPU-hours of a workflow config, per artifact and in total",
        description="Estimate the GPU-hours of the certification jobs of a workflow config: per votes store, "
                    "images x (N0 + N) x (UNet calls per draw / UNet throughput + classifier calls per draw / "
                    "classifier throughput). UNet calls per draw: 1 one-shot, 1 + (b-1) K for b reverse steps "
                    "(the K votes share the first step); classifier calls: K (1 one-shot). An artifact costs the "
                    "stores it reads; the total counts every store once.",
        epilog="Throughputs (images/s) are those of one H200 (see densepure/estimate.py; the digits models: one CPU "
               "thread). Override them with --rates FILE, e.g. the JSON of benchmarks/throughput.py, or\n"
               "  diffusion: {guided-imagenet256: {fp16: 120.0}}\n  classifiers: {beit-large-512: {bf16: 150.0}}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", default="config/config.yaml",
                   help="workflow config; config/config.yaml and config/paper.yaml (or: default, paper) are found in "
                        "the installed package when not in the current folder [config/config.yaml]")
    p.add_argument("--rates", type=Path, help="YAML/JSON file of throughputs replacing the built-in ones")
    p.add_argument("--format", choices=["text", "csv"], default="text", help="output format [text]")
    p.add_argument("--stores", action="store_true", help="one row per votes store instead of per artifact")
    p.add_argument("--savings", action=argparse.BooleanOptionalAction, default=True,
                   help="count the config's exact savings (lazy votes, hopeless images, certain abstention, the "
                        "one-shot baseline from DensePure jobs); --no-savings: every draw and vote [yes]")
    p.add_argument("--from-votes", type=Path, metavar="DIR",
                   help="measure the savings' shares of draws and votes on the finished stores under DIR (the "
                        "workflow's <work_dir>/<run>/votes); stores not there use the mean of the measured ones of "
                        "their dataset, else stated assumptions")
    p.add_argument("--shared-first-step", action=argparse.BooleanOptionalAction, default=None,
                   help="count 1 + (b-1) K UNet calls per draw for every store; --no-shared-first-step counts b K, "
                        "as the reference code runs [as each dataset's mode runs: b K in mode reference]")
    return p


def run_estimate(args: argparse.Namespace) -> int:
    """Print the estimate for ``args`` (from :func:`add_estimate_command`); returns the exit status."""
    from .shares import describe, store_shares

    config = load_config(args.configfile)
    shown = str(resources.config_file(args.configfile))
    rates = load_rates(getattr(args, "rates", None))
    shared = getattr(args, "shared_first_step", None)
    stores = getattr(args, "stores", False)
    shares = store_shares(config, getattr(args, "from_votes", None)) if getattr(args, "savings", True) else None
    rows, total = estimate(config, rates, shared, shares)
    if getattr(args, "format", "text") == "csv":
        print(format_csv(rows, total, stores), end="")
        return 0
    print(format_text(config, shown, rows, total, shared, stores), end="")
    if shares is not None:
        _, without = estimate(config, rates, shared)
        print(f"\nWith the savings the config turns on ({savings_text(config)}): {_hours(total.hours)} GPU-hours; "
              f"without them {_hours(without.hours)}, {without.hours / max(total.hours, 1e-12):.2f}x as much. "
              f"Shares of the draws and votes computed:")
        print("\n".join(f"  {line}" for line in describe(shares)))
    return 0


def savings_text(config: dict) -> str:
    on = [name.replace("_", " ") for name, value in grid.savings(config).items() if value]
    return ", ".join(on) or "none"


def main(argv: list[str] | None = None) -> int:
    """``python -m densepure.estimate`` (the same as ``densepure estimate`` once the CLI has the hook)."""
    parser = argparse.ArgumentParser(prog="densepure")
    add_estimate_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["estimate", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run_estimate(args)
    except ValueError as err:
        print(f"densepure: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
