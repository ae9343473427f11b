"""Table layout (the paper's rows and columns) and the writers: CSV, Markdown, LaTeX (booktabs), HTML, tidy cells
and the paired differences."""

from __future__ import annotations

import html
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

ROW_KEY_NAMES = {"dataset_label": "Dataset", "method_label": "Method", "provenance": "Source",
                 "off_the_shelf": "Off-the-shelf",
                 "classifier_label": "Model", "sigma": "σ", "b": "b", "K": "K"}
ROW_KEY_TEX = {"sigma": r"$\sigma$", "b": "$b$", "K": "$K$"}
BEYOND = "†"
STYLES = ("compact", "full")  # table text: the difference only where it is significant, or every interval


def num(x: float) -> str:
    """0 -> '0.0', 0.25 -> '0.25', 1 -> '1.0' (as the paper prints radii and sigmas)."""
    s = f"{float(x):g}"
    return s if "." in s or "e" in s else s + ".0"


def integer_text(x) -> str:
    """A count such as b or K as an integer: 10.0 -> '10' (a non-integral value keeps its digits: 2.5 -> '2.5')."""
    value = float(x)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and not pd.isna(value)


def table_style(style: str) -> str:
    """``compact`` or ``full``; ValueError naming the option for anything else."""
    if style not in STYLES:
        raise ValueError(f"--style: expected one of {', '.join(STYLES)}, got {style!r}")
    return style


def excludes_zero(row) -> bool:
    """Whether the paired difference's 95% interval ``[diff_low, diff_high]`` lies strictly on one side of 0."""
    return bool(row["diff_low"] > 0 or row["diff_high"] < 0)


def cell_text(row, style: str = "full") -> str:
    """Printed cell: the accuracy with one decimal (``†``: beyond the largest certifiable radius); Table 1 prefixes
    ``(clean)``; a DensePure cell with a baseline appends the paired difference, ``full``: always, with its 95%
    interval, ``(+3.3 [-5.1, +11.7])``; ``compact``: only where the interval excludes 0, without it, ``(+3.3)``."""
    acc = row.get("certified_accuracy")
    if not _present(acc):
        return "-"
    beyond = row.get("beyond_max_radius")
    text = f"{acc:.1f}" + (BEYOND if _present(beyond) and bool(beyond) else "")
    if _present(row.get("clean_accuracy")):
        text = f"({row['clean_accuracy']:.1f}) {text}"
    if _present(row.get("diff_vs_carlini")) and not (_present(beyond) and bool(beyond)):
        if style == "full":
            text += f" ({row['diff_vs_carlini']:+.1f} [{row['diff_low']:+.1f}, {row['diff_high']:+.1f}])"
        elif excludes_zero(row):
            text += f" ({row['diff_vs_carlini']:+.1f})"
    if _present(row.get("envelope_of")):
        text += f" [{row['envelope_of']}]"
    return text


def _key_text(key: str, value) -> str:
    if not _present(value):
        return ""
    if key == "sigma":
        return num(value)
    if key in ("b", "K"):
        return str(int(value))
    return str(value)


def table_layout(cells: pd.DataFrame, style: str = "full") -> tuple[list[str], list[tuple], pd.DataFrame]:
    """Paper-like layout of tidy cells: rows = method x sigma (plus dataset / model / b / K where they vary),
    columns = radii in increasing order (grouped by dataset when the datasets have different radii, as Table 1).
    Rows and column groups in order of first appearance in ``cells``; cell texts by :func:`cell_text` in ``style``.
    Returns (row key names, column keys ``(group, radius)``, wide frame of cell texts)."""
    if cells.empty:
        raise ValueError("no cells to write")
    c = cells.copy()
    for col in ("dataset_label", "classifier_label"):
        if col not in c:
            c[col] = np.nan
    radii_by_ds = {ds: tuple(sorted(g["radius"].unique())) for ds, g in c.groupby("dataset_label", sort=False)}
    grouped = len(radii_by_ds) > 1 and len(set(radii_by_ds.values())) > 1
    row_keys = []
    for key in ["dataset_label", "method_label", "provenance", "off_the_shelf", "classifier_label", "sigma", "b", "K"]:
        if key not in c or c[key].isna().all() or (key == "dataset_label" and grouped):
            continue
        if key in ("method_label", "off_the_shelf"):
            row_keys.append(key)
        elif key in ("b", "K"):
            if (c.groupby("method_label", sort=False)[key].nunique(dropna=True) > 1).any():
                row_keys.append(key)
        elif key == "classifier_label":  # a model column only where one dataset has several models (Table 2)
            if (c.groupby("dataset_label", sort=False)[key].nunique(dropna=True) > 1).any():
                row_keys.append(key)
        elif c[key].nunique(dropna=True) > 1:  # sigma, and the source where rows come from several
            row_keys.append(key)
    c["_text"] = [cell_text(r, style) for r in c.to_dict("records")]
    c["_group"] = c["dataset_label"] if grouped else ""
    group_order = {g: i for i, g in enumerate(dict.fromkeys(c["_group"]))}
    col_keys = sorted(dict.fromkeys(zip(c["_group"], c["radius"])), key=lambda gr: (group_order[gr[0]], gr[1]))
    row_tuples = list(dict.fromkeys(tuple(_key_text(k, v) for k, v in zip(row_keys, r))
                                    for r in c[row_keys].itertuples(index=False)))
    lookup = {}
    for rec in c.to_dict("records"):
        rk = tuple(_key_text(k, rec[k]) for k in row_keys)
        lookup[(rk, (rec["_group"], rec["radius"]))] = rec["_text"]
    data = [[*rk, *(lookup.get((rk, ck), "-") for ck in col_keys)] for rk in row_tuples]
    columns = [ROW_KEY_NAMES[k] for k in row_keys] + [f"{g} ε={num(r)}".strip() for g, r in col_keys]
    return row_keys, col_keys, pd.DataFrame(data, columns=columns)


def _blank_repeats(rows: list[list[str]], n_keys: int) -> list[list[str]]:
    """Print a leading row key only where it changes (as the paper's multirow cells)."""
    out, prev = [], [None] * n_keys
    for row in rows:
        new = list(row)
        for j in range(n_keys):
            if row[:j + 1] == prev[:j + 1]:
                new[j] = ""
        prev = list(row[:n_keys])
        out.append(new)
    return out


def _values(series) -> list:
    return list(dict.fromkeys(v for v in series if _present(v)))


def title(cells: pd.DataFrame, name: str, source: str = "") -> str:
    """One line naming the artifact and its setting, per dataset: classifiers, sigmas, DensePure's b and K,
    N0 / N / alpha and the images, e.g. ``tableA (App. D.3, Table A): CIFAR-10, ViT-B/16, σ = 0.25, 0.5; Ours b = 10,
    K = 40; N0 = 100, N = 100000, α = 0.001; cifar10_main (500 images)``."""
    reproduced = cells[cells["setting"].notna()] if "setting" in cells else cells
    parts = []
    for _, g in reproduced.groupby("dataset_label", sort=False):
        sigma = g["sigma_matched"] if "sigma_matched" in g and g["sigma"].isna().all() else g["sigma"]
        dp = g[g["method_key"] == "densepure"]
        text = ", ".join([_values(g["dataset_label"])[0], *_values(g["classifier_label"])])
        text += ", σ = " + ", ".join(num(s) for s in sorted(_values(sigma)))
        if not dp.empty:
            text += (f"; Ours b = {', '.join(map(integer_text, _values(dp['b'])))}, "
                     f"K = {', '.join(map(integer_text, _values(dp['K'])))}")
        setting = [f"{k} = {', '.join(f'{v:g}' for v in _values(g[c]))}"
                   for k, c in (("N0", "N0"), ("N", "N"), ("α", "alpha")) if c in g and _values(g[c])]
        if setting:
            text += "; " + ", ".join(setting)
        images = [v for v in _values(g["images"]) if v] if "images" in g else []
        count = f"{', '.join(str(int(x)) for x in _values(g['n']))} images"
        text += f"; {', '.join(images)} ({count})" if images else f"; {count}"
        parts.append(text)
    head = f"{name} ({source})" if source else name
    return head + ": " + " | ".join(parts) if parts else head


def note(cells: pd.DataFrame, style: str = "full") -> str:
    """What the table's marks mean, for its ``style``."""
    parts = ["Certified accuracy (%)."]
    if "clean_accuracy" in cells:
        parts.append("Parenthesised before the value: clean accuracy (r = 0) of the sigma giving the cell.")
    if "diff_vs_carlini" in cells and cells["diff_vs_carlini"].notna().any() and style == "compact":
        parts.append("In parentheses after the value: Ours minus the one-shot baseline on the same images, shown "
                     "where its 95% interval for paired proportions (Newcombe 1998) excludes 0; every difference "
                     "with its interval in the .csv file, exact McNemar p-values in the _paired.csv file.")
    elif "diff_vs_carlini" in cells and cells["diff_vs_carlini"].notna().any():
        parts.append("After the value: Ours minus the one-shot baseline on the same images, with its 95% interval "
                     "for paired proportions (Newcombe 1998); exact McNemar p-values in the _paired.csv file.")
    if "beyond_max_radius" in cells and cells["beyond_max_radius"].fillna(False).astype(bool).any():
        parts.append(f"{BEYOND}: beyond the largest radius N draws can certify, sigma Phi^-1(alpha^(1/N)); "
                     "no image can count there.")
    if "provenance" in cells:
        by_source = cells.groupby("provenance", sort=False)["method_label"].agg(lambda m: ", ".join(dict.fromkeys(m)))
        parts.append(" ".join(f"{source[0].upper()}{source[1:]}: {methods}." for source, methods in by_source.items()))
    if "n" in cells and cells["n"].notna().any():
        ns = sorted({int(x) for x in cells["n"].dropna()})
        parts.append(f"n = {', '.join(map(str, ns))} images per reproduced cell; 95% Clopper-Pearson intervals in "
                     "the _cells.csv file.")
    return " ".join(parts)


def markdown(row_keys, col_keys, wide: pd.DataFrame, note_text: str, heading: str = "") -> str:
    header = "| " + " | ".join(wide.columns) + " |"
    align = "|" + "|".join(":---" if i < len(row_keys) else "---:" for i in range(len(wide.columns))) + "|"
    rows = _blank_repeats(wide.astype(str).values.tolist(), len(row_keys))
    body = ["| " + " | ".join(r) + " |" for r in rows]
    top = [f"**{heading}**", ""] if heading else []
    return "\n".join([*top, header, align, *body, "", note_text, ""])


MINUS = re.compile(r"(?<![\w.])-(?=\d)")  # a minus sign before a number, not a hyphen (CIFAR-10, WRN28-10)


def _tex_escape(text: str) -> str:
    """LaTeX text of a cell or heading: special characters escaped, Greek letters and the dagger in math mode,
    a number's minus sign as a math minus (``$-$``, not a hyphen)."""
    text = str(text)
    for a, b in (("\\", r"\textbackslash{}"), ("^", r"\^{}"), ("~", r"\textasciitilde{}"), ("&", r"\&"),
                 ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("σ", r"$\sigma$"), ("ε", r"$\varepsilon$"), ("α", r"$\alpha$"), ("–", "--"),
                 (BEYOND, r"$^\dagger$")):
        text = text.replace(a, b)
    return MINUS.sub("$-$", text)


def latex(row_keys, col_keys, wide: pd.DataFrame, note_text: str, heading: str = "", label: str = "") -> str:
    """A booktabs ``table`` float: ``\\caption`` (the heading and the note), ``\\label{tab:<label>}`` and the
    tabular, with column groups as ``\\multicolumn`` headings."""
    nk, nc = len(row_keys), len(col_keys)
    caption = _tex_escape(" ".join(filter(None, [f"{heading}." if heading else "", note_text])))
    lines = [r"\begin{table}", r"\centering", rf"\caption{{{caption}}}"]
    lines += [rf"\label{{tab:{label}}}"] if label else []
    lines += [r"\begin{tabular}{" + "l" * nk + "r" * nc + "}", r"\toprule"]
    groups = list(dict.fromkeys(g for g, _ in col_keys))
    if groups != [""]:
        head, rules, start = ["" for _ in range(nk)], [], nk + 1
        for g in groups:
            width = sum(1 for gg, _ in col_keys if gg == g)
            head.append(rf"\multicolumn{{{width}}}{{c}}{{{_tex_escape(g)}}}")
            rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
            start += width
        lines += [" & ".join(head) + r" \\", " ".join(rules)]
    else:
        lines += [" & " * nk + rf"\multicolumn{{{nc}}}{{c}}{{Certified accuracy (\%) at $\varepsilon$}} \\",
                  rf"\cmidrule(lr){{{nk + 1}-{nk + nc}}}"]
    names = [ROW_KEY_TEX.get(k, _tex_escape(ROW_KEY_NAMES[k])) for k in row_keys] + [num(r) for _, r in col_keys]
    lines += [" & ".join(names) + r" \\", r"\midrule"]
    for row in _blank_repeats(wide.astype(str).values.tolist(), nk):
        lines.append(" & ".join(_tex_escape(x) for x in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def html_page(heading: str, frame: pd.DataFrame, note_text: str = "", n_keys: int = 0) -> str:
    """A small self-contained HTML page: heading, table (row keys left-aligned), note. Shown inline by Snakemake's
    report."""
    rows = _blank_repeats(frame.astype(str).values.tolist(), n_keys) if n_keys else frame.astype(str).values.tolist()
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f'<td class="{"key" if j < n_keys else "val"}">{html.escape(v)}</td>'
                                    for j, v in enumerate(r)) + "</tr>" for r in rows)
    style = ("body{font-family:sans-serif;font-size:14px} table{border-collapse:collapse} "
             "th,td{padding:3px 8px;border-bottom:1px solid #ddd} td.val{text-align:right;font-variant-numeric:"
             "tabular-nums} td.key{text-align:left} th{border-bottom:2px solid #444}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>"
            f"<h3>{html.escape(heading)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            f"<p>{html.escape(note_text)}</p></body></html>\n")


def write_table(table, name: str, outdir: str | Path, style: str = "compact") -> list[Path]:
    """Write ``<name>.csv`` / ``.md`` / ``.tex`` (booktabs, with caption and label ``tab:<name>``) / ``.html`` laid
    out like the paper (see :func:`table_layout`; Markdown, LaTeX and HTML titled with the setting and in
    ``style``, the CSV always ``full``: every difference with its interval), ``<name>_cells.csv`` with the tidy
    cells (n, count, CI) and ``<name>_paired.csv`` with every paired difference."""
    from densepure.files.paths import safe_name

    safe_name(name, "the artifact name")
    table_style(style)
    cells = table.cells
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    row_keys, col_keys, wide = table_layout(cells)
    shown = wide if style == "full" else table_layout(cells, style)[2]
    note_text = " ".join(filter(None, [note(cells, style), table.provenance]))
    heading = title(cells, name, table.spec.get("source", "") if table.spec else "")
    stems = ["csv", "md", "tex", "html"]
    paths = [outdir / f"{name}.{ext}" for ext in stems] + [outdir / f"{name}_cells.csv", outdir / f"{name}_paired.csv"]
    wide.to_csv(paths[0], index=False)
    paths[1].write_text(markdown(row_keys, col_keys, shown, note_text, heading))
    paths[2].write_text(latex(row_keys, col_keys, shown, note_text, heading, name))
    paths[3].write_text(html_page(heading, shown, note_text, len(row_keys)))
    cells.to_csv(paths[4], index=False)
    table.paired.to_csv(paths[5], index=False)
    return paths
