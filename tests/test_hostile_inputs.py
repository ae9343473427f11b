"""Hostile inputs, one row each: the command, its exit status, a phrase of its one-line message, and what must not
appear on disk. Every user mistake is one line on stderr (no traceback), and nothing escapes its folder. New
commands add their rows here."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from densepure.cli.main import main
from densepure.files import resources

SHARDS = Path(__file__).parent / "expected/default/shards"
STORES = Path(__file__).parent / "expected/default/votes/digits/digits-cnn"
STORE = STORES / "onestep-sigma0.25-b1-K1"
HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"


def files(tmp: Path) -> None:
    """The inputs the rows refer to, written the way their owners would (or would by mistake)."""
    (tmp / "log.tsv").write_text(HEADER + "0\t3\t3\t0.5\t1\t0:00:01\n20\t4\t4\t0.25\t1\t0:00:01\n")
    (tmp / "negative.tsv").write_text(HEADER + "0\t3\t3\t-0.5\t1\t0:00:01\n")
    (tmp / "fraction.tsv").write_text(HEADER + "0.5\t3\t3\t0.5\t1\t0:00:01\n")
    (tmp / "repeated.tsv").write_text(HEADER + "0\t3\t3\t0.5\t1\t0:00:01\n0\t3\t3\t0.4\t1\t0:00:01\n")
    (tmp / "binary.tsv").write_bytes(b"\x00\xff\x10binary\x00")
    (tmp / "malformed.yaml").write_text("dataset: [cifar10\n")
    (tmp / "duplicate.yaml").write_text("dataset: cifar10\nsigma: 0.25\nsigma: 0.5\n")
    (tmp / "rates.yaml").write_text("diffusion: 5\n")
    (tmp / "rates_dup.yaml").write_text("classifiers: {digits-cnn: 10.0}\nclassifiers: {digits-cnn: 20.0}\n")
    (tmp / "config_dup.yaml").write_text("run: a\nrun: b\n")
    (tmp / "junk.yaml").write_text("junk: [\n")
    (tmp / "list.yaml").write_text("- a\n- b\n")
    (tmp / "text.pt").write_text("this is not a checkpoint\n")
    (tmp / "exp").mkdir()
    np.save(tmp / "exp" / "0-0-n0_predictions.npy", np.arange(10.0).reshape(5, 2))
    np.save(tmp / "exp" / "0-0-n_predictions.npy", np.zeros(10, dtype=int))
    np.save(tmp / "exp" / "1-0-n0_predictions.npy", np.array([0.5, 1.0]))
    np.save(tmp / "exp" / "1-0-n_predictions.npy", np.zeros(2, dtype=int))
    (tmp / "labels0.tsv").write_text(HEADER + "0\t3\t3\t0.5\t1\t0:00:01\n")
    (tmp / "labels1.tsv").write_text(HEADER + "1\t3\t3\t0.5\t1\t0:00:01\n")
    (tmp / "labels_rep.tsv").write_text(HEADER + "1\t3\t3\t0.5\t1\t0:00:01\n1\t4\t4\t0.5\t1\t0:00:01\n")
    np.save(tmp / "exp" / "2-0-n0_predictions.npy", np.zeros(10, dtype=int))  # 10 + 50 draws per seed
    np.save(tmp / "exp" / "2-0-n_predictions.npy", np.zeros(50, dtype=int))
    (tmp / "labels2.tsv").write_text(HEADER + "2\t0\t0\t0.5\t1\t0:00:01\n")
    (tmp / "emptyvotes").mkdir()
    (tmp / "ckdir").mkdir()
    # the embedded default's votes with the sigma 0.5 store copied into the folder of its sigma 0.25 store
    for store, source in (("densepure-sigma0.5-b5-K10", "densepure-sigma0.5-b5-K10"),
                          ("densepure-sigma0.25-b5-K10", "densepure-sigma0.5-b5-K10")):
        (tmp / "mixed" / "digits" / "digits-cnn" / store).mkdir(parents=True)
        for name in ("setting.json", "0.npz", "20.npz"):
            shutil.copy(STORES / source / name, tmp / "mixed" / "digits" / "digits-cnn" / store / name)
    default = yaml.safe_load(resources.config_file("default").read_text())
    (tmp / "badrun.yaml").write_text(yaml.safe_dump({**default, "run": "../x"}))
    (tmp / "abs_dataset.yaml").write_text(yaml.safe_dump(
        {**default, "datasets": {"/tmp/pets": {**default["datasets"]["digits"], "loader": "image_folder"}}}))
    theory = {**default["theory"], "thm31": {**default["theory"]["thm31"], "x_a": [0.0, 0.0, 0.0]}}
    (tmp / "x_a.yaml").write_text(yaml.safe_dump({**default, "theory": theory}))


IMPORT = ["import", "cohen", "--dataset", "cifar10", "--classifier", "c", "--method", "cohen", "--out", "imported"]
VOTES = ["import", "densepure-votes", "--dataset", "cifar10", "--classifier", "c", "--sigma", "0.25", "--b", "2",
         "--N0", "1", "--votes-dir", "store", "--K", "1"]
CERTIFY = ["certify", "--dataset", "digits", "--ids", "0", "--classifier", "digits-cnn", "--sigma", "0.25", "--b",
           "2", "--K", "2", "--N0", "10", "--N", "20", "--votes-dir", "v", "--out", "o.tsv"]
TABLE = ["table", "--results", str(SHARDS), "--outdir", "out"]

# (id, argv, exit status, phrase of the message, paths that must not exist afterwards)
ROWS = [
    ("table: artifact outside its folder", TABLE + ["--artifact", "../evil"], 2, "not a plain name",
     ["../evil.csv", "../evil.md", "out"]),
    ("table: empty artifact", TABLE + ["--artifact", ""], 2, "--artifact is empty", ["out/.csv"]),
    ("table: hidden artifact", TABLE + ["--artifact", ".x"], 2, "not a plain name", ["out/.x.csv"]),
    ("table: radius nan", TABLE + ["--artifact", "t", "--radii", "nan"], 2, "must be >= 0", ["out"]),
    ("table: negative radius", TABLE + ["--artifact", "t", "--radii", "-1"], 2, "must be >= 0", ["out"]),
    ("import: negative radius", IMPORT + ["negative.tsv", "--sigma", "0.25"], 2, "a certified radius is >= 0",
     ["imported"]),
    ("import: fractional idx", IMPORT + ["fraction.tsv", "--sigma", "0.25"], 2, "an image id is an integer",
     ["imported"]),
    ("import: repeated idx", IMPORT + ["repeated.tsv", "--sigma", "0.25"], 2, "idx 0 appears twice", ["imported"]),
    ("import: alpha 2", IMPORT + ["log.tsv", "--sigma", "0.25", "--alpha", "2"], 2, "must be in (0, 1)",
     ["imported"]),
    ("import: N -5", IMPORT + ["log.tsv", "--sigma", "0.25", "--N", "-5"], 2, "must be >= 1", ["imported"]),
    ("import: N 0", IMPORT + ["log.tsv", "--sigma", "0.25", "--N", "0"], 2, "must be >= 1", ["imported"]),
    ("import: N0 100 beyond N", IMPORT + ["log.tsv", "--sigma", "0.25", "--N0", "x"], 2, "expected an integer",
     ["imported"]),
    ("import: negative sigma", IMPORT + ["log.tsv", "--sigma", "-0.25"], 2, "must be a finite number > 0",
     ["imported"]),
    ("import: sigma nan", IMPORT + ["log.tsv", "--sigma", "nan"], 2, "must be a finite number > 0", ["imported"]),
    ("import: binary log", IMPORT + ["binary.tsv", "--sigma", "0.25"], 2, "binary.tsv", ["imported"]),
    ("import: malformed sidecar", IMPORT + ["log.tsv", "--sigma", "0.25", "--sidecar", "malformed.yaml"], 2,
     "malformed.yaml: not a valid sidecar", ["imported"]),
    ("import: duplicate key in a sidecar", IMPORT + ["log.tsv", "--sidecar", "duplicate.yaml"], 2,
     "key 'sigma' appears twice", ["imported"]),
    ("import: no logs", IMPORT, 2, "give the logs to import, or --pattern", ["imported"]),
    ("import: over its own log", IMPORT[:-1] + [".", "log.tsv", "--sigma", "0.25"], 2, "would write over the log",
     []),
    ("votes: a 5 x 2 label array", VOTES + ["--predictions", "exp/", "--labels", "labels0.tsv"], 2,
     "labels of shape (5, 2)", ["store"]),
    ("votes: float labels", VOTES + ["--predictions", "exp/", "--labels", "labels1.tsv"], 2,
     "non-integer values", ["store"]),
    ("votes: repeated idx", VOTES + ["--predictions", "exp/", "--labels", "labels_rep.tsv"], 2,
     "idx 1 appears twice", ["store"]),
    ("votes: N0 100 of 60 draws", VOTES + ["--predictions", "exp/", "--labels", "labels2.tsv", "--N0", "100"], 2,
     "--N0 100 leaves no estimation draws: the label files of image 2 hold 60 draws", ["store"]),
    ("import: two logs lacking setting keys", ["import", "cohen", "log.tsv", "negative.tsv", "--out", "imported"], 2,
     "2 logs lack setting keys: log.tsv, negative.tsv lack dataset, classifier, method, sigma", ["imported"]),
    ("theory fig2: no output", ["theory", "fig2", "--spec", "config_dup.yaml"], 2,
     "give at least one of --png, --pdf, --csv", []),
    ("estimate: rates not per precision", ["estimate", "--configfile", "default", "--rates", "rates.yaml"], 2,
     "diffusion must map", []),
    ("estimate: duplicate key in rates", ["estimate", "--configfile", "default", "--rates", "rates_dup.yaml"], 2,
     "key 'classifiers' appears twice", []),
    ("estimate: duplicate key in a config", ["estimate", "--configfile", "config_dup.yaml"], 2,
     "key 'run' appears twice", []),
    ("compare: junk image sets", ["compare", "--artifact", "tableA", "--spec", "default", "--results", str(SHARDS),
                                  "--image-sets", "junk.yaml", "--out", "c.csv"], 2, "not a valid image sets file",
     ["c.csv"]),
    ("compare: image sets as a list of names", ["compare", "--artifact", "tableA", "--spec", "default", "--results",
                                                str(SHARDS), "--image-sets", "list.yaml", "--out", "c.csv"], 2,
     "a list of mappings", ["c.csv"]),
    ("figure: artifact outside its folder", ["figure", "--artifact", "../x", "--spec", "default", "--results",
                                             str(SHARDS), "--outdir", "f"], 2, "not a plain name", ["../x.png", "f"]),
    ("ledger: radii without a dataset", ["ledger", "--results", str(SHARDS), "--outdir", "l", "--radii", "digits"], 2,
     "expected DATASET:R,R,...", ["l"]),
    ("ledger: a folder without votes stores", ["ledger", "--results", str(SHARDS), "--outdir", "l", "--votes-dir",
                                               "nowhere"], 2, "no votes store there", ["l"]),
    ("export: a folder without votes stores", ["export", "--results", str(SHARDS), "--run", "r", "--votes-dir",
                                               "nowhere", "--out", "e.json"], 2, "no votes store there", ["e.json"]),
    ("aggregate: an id the store does not hold", ["aggregate", "--votes-dir", str(STORE), "--K", "1", "--ids", "5000",
                                                  "--out", "a/K{K}.tsv"], 2, "image 5000 has no complete votes file",
     ["a"]),
    ("aggregate: no {K} in --out", ["aggregate", "--votes-dir", str(STORE), "--K", "1", "--out", "a.tsv"], 2,
     "--out must contain {K}", ["a.tsv"]),
    ("certify: a text file as the diffusion bundle", CERTIFY + ["--diffusion", "bundle", "--diffusion-ckpt",
                                                                "text.pt"], 2, "text.pt", []),
    ("certify: a folder as the diffusion checkpoint", CERTIFY + ["--diffusion", "bundle", "--diffusion-ckpt",
                                                                 "ckdir"], 2,
     "diffusion checkpoint ckdir is a directory, not a checkpoint file", ["v", "o.tsv"]),
    ("estimate: --from-votes a missing folder", ["estimate", "--configfile", "default", "--from-votes", "nowhere"],
     2, "--from-votes nowhere: no such folder", ["nowhere"]),
    ("estimate: --from-votes a file", ["estimate", "--configfile", "default", "--from-votes", "log.tsv"], 2,
     "--from-votes log.tsv: not a folder", []),
    ("estimate: --from-votes an empty folder", ["estimate", "--configfile", "default", "--from-votes", "emptyvotes"],
     0, "--from-votes emptyvotes: no finished votes store of this config there", []),
    ("estimate: --from-votes a folder of junk", ["estimate", "--configfile", "default", "--from-votes", "exp"], 0,
     "--from-votes exp: no finished votes store of this config there", []),
    ("estimate: a store of another setting in a store's folder", ["estimate", "--configfile", "default",
                                                                  "--from-votes", "mixed"], 0,
     "densepure-sigma0.25-b5-K10: holds votes of another setting than the config's store of that name (sigma: 0.5 "
     "there, 0.25 in the config)", []),
    ("estimate: a run name outside its folder", ["estimate", "--configfile", "badrun.yaml"], 2,
     "run: '../x' is not a plain name", []),
    ("estimate: an absolute dataset name", ["estimate", "--configfile", "abs_dataset.yaml"], 2,
     "datasets: '/tmp/pets' is not a plain name", []),
    ("estimate: x_a of another dimension than the mixture", ["estimate", "--configfile", "x_a.yaml"], 2,
     "theory.thm31.x_a: [0.0, 0.0, 0.0] has 3 coordinates; the mixture's means have 2", []),
    ("aggregate: a range of more ids than are stored", ["aggregate", "--votes-dir", str(STORE), "--K", "1",
                                                          "--ids", "0:1000000", "--out", "a/K{K}.tsv"], 2,
     "'0:1000000' holds 1000000 ids; at most 30 are possible here", ["a"]),
    ("aggregate: a range of ids the store does not hold", ["aggregate", "--votes-dir", str(STORE), "--K", "1",
                                                           "--ids", "0:3", "--out", "a/K{K}.tsv"], 2,
     "image 1 has no complete votes file in", ["a"]),
    ("aggregate: a step range past the last stored image", ["aggregate", "--votes-dir", str(STORE), "--K", "1",
                                                            "--ids", "20:620:20", "--out", "a/K{K}.tsv"], 2,
     f"image 600 has no complete votes file in {STORE} (30 images stored, ids 0 to 580)", ["a"]),
    ("aggregate: an image named twice", ["aggregate", "--votes-dir", str(STORE), "--K", "1", "--ids", "0,0",
                                         "--out", "a/K{K}.tsv"], 0, "1 repeated image ids are certified once", []),
    ("aggregate: a K named twice", ["aggregate", "--votes-dir", str(STORE), "--K", "1", "1", "--ids", "0",
                                    "--out", "a/K{K}.tsv"], 0, "1 repeated K' values are certified once", []),
]


@pytest.mark.parametrize("argv, status, phrase, absent", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_hostile_input(tmp_path, monkeypatch, capsys, argv, status, phrase, absent):
    work = tmp_path / "work"
    work.mkdir()
    files(work)
    monkeypatch.chdir(work)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err.strip()
    assert code == status, err
    assert phrase in err, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for path in absent:
        assert not (work / path).exists(), path
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    if status:
        assert after == before, "a refused command left files behind"


def test_a_folder_without_weights_as_a_classifier_checkpoint_says_it_is_a_folder(tmp_path):
    """A Hugging Face model folder is a checkpoint; any other folder is named as a folder, not as missing."""
    from densepure.models.checkpoints import CheckpointError, checkpoint_file

    (tmp_path / "notes.txt").write_text("no weights here\n")
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file"):
        checkpoint_file(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    assert checkpoint_file(tmp_path) == tmp_path / "pytorch_model.bin"


def test_compare_on_the_defaults_own_results_writes_its_page(tmp_path, capsys):
    """A valid comparison of the embedded default's stored results: exit 0, a CSV and its HTML page."""
    assert main(["compare", "--artifact", "tableA", "--spec", "default", "--results", str(SHARDS), "--out",
                 str(tmp_path / "c.csv")]) == 0, capsys.readouterr().err
    assert (tmp_path / "c.csv").is_file() and "<table>" in (tmp_path / "c.html").read_text()


def test_figure_without_a_spec_draws_every_setting_as_curves(tmp_path, capsys):
    """`--spec` is optional for `figure` as for `table`: every setting of the results, one b per panel."""
    assert main(["figure", "--artifact", "all", "--results", str(SHARDS), "--outdir", str(tmp_path)]) == 0, \
        capsys.readouterr().err
    import pandas as pd

    data = pd.read_csv(tmp_path / "all_data.csv")
    assert (tmp_path / "all.png").is_file() and data["panel"].nunique() == 4
