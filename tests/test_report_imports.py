"""Results produced elsewhere: Cohen et al.'s logs (and Carlini et al.'s running-total variant) and the official
DensePure code's per-seed label files, each written by the test in its own format."""

import argparse
import json
import logging
import re
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import tool_env

from densepure import report
from densepure.cli import report as report_cli
from densepure.core.smoothing import certify_votes, format_radius
from densepure.report import imports

COHEN_HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime"


def cohen_log(path, rows, cumulative=False, time=True):
    """rows: (idx, label, predict, radius). Cohen et al.'s certify.py writes correct = int(predict == label);
    Carlini et al.'s certify.py writes the running total instead."""
    lines = [COHEN_HEADER if time else COHEN_HEADER.rsplit("\t", 1)[0]]
    total = 0
    for idx, label, predict, radius in rows:
        right = int(predict == label)
        total += right
        values = [idx, label, predict, format_radius(radius), total if cumulative else right]
        lines.append("\t".join(map(str, values + (["0:00:02.5"] if time else []))))
    path.write_text("\n".join(lines) + "\n")
    return path


ROWS = [(0, 3, 3, 0.61), (20, 5, 5, 0.12), (40, 1, -1, 0.0), (60, 7, 2, 0.4), (80, 9, 9, 0.9)]


def _parser():
    parser = argparse.ArgumentParser(prog="densepure")
    report_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_import_cohen_log_and_rebuild_its_table_in_one_command(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="densepure")
    logs = [cohen_log(tmp_path / f"noise_{s}.tsv", ROWS) for s in ("0.25", "0.50")]
    args = _parser().parse_args([
        "import", "cohen", *map(str, logs), "--sigma", "0.25", "0.5", "--dataset", "cifar10", "--classifier",
        "resnet-110", "--method", "cohen", "--label", "RS (Cohen et al.)", "--out", str(tmp_path / "imported"),
        "--table", str(tmp_path / "tables")])
    assert report_cli.run_report(args) == 0
    err = caplog.text
    assert "noise_0.25.tsv -> " in err and "5 images, cifar10/resnet-110/cohen sigma=0.25 (defaults: N0=100, " \
                                           "N=100000, alpha=0.001, b=1, K=1, precision=fp32)" in err
    rows = report.load_results([tmp_path / "imported"])
    assert len(rows) == 10 and set(rows["method_label"]) == {"RS (Cohen et al.)"}
    assert set(rows["source"]) == {"import:cohen:noise_0.25.tsv", "import:cohen:noise_0.50.tsv"}
    wide = pd.read_csv(tmp_path / "tables" / "cohen.csv", dtype=str, keep_default_na=False)
    # certified at r: ids 0 (0.61), 20 (0.12), 80 (0.9) correct; 40 abstains; 60 is wrong -> 60/40/40/20/0; at
    # sigma 0.25 r = 1.0 lies beyond the largest radius N = 100000 draws certify (0.953)
    assert wide.values.tolist() == [["RS (Cohen et al.)", "0.25", "60.0", "40.0", "40.0", "20.0", "0.0†"],  # one source
                                    ["RS (Cohen et al.)", "0.5", "60.0", "40.0", "40.0", "20.0", "0.0"]]
    assert (tmp_path / "tables" / "cohen.md").read_text().startswith("**cohen (every setting of the results): "
                                                                      "CIFAR-10, resnet-110, σ = 0.25, 0.5; N0 = 100, N = 100000, α = 0.001; 5 images**")


def test_imported_rows_join_a_table_spec_next_to_ours(tmp_path):
    log = cohen_log(tmp_path / "cohen.tsv", ROWS)
    (tmp_path / "cohen.tsv.yaml").write_text(yaml.safe_dump({
        "dataset": "cifar10", "classifier": "vit-b16-cifar10", "method": "cohen", "label": "RS (Cohen et al.)",
        "sigma": 0.25}))
    imports.import_cohen([log], tmp_path / "imported", {})
    ours = tmp_path / "ours.tsv"
    from report_helpers import ok, write_tsv

    write_tsv(ours, [ok(i, "0.7") for i in (0, 20, 40, 60, 80)])
    spec = {"panels": [{"dataset": "cifar10", "classifiers": ["vit-b16"], "sigmas": [0.25], "bs": [10], "Ks": [40],
                        "methods": ["densepure", "cohen"], "images": None, "radii": [0.0, 0.5]}],
            "pairs": [[{"method": "densepure"}, {"method": "cohen"}]]}
    table = report.table_artifact(report.load_results([ours, tmp_path / "imported"]), spec, "t")
    assert table.cells["method_label"].unique().tolist() == ["RS (Cohen et al.)", "Ours"]
    pair = table.paired[table.paired["pair"] == "spec0"]
    # r = 0.5: Ours all 5; Cohen's log ids 0 (0.61) and 80 (1.3) -> +60 on the shared 5 images
    assert pair.loc[pair["radius"] == 0.5, "difference"].tolist() == [60.0]


def test_imported_file_names():
    from pathlib import Path

    assert [imports.imported_name(Path(p)) for p in ("a/sigma_0.25", "noise_0.50.tsv", "log.txt", "x.y.log")] == [
        "sigma_0.25.tsv", "noise_0.50.tsv", "log.tsv", "x.y.tsv"]


def test_carlini_running_total_is_detected_and_converted(tmp_path, caplog):
    log = cohen_log(tmp_path / "carlini.tsv", ROWS, cumulative=True)
    assert pd.read_csv(log, sep="\t")["correct"].tolist() == [1, 2, 2, 2, 3]
    df = imports.read_cohen_log(log)
    assert df["correct"].astype(int).tolist() == [1, 1, 0, 0, 1]
    (record,) = [r for r in caplog.records if r.name == "densepure.report.imports"]
    assert record.levelno == logging.WARNING
    assert "running total (as Carlini et al.'s certify.py writes it); converted" in record.getMessage()
    # per-image values pass untouched; anything else is refused naming the row
    assert imports.read_cohen_log(cohen_log(tmp_path / "cohen.tsv", ROWS))["correct"].tolist() == ["1", "1", "0",
                                                                                                    "0", "1"]
    bad = tmp_path / "bad.tsv"
    bad.write_text(COHEN_HEADER + "\n0\t3\t3\t0.5\t0\t0:00:01\n")
    with pytest.raises(ValueError, match=r"row 1 \(idx 0\) has correct = 0 but predict == label is True"):
        imports.read_cohen_log(bad)


def test_densepure_merged_results_without_time_column(tmp_path):
    # the official code's merge script writes idx label predict radius correct (no time)
    log = cohen_log(tmp_path / "cifar10_0.25_merge_results.txt", ROWS, time=False)
    out = imports.import_cohen([log], tmp_path / "o", {"dataset": "cifar10", "classifier": "vit-b16-cifar10",
                                                       "method": "densepure", "sigma": 0.25, "b": 10, "K": 40})
    rows = report.load_results(out)
    assert set(rows["method_key"]) == {"densepure"} and set(rows["method_label"]) == {"Ours"}
    assert rows["time"].tolist() == ["0:00:00"] * 5


def test_import_errors(tmp_path):
    log = cohen_log(tmp_path / "x.tsv", ROWS)
    with pytest.raises(ValueError, match="the setting lacks dataset, sigma; give --dataset --sigma or a sidecar"):
        imports.import_cohen([log], tmp_path, {"classifier": "c", "method": "cohen", "label": "RS"})
    with pytest.raises(ValueError, match="would write over the log .*x.tsv itself"):
        imports.import_cohen([log], tmp_path, {"dataset": "d", "classifier": "c", "method": "cohen"}, sigmas=[0.25])
    with pytest.raises(ValueError, match="one --sigma for all logs or one per log"):
        imports.import_cohen([log], tmp_path, {}, sigmas=[0.25, 0.5])
    side = tmp_path / "side.yaml"
    side.write_text("dataset: d\nsigmaa: 0.25\n")
    with pytest.raises(ValueError, match="unknown key\\(s\\) sigmaa"):
        imports.import_cohen([log], tmp_path, {}, sidecar=side)
    with pytest.raises(ValueError, match="idx 80 has radius 0.9, beyond the largest radius N = 1000 draws certify "
                                         r"at sigma = 0.25 and alpha = 0.001 \(0.6158.*\); it needs alpha >= "):
        imports.import_cohen([log], tmp_path / "out", {"dataset": "d", "classifier": "c", "method": "cohen",
                                                       "label": "RS", "N": 1000}, sigmas=[0.25])
    other = tmp_path / "other.tsv"
    other.write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="not a log in Cohen et al.'s format"):
        imports.read_cohen_log(other)


def _reference_label_files(prefix, ids, labels, seeds, N0, N, rng):
    """The official code's per-seed files: for each seed, N0 and N predicted labels per image; the noisy draws are
    shared by the seeds, so each seed's labels at position j are one vote on draw j."""
    votes = {}
    for i, label in zip(ids, labels):
        agree = rng.random(N0 + N) < 0.8  # the draw's votes mostly say the label
        v = np.where(agree[:, None] & (rng.random((N0 + N, seeds)) < 0.85), label,
                     rng.integers(0, 10, (N0 + N, seeds)))
        votes[i] = v
        for s in range(seeds):
            np.save(f"{prefix}{i}-{s}-n0_predictions.npy", v[:N0, s])
            np.save(f"{prefix}{i}-{s}-n_predictions.npy", v[N0:, s])
    return votes


def test_densepure_label_files_become_a_votes_store_that_aggregates(tmp_path):
    from densepure.cli.main import main

    rng = np.random.default_rng(0)
    (tmp_path / "exp" / "cifar10").mkdir(parents=True)
    prefix = str(tmp_path / "exp" / "cifar10" / "0.25-")
    ids, labels = [0, 20, 40], [3, 5, 1]
    votes = _reference_label_files(prefix, ids, labels, seeds=5, N0=10, N=50, rng=rng)
    seed0 = cohen_log(tmp_path / "seed0", [(i, lab, lab, 0.1) for i, lab in zip(ids, labels)])
    args = _parser().parse_args(["import", "densepure-votes", "--predictions", prefix, "--labels", str(seed0),
                                 "--votes-dir", str(tmp_path / "votes"), "--dataset", "cifar10", "--classifier",
                                 "vit-b16-cifar10", "--sigma", "0.25", "--b", "10", "--N0", "10"])
    assert report_cli.run_report(args) == 0
    setting = json.loads((tmp_path / "votes" / "setting.json").read_text())
    assert (setting["K"], setting["N0"], setting["N"], setting["b"]) == (5, 10, 50, 10)
    out = str(tmp_path / "agg" / "K{K}.tsv")
    assert main(["aggregate", "--votes-dir", str(tmp_path / "votes"), "--K", "1", "5", "--out", out]) == 0
    rows = report.load_results([tmp_path / "agg" / "K5.tsv"])
    for i, lab in zip(ids, labels):
        cert = certify_votes(votes[i], 5, 10, 0.25, 0.001, 10)  # the reference's merge on the same labels
        row = rows[rows["idx"] == i].iloc[0]
        assert (row["predict"], row["radius_text"], row["label"]) == (cert.prediction, format_radius(cert.radius),
                                                                      lab)
    with pytest.raises(ValueError, match="missing label file .*-5-n0_predictions.npy"):
        imports.import_densepure_votes(prefix, seed0, tmp_path / "v2", {"dataset": "cifar10", "classifier": "c",
                                                                        "sigma": 0.25, "b": 10}, K=6)


# --- through the command line, as a user types it --------------------------------------------------------------


def densepure(*args, cwd) -> subprocess.CompletedProcess:
    """``densepure ARGS`` in ``cwd``, stderr a pipe (so its messages are dated lines)."""
    return subprocess.run(["densepure", *map(str, args)], cwd=cwd, env=tool_env(), capture_output=True, text=True,
                          timeout=300)


def test_import_names_every_missing_setting_key_of_every_log_at_once(tmp_path):
    """Two logs lacking different keys: one line names both logs and all the keys each lacks, before anything is
    read or written."""
    for name in ("a.tsv", "b.tsv"):
        cohen_log(tmp_path / name, ROWS)
    (tmp_path / "b.tsv.yaml").write_text("classifier: c\nsigma: 0.25\n")
    run = densepure("import", "cohen", "a.tsv", "b.tsv", "--dataset", "cifar10", "--out", "out", cwd=tmp_path)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("densepure: error: 2 logs lack setting keys: a.tsv lacks classifier, method, sigma; "
                                 "b.tsv lacks method; give --classifier --method --sigma or a sidecar"), run.stderr
    assert not (tmp_path / "out").exists()
    # one log: its keys, all at once
    run = densepure("import", "cohen", "a.tsv", "--out", "out", cwd=tmp_path)
    assert "a.tsv: the setting lacks dataset, classifier, method, sigma; give --dataset --classifier --method " \
           "--sigma or a sidecar a.tsv.yaml" in run.stderr, run.stderr


def test_import_names_every_impossible_setting_value_at_once(tmp_path):
    cohen_log(tmp_path / "a.tsv", ROWS)
    (tmp_path / "a.tsv.yaml").write_text("dataset: d\nclassifier: c\nmethod: m\nsigma: -1\nN0: 2.5\nN: many\n"
                                         "alpha: 3\n")
    run = densepure("import", "cohen", "a.tsv", "--out", "out", cwd=tmp_path)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    for phrase in ("sigma = -1 must be a noise level > 0", "N0 = 2.5 must be a whole number of draws >= 1",
                   "N = 'many' is not a number", "alpha = 3 must lie in (0, 1)"):
        assert phrase in run.stderr, (phrase, run.stderr)


def test_import_logs_one_dated_line_per_log_and_quiet_silences_it(tmp_path):
    cohen_log(tmp_path / "a.tsv", ROWS)
    given = ["--dataset", "d", "--classifier", "c", "--method", "cohen", "--sigma", "0.25"]
    run = densepure("import", "cohen", "a.tsv", *given, "--out", "out", cwd=tmp_path)
    assert run.returncode == 0 and run.stdout == "out/a.tsv\n", run.stderr
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO densepure.report.imports: a.tsv -> out/a.tsv: 5 "
                        r"images, d/c/cohen sigma=0.25 \(defaults: .*\)\n", run.stderr), run.stderr
    for quiet in (["-q", "import"], ["import", "--quiet"]):
        run = densepure(*quiet, "cohen", "a.tsv", *given, "--out", "out", cwd=tmp_path)
        assert (run.returncode, run.stdout, run.stderr) == (0, "out/a.tsv\n", ""), run.stderr


def test_votes_import_says_when_N0_leaves_no_estimation_draws(tmp_path):
    """60 draws per seed: --N0 100 would leave N = -40; the message says so in the user's terms."""
    rng = np.random.default_rng(0)
    _reference_label_files(str(tmp_path / "p-"), [0], [3], seeds=2, N0=10, N=50, rng=rng)
    cohen_log(tmp_path / "seed0", [(0, 3, 3, 0.1)])
    common = ["import", "densepure-votes", "--predictions", "p-", "--labels", "seed0", "--dataset", "cifar10",
              "--classifier", "c", "--sigma", "0.25", "--b", "2", "--votes-dir", "votes"]
    run = densepure(*common, "--N0", "100", cwd=tmp_path)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "--N0 100 leaves no estimation draws: the label files of image 0 hold 60 draws per seed" in run.stderr
    assert "must be >= 1" not in run.stderr and not (tmp_path / "votes").exists()
    run = densepure(*common, "--N0", "59", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "votes" / "setting.json").read_text())["N"] == 1
