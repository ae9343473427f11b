"""Figures: certified accuracy vs radius (Fig. 3, E, F), vs K (Fig. 4 left, A, B) and per b (Fig. 4 right, C, D).

What a reader sees: each curve (with its 95% Clopper-Pearson band where bands do not hide each other, see
:func:`~densepure.report.figure_layout.show_bands`), each K-ablation point with its error bar; a curve
stops at the largest radius its N estimation draws can certify (``sigma Phi^-1(alpha^(1/N))``, marked with a bar)
instead of dropping to zero beyond it; the paper's numbers for the same setting and number of images (Tables A, B,
2 and the reference plot data) as hollow markers. One legend under the panels names every style; a curve that is 0% at
every radius says so there; the radius axis ends shortly after the last nonzero value.
"""

from __future__ import annotations

import contextlib
import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from densepure.report import spec as specs
from densepure.report.figure_layout import bands_mode, is_zero, shared_legend, show_bands, x_limit, zero_label
from densepure.report.labels import (
    METHOD_LABELS,
    PAPER_METHOD_KEY,
    classifier_label,
    dataset_label,
    legend_label,
    method_label,
)
from densepure.report.layout import integer_text, num
from densepure.report.tables import labels_for, panel_methods, reported, setting_accuracy

LINESTYLES = {"densepure": "-", "onestep": "--", "carlini": ":"}
EXTRA_K_STYLE = "-."
AXIS_RADIUS = "radius (L2)"
AXIS_ACCURACY = "certified accuracy (%)"
END_MARKER = {"marker": "|", "markersize": 10, "markeredgewidth": 2}
PAPER_MAIN = {"b": 10, "K": 40}  # "we set K = 40 and b = 10 except the results in ablation study" (§5)
PAPER_MARKER = {"marker": "o", "markersize": 5, "markerfacecolor": "white", "markeredgewidth": 1.3, "ls": "none"}


def _paper_marker(method: str) -> dict:
    """Hollow markers for the paper's numbers: circles for DensePure, squares for the other methods."""
    return {**PAPER_MARKER, "marker": "o" if method == "densepure" else "s"}


@contextlib.contextmanager
def figure_style():
    """The one style of all report figures (seaborn whitegrid, notebook context, small legends)."""
    import seaborn as sns

    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        import matplotlib as mpl

        with mpl.rc_context({"legend.fontsize": 8, "legend.framealpha": 0.9, "axes.titlesize": 11,
                             "pdf.fonttype": 42, "savefig.bbox": "tight"}):
            yield


def _palette(n: int):
    import seaborn as sns

    return sns.color_palette("colorblind", max(n, 10))


def _hue_colours(kind: str, values: list) -> dict:
    """Fixed colours: sigma 0.25/0.5/1.0 and b 1/2/5/10 keep theirs in every figure; others by order."""
    pal = _palette(len(values) + 4)
    fixed = {"sigma": {0.25: pal[0], 0.5: pal[1], 1.0: pal[2]},
             "b": {1: pal[7], 2: pal[1], 5: pal[2], 10: pal[0]}}.get(kind, {})
    out, spare = {}, iter(c for c in pal if c not in fixed.values())
    for v in values:
        out[v] = fixed.get(v) if v in fixed else next(spare)
    return out


def panel_title(panel: dict) -> str:
    parts = [dataset_label(panel["dataset"])]
    if len(panel.get("classifiers", [])) == 1:
        parts.append(classifier_label(panel["classifiers"][0]))
    if len(panel.get("sigmas", [])) == 1:
        parts.append(f"σ = {num(panel['sigmas'][0])}")
    if specs.panel_kind(panel) == "k_ablation":
        parts.append(f"b = {integer_text(panel.get('bs', [10])[0])}")
    images = panel.get("images")
    if images is not None:
        parts.append(f"{int(specs.expected_n(images))} images")
    return " · ".join(parts)


def _finish_axes(ax, xlabel: str, xmax: float | None = None) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(AXIS_ACCURACY)
    ax.set_ylim(0, 100)
    if xmax is not None:
        ax.set_xlim(0, xmax)


def _line_handles(entries):
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=c, ls=ls, lw=1.8 if ls not in ("none", "") else 0, label=lab, **(marker or {}))
            for lab, c, ls, marker in entries]


def _shown(acc: pd.DataFrame) -> pd.DataFrame:
    """The radii of a curve up to the largest certifiable one."""
    return acc[~acc["beyond_max_radius"].astype(bool)]


def _draw_curve(ax, acc: pd.DataFrame, colour, ls: str, band: bool = True) -> bool:
    """Certified accuracy vs radius up to the largest certifiable radius, with its 95% band (``band``) while the
    accuracy is above zero (lighter for dashed and dotted lines); True when the curve stops above zero before the
    panel's last radius (a bar marks where)."""
    shown = _shown(acc)
    ax.plot(shown["radius"], shown["certified_accuracy"], color=colour, ls=ls, lw=1.8)
    if band:
        positive = np.flatnonzero(shown["count"].to_numpy() > 0)
        part = shown.iloc[:positive[-1] + 2] if positive.size else shown.iloc[:0]
        ax.fill_between(part["radius"], part["ci_low"], part["ci_high"], color=colour,
                        alpha=0.12 if ls == "-" else 0.06, lw=0)
    cut = len(shown) < len(acc) and not shown.empty and shown["count"].iloc[-1] > 0
    if cut:
        ax.plot(shown["radius"].iloc[-1:], shown["certified_accuracy"].iloc[-1:], color=colour, ls="none",
                **END_MARKER)
    return cut


def _draw_panel_curves(ax, curves: list[tuple], bands: str) -> tuple[bool, list]:
    """Draw ``(accuracy, colour, linestyle, label)`` curves, with bands as :func:`show_bands` decides for the panel;
    returns whether a curve was cut (end bar) and the legend entries of the curves that are 0% at every radius."""
    band = show_bands([_shown(acc) for acc, *_ in curves], bands)
    cut, zero = False, []
    for acc, colour, ls, label in curves:
        cut |= _draw_curve(ax, acc, colour, ls, band)
        if is_zero(_shown(acc)):
            zero.append((zero_label(label), colour, ls, None))
    return cut, zero


def _paper_points(paper: pd.DataFrame, meta: dict, panel: dict) -> pd.DataFrame:
    """Published numbers of the setting ``meta`` on as many images as the panel: b / K must match where the paper
    gives them; where it does not (Table 2's Ours), the paper's main setting b = 10, K = 40 (§5) is assumed."""
    if paper is None or paper.empty:
        return pd.DataFrame(columns=["K", "radius", "certified_accuracy"])
    m = ((paper["dataset"] == dataset_label(meta["dataset"]))
         & (paper["classifier"] == classifier_label(meta["classifier"]))
         & (paper["method_key"] == PAPER_METHOD_KEY.get(meta["method_key"], "")))
    m &= np.isclose(paper["sigma"].astype(float).fillna(-1), meta["sigma"])
    m &= paper["n"] == meta["n_expected"]
    for col in ("b", "K"):
        given = paper[col].notna()
        m &= (given & (paper[col] == meta[col])) | (~given & (meta[col] == PAPER_MAIN[col]))
    return paper[m].assign(K=paper.loc[m, "K"].fillna(meta["K"])).drop_duplicates(["K", "radius",
                                                                                       "certified_accuracy"])


def _load_paper():
    from densepure.report.paper import all_paper_numbers

    try:
        return all_paper_numbers()
    except ValueError:
        return None


def draw_curves(ax, results: pd.DataFrame, panel: dict, index: int = 0, spec: dict | None = None,
                paper: pd.DataFrame | None = None, allow_missing: bool = False,
                bands: str = "auto") -> tuple[pd.DataFrame, list]:
    """Certified accuracy vs radius: DensePure solid (its ``extra_Ks`` dash-dotted), Carlini (onestep) dashed,
    Carlini's own code dotted, other methods dotted; colour = sigma (or classifier when the panel has several
    classifiers, or both). Returns the plotted data and the panel's legend entries."""
    labels = labels_for(results, spec or {})
    methods = panel_methods(panel, labels)
    b, k = panel.get("bs", [10])[0], panel.get("Ks", [40])[0]
    ks = [(k, "-")] + [(x, EXTRA_K_STYLE) for x in panel.get("extra_Ks", [])]
    radii = specs.radii(panel)
    hue_keys = [key for key, many in (("classifier", len(panel["classifiers"]) > 1),
                                      ("sigma", len(panel["sigmas"]) > 1)) if many] or ["sigma"]
    hue_of = {(c, s): tuple(v for key, v in (("classifier", c), ("sigma", s)) if key in hue_keys)
              for c in panel["classifiers"] for s in panel["sigmas"]}
    hues = list(dict.fromkeys(hue_of.values()))
    by_sigma = hue_keys == ["sigma"]
    colours = _hue_colours("sigma" if by_sigma else "other", [h[0] if by_sigma else h for h in hues])
    colour = {h: colours[h[0] if by_sigma else h] for h in hues}

    def hue_label(h):
        return ", ".join(classifier_label(v) if key == "classifier" else f"σ = {num(v)}"
                         for key, v in zip(hue_keys, h))

    def style_label(m, kk):
        return (f"Ours (b = {integer_text(b)}, K = {integer_text(kk)})" if m == "densepure"
                else legend_label(m, labels))

    parts, curves, drawn_paper, styles = [], [], set(), []
    for c in panel["classifiers"]:
        for s in panel["sigmas"]:
            for m in methods:
                for kk, ls in (ks if m == "densepure" else [(None, LINESTYLES.get(m, ":"))]):
                    rep = reported(results, panel, index, m, c, s, b if m == "densepure" else None, kk, labels,
                                   ls == "-" or m != "densepure", allow_missing)
                    if rep is None:
                        continue
                    acc = setting_accuracy(rep, radii)
                    hue = colour[hue_of[(c, s)]]
                    curves.append((acc, hue, ls, f"{style_label(m, kk)}, {hue_label(hue_of[(c, s)])}"))
                    points = _paper_points(paper, rep.meta, panel)
                    if not points.empty:
                        ax.plot(points["radius"], points["certified_accuracy"], color=hue, **_paper_marker(m))
                        drawn_paper.add(m)
                    styles.append((m, kk, ls))
                    parts.append(acc)
    cut, zero = _draw_panel_curves(ax, curves, bands)
    entries = [(hue_label(h), colour[h], "-", None) for h in hues]
    for m, kk, ls in sorted(dict.fromkeys(styles), key=lambda style: style[0] != "densepure"):
        entries.append((style_label(m, kk), "0.25", ls, None))
    entries += zero + _extra_entries(cut, drawn_paper, panel, labels)
    return _finish_curves(ax, panel, parts, curves), entries


def _finish_curves(ax, panel: dict, parts: list, curves: list) -> pd.DataFrame:
    """Axes of a panel of curves vs radius (the radius axis trimmed by :func:`x_limit` to the curves and the
    paper's points above zero) and its plotted data."""
    _finish_axes(ax, AXIS_RADIUS, x_limit([_shown(acc) for acc, *_ in curves], float(panel.get("max_radius", 4.0)),
                                          _paper_ends(ax)))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _paper_ends(ax) -> list[float]:
    """Radii of the paper's points drawn on ``ax`` (hollow markers) where they are above zero."""
    return [float(x) for line in ax.get_lines() if line.get_linestyle() == "None" and line.get_marker() in ("o", "s")
            for x, y in zip(line.get_xdata(), line.get_ydata()) if y > 0]


def _extra_entries(cut: bool, paper_methods: set, panel: dict, labels: dict) -> list:
    """Legend entries for the end bar and the paper's markers (one per method drawn, DensePure first)."""
    out = [("largest certifiable radius", "0.25", "none", END_MARKER)] if cut else []
    n = specs.expected_n(panel.get("images"))
    for i, m in enumerate(sorted(paper_methods, key=lambda m: m != "densepure")):
        text = f"paper: {method_label(m, labels)}" + (f" ({int(n)} images)" if i == 0 and np.isfinite(n) else "")
        out.append((text, "0.25", "none", {k: v for k, v in _paper_marker(m).items() if k != "ls"}))
    return out


def draw_b_ablation(ax, results: pd.DataFrame, panel: dict, index: int = 0, spec: dict | None = None,
                    paper: pd.DataFrame | None = None, allow_missing: bool = False,
                    bands: str = "auto") -> tuple[pd.DataFrame, list]:
    """Fast-sampling ablation: certified accuracy vs radius per b (colour), with a majority vote (K = ``mv_K`` of
    that b; solid) and without (K = 1; dashed); b = 1 is the one-shot baseline of each baseline method in
    ``methods`` (no vote; dashed, Carlini's own code dotted). Returns the plotted data and the legend entries."""
    labels = labels_for(results, spec or {})
    classifier, sigma = panel["classifiers"][0], panel["sigmas"][0]
    baselines = [m for m in panel_methods(panel, labels) if m != "densepure"]
    bs = sorted(panel["bs"])
    radii = specs.radii(panel)
    pal = _palette(10)
    colours = {("onestep", 1): pal[7], ("carlini", 1): pal[5]}
    colours.update({("densepure", b): c for b, c in _hue_colours("b", bs).items()})
    spare = itertools.cycle(pal[3:7])
    parts, curves, drawn_paper = [], [], set()
    todo = [(m, None, None, LINESTYLES.get(m, ":")) for m in baselines]
    todo += [("densepure", b, k, "-" if k > 1 else "--") for b in bs for k in (specs.mv_K(panel, b), 1)]
    for m, b, k, ls in todo:
        rep = reported(results, panel, index, m, classifier, sigma, b, k, labels, True, allow_missing)
        if rep is None:
            continue
        key = (m, 1 if m != "densepure" else b)
        if key not in colours:
            colours[key] = next(spare)
        acc = setting_accuracy(rep, radii)
        label = (f"b = {integer_text(b)}, K = {integer_text(k)}" if m == "densepure"
                 else f"b = 1, {legend_label(m, labels)}")
        curves.append((acc, colours[key], ls, label))
        points = _paper_points(paper, rep.meta, panel)
        if not points.empty:
            ax.plot(points["radius"], points["certified_accuracy"], color=colours[key], **_paper_marker(m))
            drawn_paper.add(m)
        parts.append(acc)
    cut, zero = _draw_panel_curves(ax, curves, bands)
    entries = [(f"b = 1, {legend_label(m, labels)}", colours[(m, 1)], LINESTYLES.get(m, ":"), None)
               for m in baselines]
    mv = {b: specs.mv_K(panel, b) for b in bs}
    entries += [(f"b = {integer_text(b)}" + (f" (MV: K = {mv[b]})" if len(set(mv.values())) > 1 else ""),
                 colours[("densepure", b)], "-", None) for b in bs]
    mv_text = f"K = {next(iter(mv.values()))}" if len(set(mv.values())) == 1 else "K > 1"
    entries += [(f"with MV ({mv_text})", "0.25", "-", None), ("without MV (K = 1)", "0.25", "--", None)]
    entries += zero + _extra_entries(cut, drawn_paper, panel, labels)
    return _finish_curves(ax, panel, parts, curves), entries


def _dodge(i: int, n: int) -> float:
    """Factor that sets the i-th of n radii slightly apart at each K (log axis), so their error bars do not hide
    each other."""
    return 1.04 ** (i - (n - 1) / 2)


def draw_k_ablation(ax, results: pd.DataFrame, panel: dict, index: int = 0, spec: dict | None = None,
                    paper: pd.DataFrame | None = None, allow_missing: bool = False,
                    bands: str = "auto") -> tuple[pd.DataFrame, list]:
    """Vote-count ablation: certified accuracy vs K (log axis) with 95% error bars (``bands``: ``off`` leaves them
    out; ``auto`` draws them, the points being set apart), one line per radius (colour); each baseline in
    ``methods`` as a horizontal line of the same colour per radius (onestep dashed, Carlini's own code dotted); the
    paper's (reference plot) points as hollow markers. Returns the plotted data and the legend entries."""
    import seaborn as sns
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    labels = labels_for(results, spec or {})
    classifier, sigma, b = panel["classifiers"][0], panel["sigmas"][0], panel.get("bs", [10])[0]
    radii, ks = specs.radii(panel), sorted(panel["Ks"])
    reps = [reported(results, panel, index, "densepure", classifier, sigma, b, k, labels, True, allow_missing)
            for k in ks]
    parts = [setting_accuracy(rep, radii) for rep in reps if rep is not None]
    bases = {}
    for m in panel_methods(panel, labels):
        if m != "densepure":
            rep = reported(results, panel, index, m, classifier, sigma, None, None, labels, True, allow_missing)
            if rep is not None:
                bases[m] = setting_accuracy(rep, radii)
    data = pd.concat(parts + list(bases.values()), ignore_index=True) if parts or bases else pd.DataFrame()
    pal = sns.color_palette("viridis", len(radii))
    points = pd.concat([_paper_points(paper, rep.meta, panel) for rep in reps if rep is not None] or [pd.DataFrame()],
                       ignore_index=True)
    entries, bars = [], bands_mode(bands) != "off"
    for i, r in enumerate(radii):
        entries.append((f"ε = {num(r)}", pal[i], "-", {"marker": "o", "markersize": 4}))
        if parts:
            g = data[(data["method_key"] == "densepure") & (data["radius"] == r)].sort_values("K")
            k = g["K"] * _dodge(i, len(radii))
            ax.plot(k, g["certified_accuracy"], color=pal[i], marker="o", ms=4, lw=1.8)
            if is_zero(g):
                entries[-1] = (f"ε = {num(r)} (0% at every K)", *entries[-1][1:])
            up = g["count"] > 0  # error bars where something is certified (an all-zero row would only add clutter)
            if bars:
                ax.errorbar(k[up], g.loc[up, "certified_accuracy"],
                            yerr=[(g["certified_accuracy"] - g["ci_low"])[up],
                                  (g["ci_high"] - g["certified_accuracy"])[up]],
                            color=pal[i], ls="none", capsize=2, elinewidth=0.8)
        for m, base in bases.items():
            ax.axhline(float(base.loc[base["radius"] == r, "certified_accuracy"].iloc[0]), color=pal[i],
                       ls=LINESTYLES.get(m, ":"), lw=1.3)
        if not points.empty:
            pr = points[np.isclose(points["radius"].astype(float), r)]
            ax.plot(pr["K"] * _dodge(i, len(radii)), pr["certified_accuracy"], color=pal[i],
                    **_paper_marker("densepure"))
    entries += [(legend_label(m, labels), "0.25", LINESTYLES.get(m, ":"), None) for m in bases]
    entries += _extra_entries(False, set() if points.empty else {"densepure"}, panel, labels)
    ax.set_xscale("log")
    ax.set_xticks(ks)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(min(ks) * 0.85, max(ks) * 1.15)
    _finish_axes(ax, "number of votes K")
    return data, entries


DRAWERS = {"curves": draw_curves, "b_ablation": draw_b_ablation, "k_ablation": draw_k_ablation}


def panels_figure(results: pd.DataFrame, spec: dict, kind: str | None = None, title: str | None = None,
                  artifact: str = "", paper: bool = True, allow_missing: bool = False, bands: str | None = None):
    """One axes per panel of ``spec``, drawn by the panel's kind (:func:`~densepure.report.spec.panel_kind`, or
    ``kind`` for all), and one legend for the figure under the panels. Returns ``(figure, data)``; ``data`` is the
    tidy plotted data (with n and 95% CI). ``paper``: draw the paper's numbers where they exist. ``bands``: ``on``,
    ``off`` or ``auto`` (:func:`~densepure.report.figure_layout.show_bands`); None: the spec's ``bands`` key, else
    ``auto``. ValueError if nothing was plotted or ``bands`` is none of those."""
    from matplotlib.figure import Figure

    panels = specs.panels(spec)
    kinds = [kind or specs.panel_kind(p) for p in panels]
    bands = bands_mode(bands if bands is not None else spec.get("bands"))
    published = _load_paper() if paper else None
    with figure_style():
        widths = [5.2 if k == "k_ablation" else 4.8 for k in kinds]
        fig = Figure(figsize=(max(sum(widths), 5.6), 5.4), layout="constrained")
        axes = fig.subplots(1, len(panels), squeeze=False, width_ratios=widths)[0]
        parts, entries = [], []
        for i, (ax, panel, k) in enumerate(zip(axes, panels, kinds)):
            data, panel_entries = DRAWERS[k](ax, results, panel, i, spec, published, allow_missing, bands)
            entries += panel_entries
            ax.set_title(panel_title(panel))
            if data.empty:
                ax.text(0.5, 0.5, "no results", transform=ax.transAxes, ha="center", va="center", color="grey")
                continue
            data.insert(0, "kind", k)
            parts.append(data)
        shared_legend(fig, entries, _line_handles)
        if title:
            fig.suptitle(title, fontsize=10)
    if not parts:
        raise ValueError(f"no results match artifact {artifact or 'spec'}")
    data = pd.concat(parts, ignore_index=True)
    data.insert(0, "artifact", artifact)
    return fig, data


def save_figure(fig, name: str, outdir: str | Path, run: str = "") -> list[Path]:
    """Save ``<name>.png`` (dpi 150) and ``<name>.pdf``; ``run`` names the run in the files' metadata (never in the
    drawing)."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = [outdir / f"{name}.png", outdir / f"{name}.pdf"]
    metadata = {"Title": name, **({"Subject": f"run {run}"} if run else {})}
    with figure_style():
        fig.savefig(paths[0], dpi=150, metadata=metadata)
        fig.savefig(paths[1], metadata=metadata)
    return paths


def figure_title(spec: dict, name: str) -> str:
    """The figure's title: the spec's ``source``, else the artifact name (no run name: a figure of one run reads
    like the same figure of another)."""
    return spec.get("source") or name


def write_figure(results: pd.DataFrame, spec: dict, name: str, outdir: str | Path, run: str = "",
                 allow_missing: bool = False, bands: str | None = None) -> list[Path]:
    """Draw artifact ``name`` from its spec (each panel by its kind, e.g. Fig. G = K ablation + b ablation) and save
    ``<name>.png``, ``<name>.pdf`` (``run`` in their metadata) and the plotted data ``<name>_data.csv``."""
    fig, data = panels_figure(results, spec, title=figure_title(spec, name), artifact=name,
                              allow_missing=allow_missing, bands=bands)
    paths = save_figure(fig, name, outdir, run)
    data_path = Path(outdir) / f"{name}_data.csv"
    data.to_csv(data_path, index=False)
    return paths + [data_path]


def _panel_caption(panel: dict, labels: dict) -> str:
    """What one panel plots, in words (see :func:`figure_caption`)."""
    kind = specs.panel_kind(panel)
    named = isinstance(panel.get("images"), str)
    where = panel_title({**panel, "images": None} if named else panel) + (f" · {panel['images']}" if named else "")
    methods = [m for m in method_order_safe(panel, labels) if m != "densepure"]
    base = " and ".join(f"{legend_label(m, labels)} as {'dashed' if LINESTYLES.get(m) == '--' else 'dotted'} lines"
                        for m in methods)
    sigmas = ", ".join(num(s) for s in panel.get("sigmas", []))
    if kind == "k_ablation":
        radii = ", ".join(num(r) for r in specs.radii(panel))
        text = (f"certified accuracy (%) of Ours against the number of votes K = "
                f"{', '.join(integer_text(k) for k in sorted(panel['Ks']))} (log axis), one line per radius "
                f"ε = {radii} (colour), with 95% error bars")
        return f"{where}: {text}" + (f"; {base}, one per radius" if base else "")
    if kind == "b_ablation":
        bs = ", ".join(integer_text(b) for b in sorted(panel["bs"]))
        mv = list(dict.fromkeys(integer_text(specs.mv_K(panel, b)) for b in sorted(panel["bs"])))
        text = (f"certified accuracy (%) against the L2 radius for b = {bs} reverse steps (colour), with a majority "
                f"vote of K = {', '.join(mv)} (solid lines) and without (K = 1, dashed lines)")
        return f"{where}: {text}" + (f"; b = 1: {base}" if base else "")
    ours = (f"Ours (b = {integer_text(panel.get('bs', [10])[0])}, K = {integer_text(panel.get('Ks', [40])[0])}) "
            "as solid lines")
    extra = [f"K = {integer_text(k)} as dash-dotted lines" for k in panel.get("extra_Ks", [])]
    shown = ", ".join([ours, *extra]) + (f" and {base}" if base else "")
    return f"{where}: certified accuracy (%) against the L2 radius of {shown}, one colour per σ = {sigmas}"


def method_order_safe(panel: dict, labels: dict) -> list[str]:
    """The panel's methods in table order, keeping methods without a display label under their key."""
    try:
        return panel_methods(panel, labels)
    except ValueError:
        return list(panel.get("methods", ["densepure", "onestep"]))


def figure_caption(spec: dict, image_sets: dict | None = None) -> str:
    """A caption that says what each panel of a figure plots (axes, curves and their styles, the setting), for the
    workflow's report; ``image_sets`` (:func:`~densepure.report.spec.collect_image_sets`) resolves the panels'
    image-set names into their number of images."""
    labels = {**METHOD_LABELS, **(spec.get("method_labels") or {})}
    panels = specs.panels(specs.resolve_spec(spec, image_sets) if image_sets is not None else spec)
    parts = [_panel_caption(p, labels) for p in panels]
    if len(parts) == 1:
        return parts[0] + "."
    return " ".join(f"Panel {i + 1}, {text}." for i, text in enumerate(parts))
