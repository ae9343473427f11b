"""How an estimate reads: aligned text with the runtime warnings, or CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from densepure.files import resources
from densepure.files.yamlfile import read_yaml
from densepure.plan import grid
from densepure.plan.estimate import Row, StoreCost, dataset_execution, estimate

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


#: The workflow profile, where Snakemake finds it from the directory it runs in.
WORKFLOW_PROFILE = "profiles/default/profile.yaml"
RUNTIME_KEY = "set-resources.certify.runtime"


def certify_runtime(profile: Path | None = None) -> float | None:
    """The certification jobs' time limit in minutes: ``set-resources: certify: runtime`` of the workflow profile
    ``profile``, else of :data:`WORKFLOW_PROFILE` in the current directory, else of the repository checkout's; None
    when there is no such file or it sets no runtime. ValueError naming the file for an unreadable one."""
    if profile is None:
        profile = Path(WORKFLOW_PROFILE)
        if not profile.is_file():
            try:
                profile = resources.resource(WORKFLOW_PROFILE)
            except resources.ResourceError:  # an installed package without a checkout
                return None
    settings = read_yaml(profile, what="workflow profile") or {}
    runtime = ((settings.get("set-resources") or {}).get("certify") or {}).get("runtime")
    return None if runtime is None else float(runtime)


def runtime_warnings(config: dict, total: Row, runtime: float | None = None) -> list[str]:
    """Warnings when a certification job, or one image (the unit a killed job resumes from), needs more than
    ``runtime`` minutes, the workflow profile's time limit (:func:`certify_runtime`)."""
    if not runtime or not total.stores:
        return []
    limit_h = float(runtime) / 60
    worst_image = max(total.stores, key=lambda s: s.seconds_per_image)
    worst_job = max(total.stores, key=lambda s: s.longest_job_seconds)
    out = []
    if worst_image.seconds_per_image / 3600 > limit_h:
        out.append(f"warning: one image of {worst_image.name} needs {worst_image.seconds_per_image / 3600:.1f} "
                   f"GPU-hours, more than {RUNTIME_KEY} ({runtime:g} min): it finishes over several runs "
                   f"of its job (a killed job resumes from the image's last checkpoint, every checkpoint_seconds = "
                   f"{config.get('checkpoint_seconds', 300):g} s), so Snakemake's retries or a rerun are needed; "
                   f"raise the runtime to avoid them")
    elif worst_job.longest_job_seconds / 3600 > limit_h:
        slow = sum(1 for s in total.stores if s.longest_job_seconds / 3600 > limit_h)
        out.append(f"note: the longest certification job ({worst_job.name}) needs "
                   f"{worst_job.longest_job_seconds / 3600:.1f} GPU-hours, more than {RUNTIME_KEY} "
                   f"({runtime:g} min), as do the jobs of {slow} stores: the time limit kills them and a rerun (or "
                   f"Snakemake's retries) resumes after their last finished image; raise the runtime or lower "
                   f"shard_size")
    return out


def format_text(config: dict, source: str, rows: list[Row], total: Row, shared_first_step: bool | None,
                stores: bool = False, runtime: float | None = None) -> str:
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
    lines.append("throughputs (images/s; one H200 unless densepure/plan/rates.py says otherwise): UNet "
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
    lines += runtime_warnings(config, total, runtime)
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


def savings_text(config: dict) -> str:
    on = [name.replace("_", " ") for name, value in grid.savings(config).items() if value]
    return ", ".join(on) or "none"


def estimate_text(config: dict, shown: str, rates: dict, shared_first_step: bool | None = None, stores: bool = False,
                  shares: dict | None = None, fmt: str = "text", profile: Path | None = None) -> str:
    """The estimate of ``config`` (named ``shown``) as ``fmt`` (``text`` or ``csv``), per artifact or, with
    ``stores``, per votes store. With ``shares`` (:func:`densepure.plan.shares.store_shares`) the savings are
    counted, and the text also gives the cost without them and the shares of draws and votes computed. The text
    warns about jobs longer than the workflow profile's time limit (``profile``: :func:`certify_runtime`)."""
    from densepure.plan.shares import describe

    rows, total = estimate(config, rates, shared_first_step, shares)
    if fmt == "csv":
        return format_csv(rows, total, stores)
    text = format_text(config, shown, rows, total, shared_first_step, stores, certify_runtime(profile))
    if shares is not None:
        _, without = estimate(config, rates, shared_first_step)
        text += (f"\nWith the savings the config turns on ({savings_text(config)}): {_hours(total.hours)} GPU-hours; "
                 f"without them {_hours(without.hours)}, {without.hours / max(total.hours, 1e-12):.2f}x as much. "
                 f"Shares of the draws and votes computed:\n")
        text += "\n".join(f"  {line}" for line in describe(shares)) + "\n"
    return text
