"""Sequential claims (densepure.plan.claims, densepure.report.claims, `densepure claims`, target `claims`): the config
section's one-line mistakes, the waves' jobs by the grid's rules, the decisions on synthetic outcomes and on the
embedded default's stored votes, and the workflow end to end against the full tables."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from densepure.core.sequential import decide
from densepure.plan import claims as plan
from densepure.plan import grid
from densepure.plan.validation import ConfigError, validate_config
from densepure.report import claims as report
from densepure.report.accuracy import certified_at

from conftest import project_clone, run, tool_env

REPO = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
EXPECTED = REPO / "tests" / "expected"  # the embedded default's stored votes: <EXPECTED>/default/votes
PAIR = "densepure_beats_onestep_s0.25"
CELL = "densepure_s0.5_r0.25"


def with_claim(name: str, **changes) -> dict:
    """The default config with claim ``name`` changed (a value None removes the key)."""
    config = copy.deepcopy(DEFAULT)
    spec = config["claims"]["list"][name]
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return config


def renamed(name: str) -> dict:
    config = copy.deepcopy(DEFAULT)
    config["claims"]["list"][name] = config["claims"]["list"].pop(CELL)
    return config


MISTAKES = [
    ("unknown-artifact", with_claim(PAIR, artifact="tableZ"),
     f"claims.list.{PAIR}.artifact: 'tableZ' is not an artifact"),
    ("radius-not-in-panel", with_claim(PAIR, radius=0.3), f"claims.list.{PAIR}.radius: 0.3 is not a radius of tableA"),
    ("sigma-not-in-panel", with_claim(PAIR, sigma=0.3), f"claims.list.{PAIR}.sigma: 0.3 is not a sigma of tableA"),
    ("within-without-value", with_claim(CELL, value=None), f"claims.list.{CELL}.value: a `within` claim needs"),
    ("value-without-within", with_claim(PAIR, value=0.1), f"claims.list.{PAIR}.value: only a `within` claim"),
    ("bad-name", renamed("../escape"), "claims.list.../escape: the claim name '../escape' is not a plain name"),
    ("hidden-name", renamed(".hidden"), "claims.list..hidden: the claim name '.hidden' is not a plain name"),
    ("method-not-in-panel", with_claim(PAIR, second={"method": "carlini"}),
     f"claims.list.{PAIR}.second.method: 'carlini' is not a method of the panel"),
    ("b-not-in-panel", with_claim(PAIR, first={"method": "densepure", "b": 7}),
     f"claims.list.{PAIR}.first.b: 7 is not one of [5]"),
    ("unknown-classifier", with_claim(PAIR, classifier="resnet"),
     f"claims.list.{PAIR}.classifier: 'resnet' is not a classifier of tableA"),
    ("same-sides", with_claim(PAIR, second={"method": "densepure"}), f"claims.list.{PAIR}.second: is the same"),
    ("unknown-kind", with_claim(PAIR, claim="bigger"), f"claims.list.{PAIR}.claim: \"bigger\" is not allowed"),
    ("zero-gpu-hours", with_claim(PAIR, budget={"gpu_hours": 0}), f"claims.list.{PAIR}.budget.gpu_hours: "),
]


@pytest.mark.parametrize("config, expected", [row[1:] for row in MISTAKES], ids=[row[0] for row in MISTAKES])
def test_a_claims_mistake_is_one_line_naming_the_key(config, expected):
    with pytest.raises(ConfigError) as info:
        validate_config(copy.deepcopy(config))
    message = str(info.value)
    assert message.startswith(expected) and "\n" not in message, message


def test_the_default_claims_load_with_their_share_of_alpha():
    section = plan.load_claims(validate_config(copy.deepcopy(DEFAULT)))
    assert [c.name for c in section.claims] == [PAIR, CELL]
    pair, cell = section.claims
    assert pair.first == plan.Side("densepure", 5, 10) and pair.second == plan.Side("onestep", 1, 1)
    assert cell.second is None and cell.value == 0.30
    assert pair.alpha == cell.alpha == pytest.approx(DEFAULT["claims"]["alpha"] / 2)
    assert (pair.dataset, pair.images, pair.classifier) == ("digits", "test30", "digits-cnn")


def test_every_claim_of_an_image_set_has_the_same_seeded_order():
    config = validate_config(copy.deepcopy(DEFAULT))
    pair, cell = plan.load_claims(config).claims
    ids = grid.image_ids(config, "digits", "test30")
    expected = [int(i) for i in np.random.default_rng(DEFAULT["claims"]["seed"]).permutation(ids)]
    assert plan.order(config, pair) == plan.order(config, cell) == expected != sorted(expected)
    other = copy.deepcopy(config)
    other["claims"]["seed"] = 1
    assert plan.order(other, pair) != expected and sorted(plan.order(other, pair)) == sorted(ids)


def test_the_waves_cover_the_order_within_the_budget():
    config = validate_config(with_claim(CELL, budget={"images": 25}))
    cell = plan.load_claims(config).claims[1]
    order = plan.order(config, cell)
    assert plan.waves(config, cell) == 3
    assert [plan.wave_ids(config, cell, w) for w in range(4)] == [order[:10], order[10:20], order[20:25], []]


def test_a_wave_job_writes_the_one_shot_votes_a_densepure_job_provides():
    """The one-shot store's wave images go to the DensePure job of the same sigma, as in the full grid: its command
    carries the wave's ids and the one-shot votes folder; the one-shot store gets no job of its own."""
    config = validate_config(copy.deepcopy(DEFAULT))
    pair, cell = plan.load_claims(config).claims
    dp = "digits/digits-cnn/densepure-sigma0.25-b5-K10"
    jobs = plan.wave_jobs(config, 0, [pair])
    assert list(jobs) == [dp] and jobs[dp] == sorted(plan.order(config, pair)[:10])
    assert grid.one_shot_providers(config)["digits/digits-cnn/onestep-sigma0.25-b1-K1"]  # the rule applies here
    args = grid.certify_arguments(config, dp, 0, jobs[dp])
    assert f"--ids {','.join(map(str, jobs[dp]))} " in args
    assert "--one-shot-votes-dir work/default/votes/digits/digits-cnn/onestep-sigma0.25-b1-K1" in args
    assert "--one-shot-ids" not in args  # every id of the job is a provided one
    assert list(plan.wave_jobs(config, 1, [cell])) == ["digits/digits-cnn/densepure-sigma0.5-b5-K10"]
    assert grid.certify_arguments(config, dp, 1) == grid.certify_arguments(config, dp, 1, None)  # shards unchanged


def claim(kind="greater", paired=False, delta=0.0, value=None, alpha=0.05, budget=None) -> plan.Claim:
    side = plan.Side("densepure", 5, 10)
    return plan.Claim("c", "tableA", "digits", "digits-cnn", 0.25, 0.25, "test30", side,
                      plan.Side("onestep", 1, 1) if paired else None, kind, delta, value, budget, alpha)


def test_outcomes_use_the_projects_certified_at():
    """A cell's outcome is certified_at (correct, not abstaining, written radius >= r); a paired one (d + 1) / 2."""
    first = pd.DataFrame({"idx": [1, 2, 3, 4], "predict": [3, 3, -1, 2], "radius": [0.25, 0.2, 0.5, np.nan],
                          "correct": [1, 1, 0, 0]})
    second = pd.DataFrame({"idx": [1, 2, 3, 4], "predict": [3, 3, 3, 3], "radius": [0.1, 0.3, 0.3, 0.3],
                           "correct": [1, 1, 1, 1]})
    assert list(report.outcomes(first, None, 0.25)) == list(certified_at(first, [0.25])[:, 0]) == [1, 0, 0, 0]
    assert list(report.outcomes(first, second, 0.25)) == [1.0, 0.0, 0.0, 0.0]
    assert list(report.outcomes(second, first, 0.25)) == [0.0, 1.0, 1.0, 1.0]
    with pytest.raises(ValueError):
        report.outcomes(first, second.iloc[::-1], 0.25)


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_decisions_agree_with_the_full_value(paired, seed):
    """Synthetic populations of N images: the sequence at the stop holds the full value, a decided claim says what
    the full value says, and all N images give the value itself."""
    rng = np.random.default_rng(seed)
    N = 200
    if paired:
        d = rng.choice([-1, 0, 1], size=N, p=[0.05, 0.6, 0.35])
        x, full = (d + 1) / 2, d.mean()
    else:
        x = (rng.random(N) < 0.8).astype(float)
        full = x.mean()
    for kind, delta, value in (("greater", 0.1, None), ("at_least", full - 0.3, None), ("within", 0.2, full),
                               ("greater", full + 0.2, None)):
        c = claim(kind, paired, delta, value)
        found = report.status(c, x, N, 20, N)
        assert found.closed and found.low <= full + 1e-9 <= found.high + 2e-9
        assert found.decision == decide(full, full, kind, delta, value or 0.0), (kind, found)
        assert found.decision and found.images < N  # these margins decide early
    whole = report.status(claim("greater", paired, full), x, N, 20, N)  # on the boundary: needs every image
    assert whole.images == N and whole.low == pytest.approx(full) == whole.high and whole.decision == "false"


def test_an_open_claim_stops_undecided_at_its_budget():
    x = np.tile([1.0, 0.0], 50)  # mean 0.5: never decides `greater 0.5` before the end
    c = claim("greater", delta=0.5, budget=40)
    found = report.status(c, x[:40], 100, 10, 40)
    assert found.closed and found.decision == "" and found.images == 40 and found.waves == 4
    assert not report.status(c, x[:30], 100, 10, 40).closed


@pytest.fixture()
def stored_votes(tmp_path) -> dict:
    """The default config over the embedded default's stored votes (all 30 images of every store)."""
    work = tmp_path / "work"
    shutil.copytree(EXPECTED / "default" / "votes", work / "default" / "votes")
    config = validate_config(copy.deepcopy(DEFAULT))
    config["work_dir"] = str(work)
    return config


def full_values(config: dict) -> dict:
    """Each default claim's quantity on the full table: the stored tableA cells (percent -> fraction)."""
    cells = pd.read_csv(EXPECTED / "default" / "tables" / "tableA_cells.csv")

    def accuracy(method, sigma, radius):
        row = cells[(cells.method_key == method) & np.isclose(cells.sigma, sigma) & np.isclose(cells.radius, radius)]
        assert len(row) == 1
        return float(row.certified_accuracy.iloc[0]) / 100

    return {PAIR: accuracy("densepure", 0.25, 0.25) - accuracy("onestep", 0.25, 0.25),
            CELL: accuracy("densepure", 0.5, 0.25)}


def test_a_job_that_wrote_both_sides_counts_once():
    """Measured cost over a paired claim's sides: summed, but an image whose two stores one job wrote (both records
    shared) costs that job's time once."""
    first = pd.DataFrame({"seconds": [10.0, 10.0, 4.0], "shared": [True, True, False]})
    second = pd.DataFrame({"seconds": [10.0, 12.0, 3.0], "shared": [True, True, False]})
    assert report.images_seconds([first, second]) == 10 + 12 + 7
    assert report.images_seconds([first]) == 24
    assert report.images_seconds([first, second.assign(shared=False)]) == 20 + 22 + 7


def test_decisions_on_the_stored_votes_agree_with_the_full_table(stored_votes):
    config = stored_votes
    full = full_values(config)
    found = report.decide_wave(config, 5)
    for c in plan.load_claims(config).claims:
        s = found["claims"][c.name]
        assert s["closed"] and s["low"] - 1e-9 <= full[c.name] <= s["high"] + 1e-9
        if s["decision"]:
            assert s["decision"] == decide(full[c.name], full[c.name], c.kind, c.delta, c.value or 0.0)
        assert s["seconds"] > 0
    first = report.decide_wave(config, 0)["claims"][PAIR]
    assert first["images"] == 10 and not first["closed"] and first["low"] <= full[PAIR] <= first["high"]


def test_a_claim_stops_undecided_when_its_gpu_hours_are_spent(stored_votes):
    """budget.gpu_hours: checked after each wave against the measured seconds of the claim's images; the pair
    claim, open after wave 0, closes there undecided when its images already took more than its budget."""
    config = stored_votes
    config["claims"]["list"][PAIR]["budget"] = {"gpu_hours": 1e-9}
    [pair] = [c for c in plan.load_claims(config).claims if c.name == PAIR]
    assert pair.budget_gpu_hours == 1e-9
    s = report.decide_wave(config, 0)
    assert s["claims"][PAIR]["closed"] and s["claims"][PAIR]["decision"] == "" and PAIR not in s["open"]
    assert s["claims"][PAIR]["images"] == 10 and s["claims"][PAIR]["seconds"] > 1e-9 * 3600
    config["claims"]["list"][PAIR]["budget"] = {"gpu_hours": 100.0}
    assert PAIR in report.decide_wave(config, 0)["open"]  # far from spent: goes on


def test_the_claims_command_writes_the_report(stored_votes, tmp_path):
    """`densepure claims decide` then `report`, as the workflow calls them."""
    spec = tmp_path / "config.yaml"
    spec.write_text(yaml.safe_dump(stored_votes))
    densepure = [sys.executable, "-m", "densepure", "claims"]
    out = run([*densepure, "decide", "--configfile", str(spec), "--wave", "0", "--out", str(tmp_path / "w0.json")],
              tmp_path)
    assert re.search(rf"^{re.escape(PAIR)}\topen\t10/30 images$", out.stdout, re.M), out.stdout
    wave = json.loads((tmp_path / "w0.json").read_text())
    assert wave["open"] == [PAIR]  # the cell is decided from the first wave
    assert wave["claims"][CELL]["decision"] == "true" and wave["claims"][CELL]["images"] == 10
    run([*densepure, "decide", "--configfile", str(spec), "--wave", "2", "--out", str(tmp_path / "w2.json")],
        tmp_path)
    run([*densepure, "report", "--configfile", str(spec), "--wave-file", str(tmp_path / "w2.json"), "--out-dir",
         str(tmp_path / "claims")], tmp_path)
    table = pd.read_csv(tmp_path / "claims" / "claims.tsv", sep="\t")
    assert list(table.columns) == report.COLUMNS and list(table.claim) == [PAIR, CELL]
    full = full_values(stored_votes)
    assert all(table.low <= [full[PAIR], full[CELL]] + np.float64(1e-9))
    assert (table.gpu_hours > 0).all() and (table.full_gpu_hours >= table.gpu_hours - 1e-12).all()
    assert report.GUARANTEE in (tmp_path / "claims" / "claims.md").read_text()
    order = (tmp_path / "claims" / "order-digits-test30.txt").read_text().split()
    assert list(map(int, order)) == plan.order(stored_votes, plan.load_claims(stored_votes).claims[0])


def test_a_bad_claims_section_stops_the_command_in_one_line(tmp_path):
    config = with_claim(PAIR, radius=0.3)
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "densepure", "claims", "decide", "--configfile", str(spec),
                             "--wave", "0", "--out", str(tmp_path / "w.json")], capture_output=True, text=True,
                            env=tool_env())
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"claims.list.{PAIR}.radius: 0.3 is not a radius" in result.stderr
    assert not (tmp_path / "w.json").exists()


def test_complete_shards_are_marked_for_the_full_run(stored_votes):
    """A full-grid job whose images are all stored gets its TSV (so `all` lists no job for it); one missing image
    keeps its job."""
    config = stored_votes
    votes = Path(config["work_dir"]) / "default" / "votes"
    store = "digits/digits-cnn/densepure-sigma0.5-b5-K10"
    shard0, shard1 = grid.job_shards(config, grid.setting_by_name(config, store))
    (votes / store / f"{shard1[0]}.npz").unlink()
    written = report.mark_complete_shards(config)
    shards = Path(config["work_dir"]) / "default" / "shards"
    assert shards / store / "shard0.tsv" in written and not (shards / store / "shard1.tsv").exists()
    rows = pd.read_csv(shards / store / "shard0.tsv", sep="\t")
    assert list(rows.idx) == shard0
    assert report.mark_complete_shards(config) == []  # written once


# --- the workflow ---------------------------------------------------------------------------------------------


def certify_jobs(clone: Path, target: str) -> list[tuple[str, str]]:
    """(rule, store) of the certification jobs a dry run of ``target`` lists."""
    result = run([sys.executable, "-m", "snakemake", "-n", "--cores", "2", target], clone)
    jobs, rule = [], None
    for line in result.stdout.splitlines():
        header = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", line)
        if header:
            rule = header.group(1)
        match = re.match(r"\s+wildcards: (.*)", line)
        if match and rule in ("certify", "claims_certify"):
            wildcards = dict(part.split("=", 1) for part in match.group(1).split(", "))
            jobs.append((rule, wildcards["store"], wildcards.get("shard")))
    return jobs


@pytest.mark.slow
def test_the_claims_target_agrees_with_the_full_tables(tmp_path):
    """`snakemake --cores 2 claims` on a fresh clone: waves of jobs until every claim is closed; each claim's final
    sequence holds the full table's value over the whole image set (the embedded default's stored tableA, which
    tests/test_default.py checks a full run reproduces exactly) and a decided claim says what that value says; a
    later `snakemake all -n` lists no certification job whose images the claims all certified."""
    clone = project_clone(tmp_path / "repo")
    assert {rule for rule, _, _ in certify_jobs(clone, "claims")} == {"claims_certify"}  # wave 0 only
    run([sys.executable, "-m", "snakemake", "--cores", "2", "claims"], clone)
    config = validate_config(copy.deepcopy(DEFAULT))
    full = full_values(config)
    table = pd.read_csv(clone / "results/default/claims/claims.tsv", sep="\t", dtype={"decision": str}).set_index(
        "claim")
    for c in plan.load_claims(config).claims:
        row = table.loc[c.name]
        assert row.low - 1e-9 <= full[c.name] <= row.high + 1e-9
        if row.decision != "undecided":
            assert row.decision == decide(full[c.name], full[c.name], c.kind, c.delta, c.value or 0.0)
    assert len(list((clone / "work/default/claims").glob("wave*.json"))) == table.waves.max()
    assert table.images.min() < 30  # a claim stopped before the whole set
    certified: dict[str, set[int]] = {}
    for c in plan.load_claims(config).claims:
        used = plan.order(config, c)[:int(table.loc[c.name, "images"])]
        for key, _K in plan.keys(config, c):
            for store in grid.settings(config):
                if store.key == key:
                    certified.setdefault(store.name, set()).update(set(used) & set(store.ids))
    listed = certify_jobs(clone, "all")
    assert listed and {rule for rule, _, _ in listed} == {"certify"}
    for _, store, shard in listed:
        setting = grid.setting_by_name(config, store)
        ids = grid.job_shards(config, setting)[int(shard)]
        needed = set(ids) - certified.get(store, set())
        provided = grid.provided_one_shot(config, setting)
        if provided:
            needed |= (set(ids) & set(provided[1])) - certified.get(provided[0].name, set())
        assert needed, f"{store} shard {shard}: every image was certified by the claims"
    claimed = {s for s, ids in certified.items() if ids == set(grid.setting_by_name(config, s).ids)}
    assert claimed and not claimed & {store for _, store, _ in listed}


def test_the_paper_config_drops_the_defaults_claims():
    """Snakemake merges --configfile config/paper.yaml over config/config.yaml key by key: the paper's claims only."""
    import yaml
    from snakemake.utils import update_config

    from densepure.plan.claims import load_claims

    merged = yaml.safe_load(open("config/config.yaml"))
    update_config(merged, yaml.safe_load(open("config/paper.yaml")))
    names = [c.name for c in load_claims(merged).claims]
    assert names and all(n.startswith(("imagenet_", "cifar10_")) for n in names), names
    assert len(load_claims(yaml.safe_load(open("config/config.yaml"))).claims) == 2
