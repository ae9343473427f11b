"""`densepure estimate`: the GPU-hours cost model, checked against costs worked out by hand."""

from __future__ import annotations

import argparse
import csv
import io
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import yaml

from densepure.cli import estimate as estimate_cli
from densepure.plan import estimate as est
from densepure.plan import rates as plan_rates
from densepure.plan import shares
from densepure.plan import validation

REPO = Path(__file__).resolve().parents[1]


def run(argv: list[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="densepure")
    estimate_cli.register(parser.add_subparsers(dest="command", required=True))
    out = io.StringIO()
    with redirect_stdout(out):
        code = estimate_cli.run_estimate(parser.parse_args(["estimate", *argv]))
    return code, out.getvalue()


def tiny_config(tmp_path: Path, **artifacts) -> Path:
    """Digits, N0 + N = 100 draws, 40 images, 15 images per job."""
    config = {
        "run": "tiny", "shard_size": 15, "device": "cpu",
        "datasets": {"digits": {"N0": 10, "N": 90, "diffusion": "digits-unet", "image_sets": {"forty": "0:40"}}},
        "diffusion_models": {"digits-unet": {"arch": "bundle", "train": {"seed": 0}}},
        "classifiers": {"digits-cnn": {"train": {"seed": 0}}},
        "artifacts": artifacts or {"tableA": {"panels": [{
            "dataset": "digits", "classifiers": ["digits-cnn"], "sigmas": [0.5], "bs": [4], "Ks": [1, 3],
            "methods": ["densepure", "onestep"], "images": "forty", "radii": [0.0]}]}},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def rates(tmp_path) -> Path:
    path = tmp_path / "rates.yaml"
    path.write_text(yaml.safe_dump({"diffusion": {"bundle": {"fp32": 100}}, "classifiers": {"digits-cnn": 1000}}))
    return path


def test_calls_per_draw():
    assert est.unet_calls_per_draw(b=10, K=40, one_shot=False) == 361  # 1 shared first step + 9 x 40
    assert est.unet_calls_per_draw(b=10, K=40, one_shot=False, shared_first_step=False) == 400
    assert est.unet_calls_per_draw(b=1, K=1, one_shot=True) == 1
    assert est.classifier_calls_per_draw(40, one_shot=False) == 40
    assert est.classifier_calls_per_draw(40, one_shot=True) == 1


def test_hand_computed_tiny_config(tmp_path, rates):
    """DensePure b = 4, K = 3 (the store holds the largest K): per draw 1 + 3 x 3 = 10 UNet calls at 100/s and
    3 classifier calls at 1000/s, i.e. 0.103 s; 100 draws -> 10.3 s per image, 412 s for 40 images, 3 jobs of
    <= 15 images (154.5 s the longest). One-shot: 100 x (1/100 + 1/1000) = 1.1 s per image, 44 s. Total 456 s."""
    config = validation.load_config(tiny_config(tmp_path))
    rows, total = est.estimate(config, plan_rates.load_rates(rates))
    costs = {s.name: s for s in total.stores}
    dense = costs["digits/digits-cnn/densepure-sigma0.5-b4-K3"]
    one = costs["digits/digits-cnn/onestep-sigma0.5-b1-K1"]
    assert (dense.unet_per_draw, dense.classifier_per_draw, dense.draws, dense.jobs) == (10, 3, 100, 3)
    assert dense.seconds_per_image == pytest.approx(10.3)
    assert dense.seconds == pytest.approx(412.0)
    assert dense.longest_job_seconds == pytest.approx(154.5)
    assert one.seconds == pytest.approx(44.0)
    assert total.hours == pytest.approx(456 / 3600)
    assert total.jobs == 6 and total.unet_calls == 40 * 100 * 10 + 40 * 100
    assert total.classifier_calls == 40 * 100 * 3 + 40 * 100
    assert [r.name for r in rows] == ["tableA"] and rows[0].hours == pytest.approx(456 / 3600)


def test_shared_stores_count_once_in_the_total(tmp_path, rates):
    panel = {"dataset": "digits", "classifiers": ["digits-cnn"], "sigmas": [0.5], "bs": [4], "Ks": [3],
             "methods": ["densepure", "onestep"], "images": "forty", "radii": [0.0]}
    baseline = dict(panel, methods=["onestep"], radii="curve")
    config = validation.load_config(tiny_config(tmp_path, tableA={"panels": [panel]}, fig3={"panels": [baseline]}))
    rows, total = est.estimate(config, plan_rates.load_rates(rates))
    hours = {r.name: r.hours for r in rows}
    assert hours["tableA"] == pytest.approx(456 / 3600)
    assert hours["fig3"] == pytest.approx(44 / 3600)  # the one-shot store, which Table A reads too
    assert total.hours == pytest.approx(456 / 3600)
    assert total.hours < sum(hours.values())


def test_one_imagenet_image_at_the_main_setting(tmp_path):
    """docs/reference-behaviour.md#ref-11: one ImageNet image at N0 + N = 10,100, K = 40, b = 10 is about 4 million
    UNet calls, ~13.7 GPU-hours
    at 87.7 img/s. That counts b K = 400 calls per draw (the reference) plus 40 BEiT calls at 127 img/s:
    10,100 x (400 / 87.7 + 40 / 127) s = 13.68 h. densepure shares the first step: 361 calls, 12.43 h."""
    config = {
        "shard_size": 1,
        "datasets": {"imagenet": {"root": "data/imagenet/val", "N0": 100, "N": 10000, "precision": "fp16",
                                  "diffusion": "guided", "image_sets": {"one": "0"}}},
        "diffusion_models": {"guided": {"arch": "guided-imagenet256", "file": "x.pt"}},
        "classifiers": {"beit-large-512": {"file": "y.pth"}},
        "artifacts": {"tableB": {"panels": [{
            "dataset": "imagenet", "classifiers": ["beit-large-512"], "sigmas": [0.5], "bs": [10], "Ks": [40],
            "methods": ["densepure"], "images": "one", "radii": [0.0]}]}},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    config = validation.load_config(tmp_path / "c.yaml")
    _, reference = est.estimate(config, shared_first_step=False)
    assert reference.unet_calls == 10_100 * 400 == 4_040_000
    assert reference.hours == pytest.approx(13.7, abs=0.05)
    _, ours = est.estimate(config)
    assert ours.unet_calls == 10_100 * 361
    assert ours.hours == pytest.approx(10_100 * (361 / 87.7 + 40 / 127) / 3600)
    assert ours.hours == pytest.approx(12.43, abs=0.01)


def test_paper_grid_is_in_a_sane_range():
    config = validation.load_config(REPO / "config" / "paper.yaml")
    rows, total = est.estimate(config)
    hours = {r.target: r.hours for r in rows}
    assert set(hours) == {"table_1", "table_2", "table_A", "table_B", "fig_3", "fig_4_left", "fig_4_right",
                          "fig_A", "fig_B", "fig_C", "fig_D", "fig_E", "fig_F", "fig_G"}
    assert total.jobs == 6500
    # ImageNet main setting: 3 sigmas x 500 images x ~12.4 h dominate; CIFAR-10's 3 x 500 x ~4.1 h come next
    assert 20_000 < total.hours < 40_000
    assert hours["table_1"] == pytest.approx(hours["table_A"] + hours["table_B"])
    assert hours["fig_3"] == pytest.approx(hours["table_1"])
    assert hours["table_B"] > hours["table_A"] > hours["fig_F"] > 0
    assert max(hours.values()) <= total.hours < sum(hours.values())


def test_cli_text_and_csv(tmp_path, rates):
    code, text = run(["--configfile", str(tiny_config(tmp_path)), "--rates", str(rates)])
    assert code == 0
    assert "table_A" in text and "counts each votes store once" in text and "With the savings" in text
    code, out = run(["--configfile", str(tiny_config(tmp_path)), "--rates", str(rates), "--format", "csv",
                     "--no-savings"])
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["artifact"] for r in rows] == ["tableA", "total"]
    assert float(rows[-1]["gpu_hours"]) == pytest.approx(456 / 3600, abs=0.005)
    assert int(rows[-1]["jobs"]) == 6
    code, out = run(["--configfile", str(tiny_config(tmp_path)), "--rates", str(rates), "--format", "csv",
                     "--stores", "--no-savings"])
    stores = {r["store"]: r for r in csv.DictReader(io.StringIO(out))}
    assert float(stores["digits/digits-cnn/densepure-sigma0.5-b4-K3"]["hours_per_image"]) == pytest.approx(
        10.3 / 3600, abs=1e-4)


def test_paper_estimate_warns_when_one_image_outlasts_the_job_time_limit(tmp_path, monkeypatch):
    """The time limit is the workflow profile's (profiles/default/profile.yaml, read from the current directory as
    Snakemake reads it)."""
    code, text = run(["--configfile", str(REPO / "config" / "paper.yaml"), "--no-savings"])
    assert code == 0 and "total" in text and "more than set-resources.certify.runtime" not in text
    profile = yaml.safe_load((REPO / "profiles" / "default" / "profile.yaml").read_text())
    profile["set-resources"]["certify"]["runtime"] = 720  # 12 h: shorter than one ImageNet image at K = 40, b = 10
    (tmp_path / "profiles" / "default").mkdir(parents=True)
    (tmp_path / "profiles" / "default" / "profile.yaml").write_text(yaml.safe_dump(profile))
    monkeypatch.chdir(tmp_path)
    code, text = run(["--configfile", str(REPO / "config" / "paper.yaml"), "--no-savings"])
    assert code == 0 and "more than set-resources.certify.runtime (720 min)" in text
    assert "checkpoint" in text  # such an image still finishes, over several runs of its job


def test_savings_estimate_from_stated_assumptions_and_from_finished_votes(tmp_path, rates):
    """With the savings the estimate is lower and says where its shares come from: stated assumptions, or the
    votes of finished stores (here a store whose every image computed half its draws and a third of its votes)."""
    from densepure.job.votes import VotesStore
    from densepure.plan import grid

    code, text = run(["--configfile", str(REPO / "config" / "paper.yaml")])
    assert code == 0 and "assumed" in text and "1 - the paper's clean accuracy" in text
    ratio = float(text.split("x as much")[0].split()[-1])
    assert ratio >= 2.0, ratio  # the target for the paper's grid
    config = validation.load_config(tiny_config(tmp_path))
    store = next(s for s in grid.settings(config) if not s.key.one_shot)
    votes = VotesStore(tmp_path / "votes" / store.name, shares.planned_setting(config, store))
    labels = np.zeros((100, 3), dtype=int)
    labels[:, 1:] = -1
    labels[50:] = -1
    votes.write(0, labels, 1, served={"Ks": [1, 3], "alpha": 0.001})
    code, text = run(["--configfile", str(tiny_config(tmp_path)), "--rates", str(rates), "--from-votes",
                      str(tmp_path / "votes"), "--format", "csv", "--stores"])
    stores = {r["store"]: r for r in csv.DictReader(io.StringIO(text))}
    dense = stores[store.name]
    assert float(dense["draws"]) == pytest.approx(50) and float(dense["unet_per_draw"]) == pytest.approx(1 + 3)


def test_the_planned_setting_is_what_the_workflow_certify_job_records(tmp_path):
    """`--from-votes` compares each store's setting.json with :func:`shares.planned_setting`: every key of it is
    what the certify command line the workflow runs for that store (grid.certify_arguments, read by the real
    parser) records, for the stores' own jobs and the one-shot stores DensePure jobs fill."""
    import shlex

    from densepure.cli.certify import setting_from_args
    from densepure.cli.main import build_parser
    from densepure.job.assemble import one_shot_setting
    from densepure.plan import grid

    checked, parser = 0, build_parser()
    for path in (tiny_config(tmp_path), "default", "paper"):
        config = validation.load_config(path)
        for store in grid.settings(config):
            if not grid.job_shards(config, store):
                continue  # a one-shot store DensePure jobs fill: checked with its provider below
            argv = shlex.split(grid.certify_arguments(config, store.name, 0))
            args = parser.parse_args(["certify", *argv, "--votes-dir", "v", "--out", "o.tsv"])
            recorded = setting_from_args(args)
            written = [(store, recorded)]
            provided = grid.provided_one_shot(config, store)
            if provided:
                written.append((provided[0], one_shot_setting(recorded)))
            for planned_store, setting in written:
                planned = shares.planned_setting(config, planned_store)
                assert {key: setting.as_dict()[key] for key in planned} == planned, planned_store.name
                checked += 1
    assert checked >= 20


def from_votes(config: str | Path, votes: Path, caplog) -> tuple[dict[str, str], list[str]]:
    """Where the shares of each store come from with `--from-votes votes`, and the warning lines logged."""
    caplog.clear()
    found = shares.store_shares(validation.load_config(config), votes)
    return {name: s.source for name, s in found.items()}, [r.getMessage() for r in caplog.records]


def test_from_votes_skips_a_store_of_another_setting_in_the_configs_folder(tmp_path, caplog):
    """The embedded default's stored votes measure all 7 stores without a warning; a store of sigma 0.5 copied into
    the folder of the sigma 0.25 store is skipped with one warning naming it and sigma (it takes the mean of the
    measured stores of its kind instead), and a folder of the config holding junk is named too."""
    import shutil

    expected = REPO / "tests" / "expected" / "default" / "votes"
    sources, warnings = from_votes("default", expected, caplog)
    assert warnings == [] and set(sources.values()) == {"measured"} and len(sources) == 7, warnings
    votes = tmp_path / "votes" / "digits" / "digits-cnn"
    votes.parent.mkdir(parents=True)
    shutil.copytree(expected / "digits" / "digits-cnn", votes)
    shutil.rmtree(votes / "densepure-sigma0.25-b5-K10")
    shutil.copytree(votes / "densepure-sigma0.5-b5-K10", votes / "densepure-sigma0.25-b5-K10")
    shutil.rmtree(votes / "densepure-sigma1-b5-K10")
    (votes / "densepure-sigma1-b5-K10").mkdir()
    (votes / "densepure-sigma1-b5-K10" / "notes.txt").write_text("not votes\n")
    sources, warnings = from_votes("default", tmp_path / "votes", caplog)
    assert len(warnings) == 2, warnings
    assert "densepure-sigma0.25-b5-K10: holds votes of another setting" in warnings[0]
    assert "(sigma: 0.5 there, 0.25 in the config)" in warnings[0]
    assert "densepure-sigma1-b5-K10: not a readable votes store" in warnings[1]
    assert sources["digits/digits-cnn/densepure-sigma0.25-b5-K10"] == "alike"
    assert sources["digits/digits-cnn/densepure-sigma1-b5-K10"] == "alike"
    assert sources["digits/digits-cnn/densepure-sigma0.5-b5-K10"] == "measured"


def test_from_votes_without_a_store_of_the_config_warns_and_a_missing_folder_is_an_error(tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.npz").write_bytes(b"junk")
    for folder in ("empty", "junk"):
        sources, warnings = from_votes("default", tmp_path / folder, caplog)
        assert len(warnings) == 1 and f"--from-votes {tmp_path / folder}: no finished votes store" in warnings[0]
        assert set(sources.values()) == {"assumed"}
    for missing, phrase in ((tmp_path / "nowhere", "no such folder"), (tmp_path / "junk" / "a.npz", "not a folder")):
        with pytest.raises(ValueError, match=f"--from-votes {missing}: {phrase}"):
            shares.store_shares(validation.load_config("default"), missing)


def test_rates_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("classifiers: {beit-large-512: -3}\n")
    with pytest.raises(plan_rates.RatesError, match="classifiers.beit-large-512"):
        plan_rates.load_rates(bad)
    bad.write_text("gpus: 2\n")
    with pytest.raises(plan_rates.RatesError, match="diffusion"):
        plan_rates.load_rates(bad)


def test_missing_rate_names_the_model(tmp_path, monkeypatch):
    """A registered classifier the rate table does not know (here a copy of digits-cnn under another name)."""
    from dataclasses import replace

    from densepure.models import classifiers

    my_net = replace(classifiers.CLASSIFIERS["digits-cnn"], name="my-net")
    monkeypatch.setitem(classifiers.CLASSIFIERS, "my-net", my_net)
    path = tiny_config(tmp_path)
    config = yaml.safe_load(path.read_text())
    config["classifiers"]["my-net"] = {"file": "my-net.pt"}
    config["artifacts"]["tableA"]["panels"][0]["classifiers"] = ["my-net"]
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(plan_rates.RatesError, match="'my-net'.*--rates"):
        est.estimate(validation.load_config(path))


def test_invalid_config_is_refused(tmp_path):
    path = tiny_config(tmp_path)
    config = yaml.safe_load(path.read_text())
    config["typo"] = 1
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="typo"):
        validation.load_config(path)
