"""Section 3's artifacts from a config's ``theory`` section: Theorem 3.1's table, Figure 2 and the radius
comparison, as CSV, Markdown and figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from densepure.core.schedule import Schedule, make_schedule, reverse_plan
from densepure.report.labels import theory_label
from densepure.theory.exact import Mixture, classify, sigma_t, theorem31_table
from densepure.theory.radius import radius_table
from densepure.theory.regions import (
    highest_density_point,
    in_region,
    purified_class,
    robust_radius,
    sub_radius,
    sub_region,
)


def _schedule(settings: dict) -> Schedule:
    return make_schedule(settings["schedule"]["kind"], settings["schedule"]["T"])


def _write_csv(path: str, rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()} for row in rows)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _write_md(path: str, rows: list[dict], title: str) -> None:
    """The rows as a Markdown table under ``title``, and the same table as an HTML page next to it (``.html``, the
    page Snakemake's report shows)."""
    import pandas as pd

    from densepure.report.layout import html_page

    lines = [f"{title}\n", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(_fmt(v) for v in row.values()) + " |" for row in rows]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    frame = pd.DataFrame([[_fmt(v) for v in row.values()] for row in rows], columns=list(rows[0]))
    Path(path).with_suffix(".html").write_text(html_page(title, frame))


def thm31_outputs(settings: dict, csv_path: str, md_path: str) -> list[dict]:
    """Theorem 3.1 deviation table (:func:`theorem31_table`) as CSV, Markdown and HTML (next to the Markdown)."""
    s = settings["thm31"]
    rows = theorem31_table(Mixture.from_config(s["mixture"]), _schedule(settings), np.array(s["x_a"]), s["sigmas"],
                           s["bs"], s["samples"], settings["seed"])
    _write_csv(csv_path, rows)
    _write_md(md_path, rows, "Theorem 3.1 on the exact model: b-step sampler vs the posterior p(x) N(x; x_a, "
              "sigma_t^2 I) (tv: total variation of component masses; std_ratio: sampled / exact within-component "
              "std; p: Bonferroni p-value of mass, mean and variance tests)")
    return rows


def fig2_numbers(settings: dict) -> dict:
    """Everything Figure 2 plots: sigma_t, r and r_sub around ``x0``, and an ``x_a`` in D but outside D_sub(x0)."""
    s = settings["fig2"]
    mix, schedule = Mixture.from_config(s["mixture"]), _schedule(settings)
    t = round(reverse_plan(s["sigma"], 2, schedule).visited[0])
    sig = sigma_t(float(schedule.alpha_bar[t]))
    k0 = s["x0"]
    r, u_r = robust_radius(mix, k0, sig, r_max=s["r_max"])
    r_sub, u_sub = sub_radius(mix, k0, sig, spacing=s["spacing"])
    x_a = mix.means[k0] + 0.5 * (r + r_sub) * u_sub  # beyond D_sub(x0)'s nearest face, inside the ball of radius r
    p_a = highest_density_point(mix, x_a[None], sig)[0]
    return {"sigma": s["sigma"], "t": t, "sigma_t": sig, "x0": k0, "r": r, "r_sub": r_sub, "r_dir": u_r,
            "r_sub_dir": u_sub, "x_a": x_a, "P_x_a": p_a, "P_x_a_class": int(classify(mix, p_a[None])[0]),
            "mix": mix}


REGION_COLOURS = ["#f4cccc", "#cfe2f3"]  # purified to another class, to x0's class (D)
BOUNDARY_COLOUR = "#3d85c6"


def smooth_region(mask: np.ndarray, pixels: float = 2.0) -> np.ndarray:
    """A region's 0/1 grid blurred by a Gaussian of ``pixels`` grid steps, whose 0.5 level is its boundary without
    the grid's staircase (a straight edge stays where it is; only corners round off by about ``pixels`` steps)."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(mask.astype(float), pixels, mode="nearest")


def region_patches() -> list:
    """Legend patches of Figure 2's shaded regions."""
    from matplotlib.patches import Patch

    return [Patch(facecolor=REGION_COLOURS[1], edgecolor=BOUNDARY_COLOUR, label="$D(G(x_0); t)$: purified to "
                  "$x_0$'s class"), Patch(facecolor=REGION_COLOURS[0], label="purified to the other class")]


def fig2_outputs(settings: dict, png: str | None = None, pdf: str | None = None, csv_path: str | None = None) -> dict:
    """Figure 2: the robust region D(G(x0); t) (shaded), the sub-regions D_sub(x_i; t) of the same-label component
    means (outlined), and the balls of radius r and r_sub around x0, saved to each of ``png`` and ``pdf`` that is
    given; the plotted numbers go to ``csv_path`` when given. Region boundaries are drawn as the 0.5 level of
    :func:`smooth_region` (the areas in the CSV count the unsmoothed grid); the legend under the axes names the
    shaded regions too. Returns :func:`fig2_numbers`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from densepure.report.figures import figure_style

    s = settings["fig2"]
    num = fig2_numbers(settings)
    mix, sig, k0 = num["mix"], num["sigma_t"], num["x0"]
    lo, hi = s["box"]
    ticks = np.linspace(lo, hi, s["pixels"])
    grid = np.stack(np.meshgrid(ticks, ticks, indexing="xy"), -1).reshape(-1, 2)
    inside = (purified_class(mix, grid, sig) == mix.labels[k0]).reshape(len(ticks), len(ticks))
    same = np.flatnonzero(mix.labels == mix.labels[k0])
    rows = [("sigma", num["sigma"]), ("t_star", num["t"]), ("sigma_t", sig), ("r", num["r"]), ("r_sub", num["r_sub"]),
            ("r_over_r_sub", num["r"] / num["r_sub"] if num["r_sub"] > 0 else math.inf),
            ("area_D", float(inside.mean()) * (hi - lo) ** 2)]
    with figure_style():
        fig = Figure(figsize=(5, 6), layout="constrained")
        ax = fig.add_subplot()
        ax.contourf(ticks, ticks, smooth_region(inside), levels=[0.0, 0.5, 1.0], colors=REGION_COLOURS)
        ax.contour(ticks, ticks, smooth_region(inside), levels=[0.5], colors=BOUNDARY_COLOUR, linewidths=1.5)
        for i, k in enumerate(same):
            x0, normals, offsets = sub_region(mix, int(k), sig, spacing=s["spacing"])
            member = in_region(grid, x0, normals, offsets).reshape(len(ticks), len(ticks))
            ax.contour(ticks, ticks, smooth_region(member), levels=[0.5], colors=f"C{i + 2}", linestyles="--",
                       linewidths=1)
            ax.plot([], [], f"C{i + 2}--", lw=1, label=f"$D_{{sub}}(x_{k})$")
            rows.append((f"area_D_sub_{k}", float(member.mean()) * (hi - lo) ** 2))
        theta = np.linspace(0, 2 * math.pi, 200)
        for radius, style, name in [(num["r"], "-", "r"), (num["r_sub"], ":", "r_sub")]:
            ax.plot(mix.means[k0, 0] + radius * np.cos(theta), mix.means[k0, 1] + radius * np.sin(theta), "k" + style,
                    lw=1.2, label=f"{name} = {radius:.3f}")
        for k, (mu, lab) in enumerate(zip(mix.means, mix.labels)):
            ax.plot(*mu, "o" if lab == mix.labels[k0] else "s", color="k", ms=5)
            ax.annotate(f"$x_{k}$", mu, xytext=(4, 4), textcoords="offset points")
            rows += [(f"mean_{k}_x", mu[0]), (f"mean_{k}_y", mu[1]), (f"label_{k}", int(lab))]
        ax.annotate("", num["P_x_a"], num["x_a"], arrowprops={"arrowstyle": "->", "color": "0.3"})
        ax.plot(*num["x_a"], "x", color="k", ms=6)
        ax.annotate("$x_a$", num["x_a"], xytext=(4, -10), textcoords="offset points")
        rows += [("x_a_x", num["x_a"][0]), ("x_a_y", num["x_a"][1]), ("P_x_a_x", num["P_x_a"][0]),
                 ("P_x_a_y", num["P_x_a"][1]), ("P_x_a_class", num["P_x_a_class"])]
        ax.set_aspect("equal")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_title(f"Robust region D(G(x0); t), σ = {num['sigma']:g} (σ_t = {sig:.3f})")
        ax.plot([], [], color=BOUNDARY_COLOUR, lw=1.5, label="$D(G(x_0); t)$ boundary")
        fig.legend(handles=region_patches() + ax.get_legend_handles_labels()[0], loc="outside lower center", ncol=2,
                   fontsize=7, frameon=False)
        for path, options in ((png, {"dpi": 150}), (pdf, {})):
            if path:
                fig.savefig(path, **options)
    if csv_path:
        _write_csv(csv_path, [{"quantity": k, "value": v} for k, v in rows])
    return num


def radius_outputs(settings: dict, csv_path: str, md_path: str, png: str, pdf: str) -> list[dict]:
    """DensePure's majority vote vs the one-shot posterior mean: certified radius per clean point, sigma and method,
    as CSV, Markdown and HTML (next to the Markdown) and a bar chart (one legend, methods as
    :func:`~densepure.report.labels.theory_label` names them)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from densepure.report.figures import figure_style

    s = settings["radius"]
    mix = Mixture.from_config(s["mixture"])
    rows = radius_table(mix, _schedule(settings), s["sigmas"], s["b"], s["Ks"], s["one_shot"], s["N0"], s["N"],
                        s["alpha"], settings["seed"])
    _write_csv(csv_path, rows)
    _write_md(md_path, rows, f"Certified radius on the exact model (alpha = {s['alpha']}, N0 = {s['N0']}, "
              f"N = {s['N']}): DensePure's majority vote of K reverse chains vs the one-shot posterior mean")
    series = list(dict.fromkeys((r["method"], r["K"]) for r in rows))
    with figure_style():
        fig = Figure(figsize=(2 + 2.2 * len(s["sigmas"]) + 0.4 * len(mix.means), 4.0), layout="constrained")
        axes = fig.subplots(1, len(s["sigmas"]), squeeze=False, sharey=True)[0]
        width = 0.8 / len(series)
        for ax, sigma in zip(axes, s["sigmas"]):
            for j, (method, K) in enumerate(series):
                radii = [r["radius"] if r["correct"] else 0.0 for r in rows
                         if r["sigma"] == sigma and (r["method"], r["K"]) == (method, K)]
                ax.bar(np.arange(len(radii)) + (j - (len(series) - 1) / 2) * width, radii, width,
                       label=theory_label(method, K if method == "densepure" else None))
            ax.set_xticks(np.arange(len(mix.means)), [f"$x_{k}$\nclass {c}" for k, c in enumerate(mix.labels)])
            ax.set_title(f"σ = {sigma:g}")
        axes[0].set_ylabel("certified radius (0: wrong or abstain)")
        fig.legend(handles=axes[0].get_legend_handles_labels()[0], loc="outside lower center", ncol=len(series),
                   fontsize=7, frameon=False)
        fig.savefig(png, dpi=150)
        fig.savefig(pdf)
    return rows


def theory_settings(spec: str) -> dict:
    """The ``theory`` section of the config file ``spec``."""
    from densepure.files.yamlfile import read_yaml

    config = read_yaml(spec, "config file") or {}
    if not isinstance(config, dict) or "theory" not in config:
        raise ValueError(f"{spec}: no `theory` section")
    return config["theory"]
