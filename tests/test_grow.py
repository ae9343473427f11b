"""Growing a votes store from the command line: running `densepure certify` again with a larger K, more Ks, a larger
alpha, a smaller K on a grown store, or beside a job at another K computes only the missing votes, and ends with the
votes and results of a store computed at the final setting from scratch. Also: what a killed job leaves behind is
removed by the next job, a checkpoint of any K is resumed or dropped (never a dead end), every error names its file,
and the small silent wrongs of `certify` / `aggregate` (repeated ids or Ks, a one-shot job's b and K).

Each test runs the CLI on tiny random-weight networks (the embedded default's architectures, as in
test_certify_job.py) and compares with a from-scratch store: votes equal wherever both computed one, TSV rows equal
but for the ``time`` and ``version`` columns (wall-clock seconds and provenance)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from densepure.cli.main import main
from densepure.core.schedule import cosine_schedule
from densepure.job.purifier import Purifier
from densepure.job.votes import NOT_COMPUTED, VotesStore
from densepure.models.diffusion import save_bundle
from densepure.models.small_models import DigitsCNN, digits_unet_config
from densepure.models.unet import UNetModel

IDS = "0,2,4"  # with these networks: 0 stops by certain abstention at alpha 0.001 and certifies at 0.1
VOLATILE = ("time", "version")  # each run's own seconds and package provenance


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_bundle(root / "unet.pt", UNetModel(digits_unet_config()), cosine_schedule(1000))
    torch.manual_seed(2)
    torch.save(DigitsCNN().state_dict(), root / "cnn.pt")
    return {"unet": root / "unet.pt", "cnn": root / "cnn.pt"}


def args(models, out: Path, *extra, **overrides) -> list[str]:
    options = {"--dataset": "digits", "--ids": IDS, "--diffusion": "bundle", "--diffusion-ckpt": models["unet"],
               "--classifier": "digits-cnn", "--classifier-ckpt": models["cnn"], "--sigma": 0.5, "--b": 2, "--K": 3,
               "--N0": 10, "--N": 60, "--alpha": 0.001, "--batch": 50, "--device": "cpu", "--threads": 1,
               "--votes-dir": out / "votes", "--out": out / "result.tsv"}
    options.update(overrides)
    return ["certify", "--quiet", *(str(v) for kv in options.items() for v in kv), *map(str, extra)]


def certify(models, out: Path, *extra, **overrides) -> None:
    assert main(args(models, out, *extra, **overrides)) == 0


def aggregate(votes: Path, K: int, out: Path, alpha=0.001) -> list[dict]:
    assert main(["aggregate", "--votes-dir", str(votes), "--K", str(K), "--alpha", str(alpha), "--out",
                 str(out / "K{K}.tsv")]) == 0
    return read_tsv(out / f"K{K}.tsv")


def read_tsv(path: Path) -> list[dict[str, str]]:
    header, *lines = path.read_text().splitlines()
    return [{k: v for k, v in zip(header.split("\t"), line.split("\t")) if k not in VOLATILE} for line in lines]


def ids(text: str = IDS) -> list[int]:
    return [int(i) for i in text.split(",")]


def assert_same_votes(grown: Path, scratch: Path, image_ids=None) -> None:
    """Equal votes wherever both stores computed one, and the grown store serves all the scratch one does."""
    a, b = VotesStore.open(grown), VotesStore.open(scratch)
    for i in image_ids or ids():
        x, y = a.read(i), b.read(i)
        width = min(x.labels.shape[1], y.labels.shape[1])
        u, v = x.labels[:, :width], y.labels[:, :width]
        both = (u >= 0) & (v >= 0)
        assert both.any() and (u[both] == v[both]).all(), i
        assert set(y.served["Ks"]) <= set(x.served["Ks"]), (i, x.served, y.served)
        assert (x.served["alpha"] is None) or (y.served["alpha"] is not None
                                                 and x.served["alpha"] >= y.served["alpha"]), (i, x.served, y.served)


def computed(votes: Path) -> dict[int, np.ndarray]:
    store = VotesStore.open(votes)
    return {i: store.read(i).labels.copy() for i in store.stored_ids()}


@pytest.fixture
def vote_log(monkeypatch) -> list[tuple[int, int, int]]:
    """Every (image, draw, vote) the purifier computes in this process."""
    log: list[tuple[int, int, int]] = []
    original = Purifier.votes

    def votes(self, images, draws, votes_):
        log.extend(zip(map(int, images), map(int, draws), map(int, votes_)))
        return original(self, images, draws, votes_)

    monkeypatch.setattr(Purifier, "votes", votes)
    return log


def assert_only_missing_votes(log, before: dict[int, np.ndarray]) -> None:
    """No vote stored before the job was computed again."""
    again = [(i, d, v) for i, d, v in log if i in before and v < before[i].shape[1] and before[i][d, v] >= 0]
    assert not again, again[:5]


def setting_K(votes: Path) -> int:
    return json.loads((votes / "setting.json").read_text())["K"]


# --- growing, each direction ---------------------------------------------------------------------------------


def test_a_larger_K_grows_the_store(models, tmp_path, vote_log, capsys):
    grown, scratch = tmp_path / "grown", tmp_path / "scratch"
    certify(models, grown, **{"--K": 2})
    before = computed(grown / "votes")
    # a job that fails before writing any image (a damaged file among its images) leaves setting.json as it was
    (grown / "votes" / "9.npz").write_bytes(b"garbage")
    capsys.readouterr()
    assert main(args(models, grown, **{"--K": 3, "--ids": IDS + ",9"})) == 2
    err = capsys.readouterr().err.strip()
    assert "9.npz" in err and len(err.splitlines()) == 1
    assert setting_K(grown / "votes") == 2
    (grown / "votes" / "9.npz").unlink()
    vote_log.clear()
    certify(models, grown, **{"--K": 3})
    assert setting_K(grown / "votes") == 3
    assert_only_missing_votes(vote_log, before)
    certify(models, scratch, "--Ks", 2, 3, **{"--K": 3})
    assert_same_votes(grown / "votes", scratch / "votes")
    assert read_tsv(grown / "result.tsv") == read_tsv(scratch / "result.tsv")
    assert [r["K"] for r in read_tsv(grown / "result.tsv")] == ["3"] * 3
    for K in (2, 3):
        assert aggregate(grown / "votes", K, grown) == aggregate(scratch / "votes", K, scratch)


def summary(models, out: Path, capsys, *extra, **overrides) -> str:
    """Run certify with its progress lines; its summary line."""
    capsys.readouterr()
    assert main([a for a in args(models, out, *extra, **overrides) if a != "--quiet"]) == 0
    return [line for line in capsys.readouterr().err.splitlines() if "job summary" in line][0]


def test_more_Ks_grow_the_store(models, tmp_path, vote_log, capsys):
    """The second job asks for K' = 2 besides 4: images whose stored votes settle it already are stored again
    with what they serve (nothing was recorded before), the others get the missing votes."""
    grown, scratch = tmp_path / "grown", tmp_path / "scratch"
    certify(models, grown, "--skip-hopeless", **{"--K": 4})
    before = computed(grown / "votes")
    vote_log.clear()
    grow = ("--skip-hopeless", "--Ks", 2, 4)
    assert "3 images certified, 0 skipped" in summary(models, grown, capsys, *grow, **{"--K": 4})
    assert_only_missing_votes(vote_log, before)
    assert "0 images certified, 3 skipped" in summary(models, grown, capsys, *grow, **{"--K": 4})
    store = VotesStore.open(grown / "votes")
    assert all({2, 4} <= set(store.read(i).served["Ks"]) for i in ids())
    certify(models, scratch, "--skip-hopeless", "--Ks", 2, 4, **{"--K": 4})
    assert_same_votes(grown / "votes", scratch / "votes")
    assert read_tsv(grown / "result.tsv") == read_tsv(scratch / "result.tsv")
    for K in (2, 4):
        assert aggregate(grown / "votes", K, grown) == aggregate(scratch / "votes", K, scratch)


def test_a_larger_alpha_extends_images_stopped_by_abstention(models, tmp_path, vote_log):
    grown, scratch = tmp_path / "grown", tmp_path / "scratch"
    certify(models, grown, **{"--alpha": 0.001})
    before, at_first = computed(grown / "votes"), read_tsv(grown / "result.tsv")
    stops = {i: VotesStore.open(grown / "votes").read(i).stop for i in ids()}
    assert "abstain" in stops.values()  # with these networks image 0: what this test extends
    vote_log.clear()
    certify(models, grown, **{"--alpha": 0.1})
    assert vote_log and {i for i, _, _ in vote_log} <= {i for i in ids() if stops[i] == "abstain"}
    assert_only_missing_votes(vote_log, before)
    certify(models, scratch, **{"--alpha": 0.1})
    assert_same_votes(grown / "votes", scratch / "votes")
    assert read_tsv(grown / "result.tsv") == read_tsv(scratch / "result.tsv")
    assert aggregate(grown / "votes", 3, grown, 0.1) == aggregate(scratch / "votes", 3, scratch, 0.1)
    # back at the smaller alpha: the grown images serve it, nothing is computed and nothing rewritten
    mtimes = {p.name: p.stat().st_mtime_ns for p in (grown / "votes").glob("*.npz")}
    vote_log.clear()
    certify(models, grown, **{"--alpha": 0.001})
    assert not vote_log and mtimes == {p.name: p.stat().st_mtime_ns for p in (grown / "votes").glob("*.npz")}
    certified = lambda rows: [(r["idx"], r["predict"], r["radius"], r["correct"]) for r in rows]  # noqa: E731
    assert certified(read_tsv(grown / "result.tsv")) == certified(at_first)  # the exact results at alpha 0.001


def test_a_smaller_K_on_a_grown_store(models, tmp_path, vote_log):
    """K 2, then 4, then 3: the K 3 job extends the 4-vote images to K' = 3 without dropping what they serve; the
    store keeps K 4."""
    grown, scratch = tmp_path / "grown", tmp_path / "scratch"
    certify(models, grown, **{"--K": 2})
    certify(models, grown, **{"--K": 4})
    before = computed(grown / "votes")
    vote_log.clear()
    certify(models, grown, **{"--K": 3})
    assert_only_missing_votes(vote_log, before)
    assert setting_K(grown / "votes") == 4
    certify(models, scratch, "--Ks", 2, 3, 4, **{"--K": 4})
    assert_same_votes(grown / "votes", scratch / "votes")
    assert read_tsv(grown / "result.tsv") == aggregate(scratch / "votes", 3, scratch)
    for K in (2, 3, 4):
        assert aggregate(grown / "votes", K, grown) == aggregate(scratch / "votes", K, scratch)


def run_cli(arguments: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "densepure", *arguments], stderr=subprocess.PIPE, text=True,
                            **kwargs)


@pytest.mark.slow  # processes killed or run side by side: end to end, in `make test`
def test_two_jobs_at_different_Ks_on_one_store(models, tmp_path):
    """A job at K 3 after one at K 2 and the other way round (in this process), then both at the same time (two
    processes): every job succeeds and each store ends with the votes of a K 3 store serving 2 and 3."""
    scratch = tmp_path / "scratch"
    certify(models, scratch, "--Ks", 2, 3, **{"--K": 3})
    expected = {K: aggregate(scratch / "votes", K, scratch) for K in (2, 3)}
    for order in ((2, 3), (3, 2)):
        store = tmp_path / f"seq{order[0]}{order[1]}"
        for K in order:
            certify(models, store, **{"--K": K, "--out": store / f"K{K}job.tsv"})
        assert_same_votes(store / "votes", scratch / "votes")
        assert read_tsv(store / f"K{order[1]}job.tsv") == expected[order[1]]
        for K in (2, 3):
            assert aggregate(store / "votes", K, store) == expected[K]
    shared = tmp_path / "shared"
    jobs = [run_cli(args(models, shared, **{"--K": K, "--out": shared / f"K{K}job.tsv"})) for K in (2, 3)]
    logs = [job.communicate(timeout=300)[1] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], logs
    assert_same_votes(shared / "votes", scratch / "votes")
    for K in (2, 3):
        assert aggregate(shared / "votes", K, shared) == expected[K]
        rows = read_tsv(shared / f"K{K}job.tsv")  # certified as the job's K wherever the other job got to it
        assert [(r["idx"], r["predict"], r["radius"], r["correct"]) for r in rows] == \
            [(r["idx"], r["predict"], r["radius"], r["correct"]) for r in expected[K]]
    assert setting_K(shared / "votes") == 3
    assert not list((shared / "votes").glob(".*"))  # no lock or temp file left


# --- checkpoints of another K ----------------------------------------------------------------------------------


def kill_before_first_image(models, out: Path, monkeypatch, **overrides) -> None:
    """A job killed just before writing its first image, after checkpointing every image in progress."""
    def killed(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(VotesStore, "write", killed)
        assert main(args(models, out, **{"--checkpoint-seconds": 1e-9, **overrides})) == 130


def test_a_checkpoint_of_a_larger_K_is_resumed(models, tmp_path, monkeypatch, vote_log, capsys):
    grown, scratch = tmp_path / "grown", tmp_path / "scratch"
    certify(models, grown, **{"--K": 3, "--ids": "4"})
    kill_before_first_image(models, grown, monkeypatch, **{"--K": 4, "--ids": "0"})
    partial = grown / "votes" / "0.partial.npz"
    assert partial.exists() and setting_K(grown / "votes") == 3  # no image written: setting.json unchanged
    checkpointed = {0: VotesStore.open(grown / "votes").read_partial(0)[0]}
    assert checkpointed[0].shape[1] == 4 and (checkpointed[0] >= 0).any()
    vote_log.clear()
    capsys.readouterr()
    certify(models, grown, **{"--K": 3, "--ids": "0"})
    assert not partial.exists() and setting_K(grown / "votes") == 4
    assert_only_missing_votes(vote_log, checkpointed)
    certify(models, scratch, "--Ks", 3, 4, **{"--K": 4, "--ids": "0"})
    assert_same_votes(grown / "votes", scratch / "votes", [0])
    assert read_tsv(grown / "result.tsv") == aggregate(scratch / "votes", 3, scratch)


def test_a_checkpoint_beside_a_finished_image_is_resumed_or_removed(models, tmp_path):
    """A checkpoint that aims at more than the finished image serves (a killed job growing it) is resumed by the
    next job on the image; one the image serves already (a job killed after writing it) is removed."""
    out = tmp_path / "store"
    certify(models, out, **{"--ids": "0,4"})
    store = VotesStore(out / "votes", VotesStore.open(out / "votes").setting, num_classes=10, rows=70)
    finished = {i: store.read(i) for i in (0, 4)}
    store.write_partial(0, finished[0].labels, finished[0].label, {"Ks": [2, 3], "alpha": 0.001})
    store.write_partial(4, finished[4].labels, finished[4].label, {"Ks": [3], "alpha": 0.001})
    before = (out / "votes" / "4.npz").read_bytes()
    certify(models, out, **{"--ids": "0,4"})
    assert not list((out / "votes").glob("*.partial.npz"))
    assert (out / "votes" / "4.npz").read_bytes() == before
    assert {2, 3} <= set(store.read(0).served["Ks"])
    scratch = tmp_path / "scratch"
    certify(models, scratch, "--Ks", 2, 3, **{"--ids": "0"})
    assert_same_votes(out / "votes", scratch / "votes", [0])


def crafted(labels: np.ndarray, kind: str):
    """A checkpoint no job writes: (labels, state)."""
    labels = labels.copy()
    state = {"Ks": [3], "alpha": 0.001}
    if kind == "label out of range":
        labels[labels >= 0] = 12
    elif kind == "Ks above K":
        state["Ks"] = [3, 7]
    elif kind == "K of zero":
        state["Ks"] = [0, 3]
    elif kind == "alpha of 5":
        state["alpha"] = 5
    elif kind == "not a prefix":
        labels[:, 0] = NOT_COMPUTED
        labels[:, 1] = 1
    return labels, state


@pytest.mark.parametrize("kind", ["label out of range", "Ks above K", "K of zero", "alpha of 5", "not a prefix"])
def test_a_crafted_checkpoint_is_dropped_not_a_dead_end(models, tmp_path, kind):
    ref = tmp_path / "ref"
    certify(models, ref, **{"--ids": "2"})
    out = tmp_path / "store"
    out.mkdir()
    setting = VotesStore.open(ref / "votes").setting
    record = VotesStore.open(ref / "votes").read(2)
    labels, state = crafted(record.labels, kind)
    VotesStore(out / "votes", setting).write_partial(2, labels, record.label, state)  # no class check: any label
    certify(models, out, **{"--ids": "2"})
    assert not (out / "votes" / "2.partial.npz").exists()
    assert_same_votes(out / "votes", ref / "votes", [2])
    assert read_tsv(out / "result.tsv") == read_tsv(ref / "result.tsv")


def test_every_error_names_the_file(models, tmp_path, capsys):
    out = tmp_path / "store"
    certify(models, out, **{"--ids": "0"})
    store = VotesStore.open(out / "votes")
    record = store.read(0)
    store.write(0, record.labels, record.label, served={"Ks": [9], "alpha": None})  # a store K 3 never serves 9
    capsys.readouterr()
    for argv in (args(models, out, **{"--ids": "0"}),
                 ["aggregate", "--votes-dir", str(out / "votes"), "--K", "3", "--out", str(tmp_path / "K{K}.tsv")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert str(out / "votes" / "0.npz") in err and "served Ks" in err and len(err.splitlines()) == 1


# --- litter of killed jobs ---------------------------------------------------------------------------------------

KILLED_TSV_WRITE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from densepure.files import atomic
    from densepure.job.results import write_tsv

    def killed(fd):
        os.kill(os.getpid(), signal.SIGKILL)

    atomic.os.fsync = killed  # SIGKILL after the rows are written, before the rename
    write_tsv(Path(sys.argv[1]), [[0, 1, 2, 0.5, 1, "0:00:01"]] * 100)
""")


def test_litter_of_killed_jobs_is_removed_when_the_job_next_runs(models, tmp_path):
    """A SIGKILL during the TSV rewrite leaves `.result.tsv.<random>.tmp`; a kill between writing an image and
    removing its checkpoint leaves a stale `<id>.partial.npz`. The next job removes both, and leaves alone the temp
    file of a live writer (locked)."""
    import fcntl

    out = tmp_path / "store"
    certify(models, out, **{"--ids": "4"})
    killed = subprocess.run([sys.executable, "-c", KILLED_TSV_WRITE, str(out / "result.tsv")])
    assert killed.returncode == -signal.SIGKILL
    orphans = list(out.glob(".result.tsv.*.tmp"))
    assert len(orphans) == 1 and orphans[0].stat().st_size > 0
    live = out / ".result.tsv.live1234.tmp"
    live.write_text("a writer in progress\n")
    store = VotesStore.open(out / "votes")
    record = store.read(4)
    store.write_partial(4, record.labels, record.label, {"Ks": [3], "alpha": 0.001})  # what the kill left
    before = (out / "votes" / "4.npz").read_bytes()
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        certify(models, out, **{"--ids": "4"})
    finally:
        os.close(fd)
    assert not orphans[0].exists() and live.exists()
    assert not (out / "votes" / "4.partial.npz").exists() and (out / "votes" / "4.npz").read_bytes() == before
    assert [r["idx"] for r in read_tsv(out / "result.tsv")] == ["4"]
    assert not list((out / "votes").glob(".*"))


# --- the small silent wrongs ---------------------------------------------------------------------------------------


def test_aggregate_certifies_each_image_and_K_once(models, tmp_path, capsys):
    out = tmp_path / "store"
    certify(models, out)
    capsys.readouterr()
    assert main(["aggregate", "--votes-dir", str(out / "votes"), "--K", "3", "3", "--ids", "4,0,4", "--alpha",
                 "0.001", "--out", str(tmp_path / "K{K}.tsv")]) == 0
    err = capsys.readouterr().err
    assert "1 repeated image ids are certified once" in err and "1 repeated K' values are certified once" in err
    assert [r["idx"] for r in read_tsv(tmp_path / "K3.tsv")] == ["4", "0"]
    assert sorted(p.name for p in tmp_path.glob("K*.tsv")) == ["K3.tsv"]


def test_a_one_shot_job_records_b_1_K_1(models, tmp_path, capsys):
    """`--method onestep --b 5 --K 3` gives one vote per draw in one step: it is recorded (and certified) as
    `--b 1 --K 1`, the store the same as a `--b 1 --K 1` job's, with a one-line note naming what was replaced."""
    given, plain = tmp_path / "given", tmp_path / "plain"
    capsys.readouterr()
    certify(models, given, **{"--method": "onestep", "--b": 5, "--K": 3, "--ids": "0,4"})
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "recorded as --b 1 --K 1, not --b 5 --K 3" in err
    certify(models, plain, **{"--method": "onestep", "--b": 1, "--K": 1, "--ids": "0,4"})
    assert capsys.readouterr().err == ""
    assert json.loads((given / "votes" / "setting.json").read_text()) == \
        json.loads((plain / "votes" / "setting.json").read_text())
    assert VotesStore.open(given / "votes").setting["b"] == 1
    assert_same_votes(given / "votes", plain / "votes", [0, 4])
    assert read_tsv(given / "result.tsv") == read_tsv(plain / "result.tsv")
    assert {r["b"] for r in read_tsv(given / "result.tsv")} == {"1"}


def test_certify_help_says_what_a_rerun_does():
    from densepure.cli.certify import EPILOG_CERTIFY

    text = " ".join(EPILOG_CERTIFY.split())
    for claim in ("resumes the images in progress from their last checkpoint", "skips the finished ones",
                  "is removed", "checkpoint of a job at another --K is resumed", "only the missing votes are computed",
                  "recorded as --b 1 --K 1"):
        assert claim in text, claim
