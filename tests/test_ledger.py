"""The ledger: every reproduced and imported result in one table and one JSON that validates against the committed
schema; each cell checked against counts computed here from the input files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest

from densepure.cli.main import main

REPO = Path(__file__).resolve().parents[1]
EXPECTED = REPO / "tests/expected/default"
SCHEMA = json.loads((REPO / "workflow/schemas/ledger.schema.json").read_text())
HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"


def imported_logs(folder: Path) -> Path:
    """Two CIFAR-10 logs of one paper (4-digit radii; one beyond what N = 1000 draws certify at sigma 0.25 only at
    r = 1.0), imported with their declared source."""
    rng = np.random.default_rng(3)
    for sigma in ("0.25", "0.50"):
        rows = []
        for k in range(20):
            label = int(rng.integers(0, 10))
            predict = label if rng.random() < 0.75 else -1
            radius = rng.uniform(0, 2.4 * float(sigma))
            rows.append(f"{20 * k}\t{label}\t{predict}\t{radius:.4f}\t{int(predict == label)}\t0:00:01")
        path = folder / "logs" / f"noise_{sigma}" / "test" / f"sigma_{sigma}"
        path.parent.mkdir(parents=True)
        path.write_text(HEADER + "\n".join(rows) + "\n")
    for model in ("resnet110", "resnet110-adv"):  # two models of the paper, on the same released logs
        code = main(["import", "cohen", "--pattern", str(folder / "logs/noise_{train}/test/sigma_{sigma}"),
                     "--dataset", "cifar10", "--classifier", model, "--method", "cohen", "--label", "RS", "--N",
                     "1000", "--source", "Cohen et al. (2019), released logs", "--out",
                     str(folder / "imported" / model)])
        assert code == 0
    return folder / "imported"


def test_ledger_of_the_default_and_imported_logs(tmp_path, capsys):
    imported = imported_logs(tmp_path)
    assert main(["ledger", "--results", str(EXPECTED / "shards"), str(imported), "--votes-dir",
                 str(EXPECTED / "votes"), "--run", "default", "--outdir", str(tmp_path / "ledger"), "--radii",
                 "digits:0,0.25,0.5", "cifar10:0.25,0.5,0.75,1.0"]) == 0, capsys.readouterr().err
    document = json.loads((tmp_path / "ledger" / "ledger.json").read_text())
    jsonschema.validate(document, SCHEMA)
    entries = document["entries"]
    ours = [e for e in entries if e["provenance"] == "reproduced here"]
    theirs = [e for e in entries if e["provenance"] != "reproduced here"]
    assert len(ours) == 4 and len(theirs) == 4
    assert {e["provenance"] for e in theirs} == {"imported from Cohen et al. (2019), released logs"}
    assert all(e["forward_passes_per_image"]["unet"] is None for e in theirs)
    assert all(e["forward_passes_per_image"]["how"].startswith("measured") for e in ours)
    for e in theirs:
        log = tmp_path / "logs" / f"noise_{e['sigma']:.2f}" / "test" / f"sigma_{e['sigma']:.2f}"
        df = pd.read_csv(log, sep="\t", dtype=str)
        ok = df["correct"].astype(int).to_numpy() == 1
        radius = df["radius"].astype(float).to_numpy()
        bound = e["sigma"] * __import__("scipy.stats").stats.norm.ppf(0.001 ** (1 / 1000))
        for cell in e["certified_accuracy"]:
            if cell["radius"] > bound:  # beyond what N = 1000 draws certify: no number, a reason
                assert cell["value"] is None and cell["ci95"] is None and cell["reason"].startswith("not certifiable")
            else:
                assert cell["count"] == int(np.sum(ok & (radius >= cell["radius"])))
                assert cell["value"] == pytest.approx(100 * cell["count"] / len(df))
        assert e["inputs_sha256"] == [__import__("hashlib").sha256(log.read_bytes()).hexdigest()]
    pairs = pd.read_csv(tmp_path / "ledger" / "ledger_pairs.csv")
    kinds = set(pairs["kind"])
    assert kinds == {"paired (same images, shared noise draws)", "unpaired (independent proportions)"}
    assert pairs.loc[pairs["kind"].str.startswith("unpaired"), "dataset"].eq("cifar10").all()
    table = pd.read_csv(tmp_path / "ledger" / "ledger.csv")
    assert len(table) == 8 and "not certifiable" in set(table["r=1"].dropna())


def test_the_schema_refuses_a_zero_where_nothing_is_certifiable():
    entry = {"radius": 2.0, "value": 0.0, "ci95": [0.0, 11.6], "count": 0, "reason": "not certifiable: ..."}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"format": "densepure-ledger/1", "run": "x", "package_version": "0", "pairs": [],
                             "entries": [{"certified_accuracy": [entry]}]}, SCHEMA)


@pytest.mark.slow
def test_ledger_target_on_the_default_with_imported_logs(tmp_path):
    """`snakemake ledger` on the embedded default (its stored votes and shard results) plus imported logs."""
    clone = tmp_path / "repo"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        source = REPO / name.decode()
        if source.is_file():
            (clone / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            (clone / name.decode()).write_bytes(source.read_bytes())
    import shutil

    shutil.copytree(EXPECTED / "votes", clone / "work/default/votes")
    shutil.copytree(EXPECTED / "shards", clone / "work/default/shards")
    imported = imported_logs(tmp_path)
    extra = tmp_path / "ledger.yaml"
    extra.write_text(json.dumps({"ledger": {"imports": [str(imported)], "radii": {"digits": [0.0, 0.25]}}}))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    run = subprocess.run(["snakemake", "--cores", "2", "ledger", "--configfile", "config/config.yaml", str(extra),
                          "--allowed-rules", "aggregate", "ledger"], cwd=clone, capture_output=True, text=True,
                         env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    document = json.loads((clone / "results/default/ledger/ledger.json").read_text())
    jsonschema.validate(document, SCHEMA)
    ours = [e for e in document["entries"] if e["provenance"] == "reproduced here"]
    results = list((clone / "results/default/certify").rglob("*.tsv"))
    assert len(ours) == len(results) == 11 and len(document["entries"]) == 11 + 4
    assert (clone / "results/default/ledger/ledger.html").is_file()
