"""Published per-image logs as the papers release them: a tree of Cohen-format logs (one folder per model and noise
level, the same file names in several folders, radii with 4 digits, radii at the bound, radii that only a larger
alpha certifies, model names that are prefixes of each other), imported in one command and counted exactly as
written. Every expected number is computed here from the log files themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from densepure.cli.main import main
from densepure.report.imports import largest_radius

PATTERN = "{dataset}/{model}/noise_{train}/test/sigma_{sigma}"
HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime"
RADII = [0.0, 0.25, 0.5, 0.75, 1.0, 1.125, 1.5, 2.0, 3.0, 3.81, 3.9]


def write_log(path, rows):
    """rows: (idx, label, predict, radius text); correct = predict == label, as Cohen et al.'s certify.py."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [HEADER] + [f"{i}\t{y}\t{p}\t{r}\t{int(p == y)}\t0:00:01.5" for i, y, p, r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def bound_text(sigma, digits=4):
    """The largest radius N = 100000 draws certify at alpha = 0.001 as a log prints it with ``digits`` decimals
    (its rounding may lie above the exact value)."""
    return f"{largest_radius(sigma, 100_000, 0.001):.{digits}f}"


def log_rows(seed, sigma, beyond_alpha=False):
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(12):
        label = int(rng.integers(0, 10))
        predict = label if rng.random() < 0.7 else int(rng.choice([-1, (label + 1) % 10]))
        radius = f"{rng.uniform(0, 2.5 * sigma):.4f}" if predict != -1 else "0.0"
        rows.append((20 * k, label, predict, radius))
    rows[0] = (0, 3, 3, "0.4999")  # 4 digits just below a table radius: not certified at r = 0.5
    rows[1] = (20, 4, 4, "1.1250" if sigma >= 0.5 else "0.2500")  # exactly at a table radius: certified there
    rows[2] = (40, 5, 5, bound_text(sigma))  # at the bound, printed with more digits than 3 significant
    if beyond_alpha:
        rows[3] = (60, 6, 6, f"{3.90 * sigma:.4f}")  # only alpha = 0.01 (or larger) certifies this with N = 100000
    return rows


@pytest.fixture
def tree(tmp_path):
    """10 logs: 4 CIFAR-10 models x 2 noise levels, and 2 ImageNet logs named like CIFAR-10's."""
    logs = {}
    models = ["resnet110", "resnet110-adv", "x", "x_o"]  # names that are prefixes of each other
    for m, model in enumerate(models):
        for s, sigma in enumerate((0.25, 0.50)):
            path = tmp_path / "logs" / "cifar10" / model / f"noise_{sigma:.2f}" / "test" / f"sigma_{sigma:.2f}"
            logs[path] = ("cifar10", model, sigma, write_log(path, log_rows(10 * m + s, sigma)))
    for s, sigma in enumerate((0.25, 1.00)):
        path = tmp_path / "logs" / "imagenet" / "resnet50" / f"noise_{sigma:.2f}" / "test" / f"sigma_{sigma:.2f}"
        logs[path] = ("imagenet", "resnet50", sigma, write_log(path, log_rows(100 + s, sigma, beyond_alpha=True)))
    return tmp_path, logs


def counts_from_file(path, radii):
    """certified count at each radius, from the log text: correct == 1 and float(radius as written) >= r."""
    df = pd.read_csv(path, sep="\t", dtype=str)
    ok = df["correct"].astype(int).to_numpy() == 1
    radius = df["radius"].astype(float).to_numpy()
    return len(df), [int(np.sum(ok & (radius >= r))) for r in radii]


def import_tree(root, capsys):
    code = main(["import", "cohen", "--pattern", str(root / "logs" / PATTERN),
                 "--classifier", "{model}", "--method", "cohen", "--label", "RS (Cohen et al.)", "--alpha", "infer",
                 "--source", "Cohen et al. 2019, released logs", "--out", str(root / "imported")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.err


def test_a_tree_of_logs_in_one_command_counts_as_written(tree, capsys):
    root, logs = tree
    err = import_tree(root, capsys)
    out = sorted(p.relative_to(root / "imported").as_posix() for p in (root / "imported").rglob("*.tsv"))
    assert len(out) == 10 and "cifar10/x_o/noise_0.25/test/sigma_0.25.tsv" in out
    assert "imagenet/resnet50/noise_0.25/test/sigma_0.25.tsv" in out  # the same name as CIFAR-10's, kept apart
    assert err.count("alpha inferred from the radii: 0.01") == 2
    assert err.count("alpha inferred from the radii: 0.001") == 8
    assert main(["table", "--artifact", "imported", "--results", str(root / "imported"), "--outdir",
                 str(root / "tables"), "--radii", *map(str, RADII)]) == 0
    cells = pd.read_csv(root / "tables" / "imported_cells.csv")
    assert len(cells) == 10 * len(RADII)
    assert set(cells["provenance"]) == {"imported from Cohen et al. 2019, released logs"}
    for dataset, model, sigma, path in logs.values():
        n, counts = counts_from_file(path, RADII)
        mine = cells[(cells["dataset"] == dataset) & (cells["classifier"] == model) & np.isclose(cells["sigma"], sigma)]
        assert mine.sort_values("radius")["count"].tolist() == counts, (model, sigma)
        assert set(mine["n"]) == {n}
        # the 4-digit radius 0.4999 counts below 0.5, and 1.1250 at 1.125
        row = pd.read_csv(path, sep="\t", dtype=str)
        assert row["radius"].iloc[0] == "0.4999"
    imported = pd.read_csv(root / "imported" / "cifar10/x/noise_0.25/test/sigma_0.25.tsv", sep="\t", dtype=str)
    assert imported["radius"].tolist()[:3] == ["0.4999", "0.2500", bound_text(0.25)]  # kept as written
    assert set(imported["source"]) == {"Cohen et al. 2019, released logs"} and len(imported["source_sha256"][0]) == 64


def test_reimport_is_a_no_op_and_a_different_result_is_never_overwritten(tree, capsys):
    root, logs = tree
    import_tree(root, capsys)
    before = {p: p.read_bytes() for p in (root / "imported").rglob("*.tsv")}
    err = import_tree(root, capsys)
    assert err.count("(unchanged)") == 10
    assert {p: p.read_bytes() for p in (root / "imported").rglob("*.tsv")} == before
    # a log republished with other numbers: refused, nothing of the batch written
    first = next(iter(logs.values()))[3]
    first.write_text(first.read_text().replace("0.4999", "0.5001"))
    new = root / "logs" / "cifar10" / "wrn" / "noise_0.25" / "test" / "sigma_0.25"
    write_log(new, log_rows(7, 0.25))
    code = main(["import", "cohen", "--pattern", str(root / "logs" / PATTERN),
                 "--classifier", "{model}", "--method", "cohen", "--alpha", "infer", "--source",
                 "Cohen et al. 2019, released logs", "--out", str(root / "imported")])
    assert code == 2 and "already holds a different result" in capsys.readouterr().err
    assert not (root / "imported" / "cifar10" / "wrn").exists()
    assert {p: p.read_bytes() for p in (root / "imported").rglob("*.tsv")} == before


def test_a_batch_with_a_bad_log_writes_nothing(tree, capsys):
    root, logs = tree
    bad = root / "logs" / "cifar10" / "bad" / "noise_0.25" / "test" / "sigma_0.25"
    write_log(bad, [(0, 1, 1, "-0.5")])
    code = main(["import", "cohen", "--pattern", str(root / "logs" / PATTERN),
                 "--classifier", "{model}", "--method", "cohen", "--alpha", "infer", "--out", str(root / "imported")])
    err = capsys.readouterr().err
    assert code == 2 and "radius -0.5; a certified radius is >= 0" in err and err.count("\n") == 1
    assert not (root / "imported").exists()


def test_the_declared_alpha_is_checked_at_the_printed_precision(tree, tmp_path, capsys):
    root, logs = tree
    cifar = [v[3] for v in logs.values() if v[0] == "cifar10" and v[2] == 0.25]
    # radii at the bound printed with 4 decimals are accepted at alpha = 0.001
    assert main(["import", "cohen", *map(str, cifar), "--dataset", "cifar10", "--classifier", "m", "--method",
                 "cohen", "--sigma", "0.25", "--alpha", "0.001", "--out", str(tmp_path / "a")]) == 0
    imagenet = [v[3] for v in logs.values() if v[0] == "imagenet" and v[2] == 1.0][0]
    assert main(["import", "cohen", str(imagenet), "--dataset", "imagenet", "--classifier", "m", "--method", "cohen",
                 "--sigma", "1.0", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    needed = norm.cdf((3.90 - 0.00005) / 1.0) ** 100_000
    assert f"it needs alpha >= {needed:.3g} with N = 100000" in err and "--alpha infer" in err
    assert main(["import", "cohen", str(imagenet), "--dataset", "imagenet", "--classifier", "m", "--method", "cohen",
                 "--sigma", "1.0", "--alpha", "unknown", "--out", str(tmp_path / "c")]) == 0
    rows = pd.read_csv(next((tmp_path / "c").rglob("*.tsv")), sep="\t", keep_default_na=False)
    assert set(rows["alpha"]) == {""} and set(rows["setting_note"]) == {"alpha unknown: radii not checked against them"}


def test_names_that_are_prefixes_of_each_other_are_different_classifiers(tree, capsys):
    root, logs = tree
    import_tree(root, capsys)
    spec = root / "spec.yaml"
    spec.write_text("artifacts:\n  t:\n    panels:\n"
                    "      - {dataset: cifar10, classifiers: [x], sigmas: [0.25], bs: [1], Ks: [1], methods: [cohen], "
                    "radii: [0.0, 0.5], images: null}\n")
    assert main(["table", "--artifact", "t", "--spec", str(spec), "--results", str(root / "imported"), "--outdir",
                 str(root / "t")]) == 0, capsys.readouterr().err
    cells = pd.read_csv(root / "t" / "t_cells.csv")
    path = [v[3] for v in logs.values() if v[1] == "x" and v[2] == 0.25][0]
    assert cells.sort_values("radius")["count"].tolist() == counts_from_file(path, [0.0, 0.5])[1]


def test_compare_with_the_paper_where_some_cells_have_no_match(tree, capsys):
    """Imported one-shot rows against Table 1: the cells they match get a comparison, the others say 'missing', and
    both files are written (the HTML page once failed on the empty integer cells)."""
    root, logs = tree
    path = [v[3] for v in logs.values() if v[1] == "x" and v[2] == 0.25][0]
    assert main(["import", "cohen", str(path), "--dataset", "cifar10", "--classifier", "vit-b16-cifar10", "--method",
                 "onestep", "--sigma", "0.25", "--out", str(root / "onestep")]) == 0
    assert main(["compare", "--artifact", "table1", "--spec", "paper", "--results", str(root / "onestep"), "--out",
                 str(root / "cmp" / "table1.csv")]) == 0, capsys.readouterr().err
    out = pd.read_csv(root / "cmp" / "table1.csv")
    mine = out[out["reproduced_method_key"] == "onestep"]  # Table 1's Carlini row: the best over sigma
    assert len(mine) and mine["status"].isin(["ok", "differs"]).all()
    assert (out["status"] == "missing").sum() == len(out) - len(mine) > 0
    assert "not reproduced" in (root / "cmp" / "table1.html").read_text()


def test_an_envelope_row_takes_the_best_cell_and_names_it(tree, capsys):
    """The papers' rows "best over noise levels and models": per radius the best of the chosen settings."""
    root, logs = tree
    import_tree(root, capsys)
    spec = root / "envelope.yaml"
    spec.write_text("artifacts:\n  best:\n    panels:\n"
                    "      - {dataset: cifar10, classifiers: [resnet110, resnet110-adv, x, x_o], sigmas: [0.25, 0.5], "
                    "bs: [1], Ks: [1], methods: [cohen], radii: [0.0, 0.25, 0.5, 0.75], images: null}\n"
                    "    envelopes:\n      - {label: 'RS, best of 4 models', methods: [cohen]}\n")
    assert main(["table", "--artifact", "best", "--spec", str(spec), "--results", str(root / "imported"),
                 "--outdir", str(root / "t")]) == 0, capsys.readouterr().err
    cells = pd.read_csv(root / "t" / "best_cells.csv")
    envelope = cells[cells["method_key"] == "envelope"].sort_values("radius")
    radii = [0.0, 0.25, 0.5, 0.75]
    counts = {(m, s): counts_from_file(p, radii)[1] for d, m, s, p in logs.values() if d == "cifar10"}
    assert envelope["count"].tolist() == [max(c[j] for c in counts.values()) for j in range(len(radii))]
    for row in envelope.itertuples():
        label, model, sigma = row.envelope_of.split(", ")
        assert counts[(model, float(sigma.split("=")[1]))][radii.index(row.radius)] == row.count
    wide = pd.read_csv(root / "t" / "best.csv", dtype=str, keep_default_na=False)
    assert wide.iloc[-1, 0] == "RS, best of 4 models" and "[RS (Cohen et al.), " in wide.iloc[-1, -1]


def test_imported_rows_compare_with_the_papers_row_of_their_method(tree, capsys):
    """Table 1 quotes RS (Cohen et al.) without a classifier; a spec's paper_methods maps the imported method key to
    it, so the comparison needs no code."""
    root, logs = tree
    import_tree(root, capsys)
    spec = root / "rs.yaml"
    spec.write_text("artifacts:\n  table1:\n    paper_methods: {cohen: rs}\n    panels:\n"
                    "      - {dataset: cifar10, classifiers: [resnet110], sigmas: [0.25, 0.5], bs: [1], Ks: [1], "
                    "methods: [cohen], radii: [0.25, 0.5, 0.75, 1.0], images: null}\n")
    assert main(["compare", "--artifact", "table1", "--spec", str(spec), "--results", str(root / "imported"),
                 "--out", str(root / "cmp" / "rs.csv")]) == 0, capsys.readouterr().err
    out = pd.read_csv(root / "cmp" / "rs.csv")
    rs = out[(out["method_key"] == "rs") & (out["dataset"] == "CIFAR-10")].sort_values("radius")
    assert rs["reproduced_method_key"].tolist() == ["cohen"] * 4 and rs["status"].isin(["ok", "differs"]).all()
    assert rs["paper_certified_accuracy"].tolist() == [61.0, 43.0, 32.0, 23.0]
    counts = [counts_from_file(p, [0.25, 0.5, 0.75, 1.0]) for d, m, s, p in logs.values()
              if d == "cifar10" and m == "resnet110"]
    best = [max(100 * c[1][j] / c[0] for c in counts) for j in range(4)]  # Table 1: the best over sigma
    assert rs["reproduced_certified_accuracy"].tolist() == pytest.approx(best)


def test_the_documented_import_example_works_as_written_on_logs_that_fit_alpha_001(tmp_path):
    """docs/importing.md's first command, run as written on Cohen-format logs named as released, whose largest radii
    only alpha = 0.01 certifies with N = 100,000: imported, alpha recorded as inferred."""
    import re
    import subprocess
    import sys

    page = (Path(__file__).resolve().parents[1] / "docs" / "importing.md").read_text()
    command = re.search(r"```bash\n(densepure import cohen .*?)\n```", page, re.S).group(1)
    for sigma in ("0.25", "0.50", "1.00"):
        rows = [(0, 3, 3, f"{3.90 * float(sigma):.4f}"), (20, 4, 4, f"{0.5 * float(sigma):.4f}"), (40, 5, 1, "0.1")]
        write_log(tmp_path / f"noise_{sigma}" / "test" / f"sigma_{sigma}", rows)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    run = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("alpha inferred from the radii: 0.01") == 3
    assert (tmp_path / "results/imported/tables/cohen.csv").is_file()
    rows = pd.read_csv(tmp_path / "results/imported/cohen/noise_1.00/test/sigma_1.00.tsv", sep="\t")
    assert set(rows["alpha"]) == {0.01} and rows["setting_note"].str.startswith("alpha inferred").all()
