"""The results export: one JSON per run, per setting, for a leaderboard."""

import argparse
import json

import numpy as np
import pytest
from report_helpers import abstain, ok, write_tsv

from densepure import report
from densepure.cli import report as report_cli
from densepure.job.results import Setting
from densepure.job.votes import VotesStore
from densepure.report.export import check_export, export_run


def _store(path, device, K=40, b=10, method="densepure"):
    setting = Setting(dataset="cifar10", diffusion="improved-cifar10", classifier="vit-b16-cifar10", sigma=0.25, b=b,
                      K=K, N0=100, N=100000, method=method, checkpoints={"diffusion": "d" * 64, "classifier": "c" * 64})
    store = VotesStore(path, setting.as_dict(), num_classes=10, rows=4)
    store.write(0, np.zeros((4, K), dtype=np.int64), 3, extra={"seconds": 1.0, "device": device})
    return path


def test_export_by_hand(tmp_path):
    tsv = write_tsv(tmp_path / "dp.tsv", [ok(0, "0.5"), ok(20, "0.2"), abstain(40), ok(60, "1.0")])
    base = write_tsv(tmp_path / "os.tsv", [ok(i, "0.3") for i in (0, 20, 40, 60)], method="onestep", b=1, K=1)
    results = report.load_results([tsv, base])
    out = export_run(results, "demo", radii=[0.25, 0.5], votes_dirs=[_store(tmp_path / "votes", "cuda:0")])
    assert out["format"] == "densepure-export/1" and out["run"] == "demo" and out["radii"] == [0.25, 0.5]
    dp = next(s for s in out["settings"] if s["method_key"] == "densepure")
    assert (dp["sigma"], dp["b"], dp["K"], dp["N0"], dp["N"], dp["alpha"]) == (0.25, 10, 40, 100, 100000, 0.001)
    assert dp["image_ids"] == [0, 20, 40, 60] and dp["n_images"] == 4 and dp["method_label"] == "Ours"
    assert dp["clean_accuracy"]["value"] == 75.0
    lo, hi = report.clopper_pearson(3, 4)
    assert dp["clean_accuracy"]["ci95"] == pytest.approx([100 * float(lo), 100 * float(hi)])
    assert [c["value"] for c in dp["certified_accuracy"]] == [50.0, 50.0] and dp["max_certifiable_radius"] == 0.953
    check_export(out)
    assert dp["checkpoints_sha256"] == {"diffusion": "d" * 64, "classifier": "c" * 64}
    cost = dp["cost_per_image"]
    # 100 + 100000 draws x (1 + 40 x 9) UNet calls, x 40 classifier calls; 1 s per image measured on cuda:0
    assert cost["unet_calls"] == 100_100 * 361 and cost["classifier_calls"] == 100_100 * 40
    assert cost["seconds"] == 1.0 and cost["gpu_seconds"] == 1.0 and cost["device"] == "cuda:0"
    assert "estimated" in cost["calls"] and "measured" in cost["seconds_how"]
    one_shot = next(s for s in out["settings"] if s["method_key"] == "onestep")
    assert one_shot["cost_per_image"]["unet_calls"] == 100_100 and one_shot["checkpoints_sha256"].startswith(
        "not recorded")
    assert one_shot["cost_per_image"]["gpu_seconds"] is None


def test_export_counts_early_stopped_draws_and_cli(tmp_path):
    votes = [(95, 1000, "complete"), ("", 0, "hopeless"), (10, 400, "abstain")]
    rows = [ok(0, "0.5"), (1, 3, "", "", 0), abstain(2)]
    tsv = write_tsv(tmp_path / "dp.tsv", rows, N=1000, votes=votes)
    out = export_run(report.load_results([tsv]), "x", radii=[0.0])
    cost = out["settings"][0]["cost_per_image"]
    assert cost["unet_calls"] == pytest.approx(np.mean([1100, 100, 500]) * 361)
    assert cost["device"].startswith("not recorded") and cost["gpu_seconds"] is None
    parser = argparse.ArgumentParser(prog="densepure")
    report_cli.register(parser.add_subparsers(dest="command", required=True))
    path = tmp_path / "export" / "x.json"
    args = parser.parse_args(["export", "--results", str(tsv), "--run", "x", "--out", str(path), "--radii", "0.5"])
    assert report_cli.run_report(args) == 0
    data = json.loads(path.read_text())
    assert data["settings"][0]["certified_accuracy"][0]["radius"] == 0.5 and data["package_version"]


def test_radii_beyond_what_N_certifies_are_not_certifiable_never_zero(tmp_path):
    """At sigma 0.25 with N = 1000 draws nothing beyond 0.616 can be certified: the export says so instead of 0.0
    with an interval, and the committed schema refuses a zero there."""
    import jsonschema

    tsv = write_tsv(tmp_path / "dp.tsv", [ok(0, "0.5"), ok(20, "0.2")], N=1000)
    out = export_run(report.load_results([tsv]), "x", radii=[0.5, 1.0])
    cells = out["settings"][0]["certified_accuracy"]
    assert cells[0]["value"] == 50.0 and cells[0]["reason"] is None
    assert cells[1]["value"] is None and cells[1]["ci95"] is None and cells[1]["reason"].startswith("not certifiable")
    check_export(out)
    cells[1].update({"value": 0.0, "ci95": [0.0, 84.2], "count": 0})  # a zero with an interval, and a reason
    with pytest.raises(jsonschema.ValidationError):
        check_export(out)
