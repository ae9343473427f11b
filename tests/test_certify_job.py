"""The certification job with real (tiny, random-weight) networks through the command line: the savings change no
certified output, the one-shot baseline from DensePure's first step equals a separate one-shot job, a SIGKILL in
the middle of an image resumes from its checkpoint, and two jobs on one store split the images."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from densepure.cli.main import main
from densepure.core.schedule import cosine_schedule
from densepure.job.votes import VotesStore
from densepure.models.diffusion import save_bundle
from densepure.models.small_models import DigitsCNN, digits_unet_config
from densepure.models.unet import UNetModel

CERTIFIED = ("idx", "label", "predict", "radius", "correct")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_bundle(root / "unet.pt", UNetModel(digits_unet_config()), cosine_schedule(1000))
    torch.manual_seed(2)
    torch.save(DigitsCNN().state_dict(), root / "cnn.pt")
    return {"unet": root / "unet.pt", "cnn": root / "cnn.pt"}


def args(models, out: Path, *extra, ids: str | None = None, **overrides) -> list[str]:
    options = {"--dataset": "digits", "--ids": "0,7,19,33", "--diffusion": "bundle", "--diffusion-ckpt":
               models["unet"], "--classifier": "digits-cnn", "--classifier-ckpt": models["cnn"], "--sigma": 0.5,
               "--b": 3, "--K": 5, "--N0": 10, "--N": 60, "--alpha": 0.01, "--batch": 50, "--device": "cpu",
               "--threads": 1, "--votes-dir": out / "votes", "--out": out / "result.tsv"}
    options.update(overrides)
    if ids is not None:
        options["--ids"] = ids
    return ["certify", "--quiet", *(str(v) for kv in options.items() for v in kv), *map(str, extra)]


def read_tsv(path: Path) -> list[dict[str, str]]:
    header, *lines = path.read_text().splitlines()
    return [dict(zip(header.split("\t"), line.split("\t"))) for line in lines]


def certified(rows) -> list[tuple]:
    """The fields tables use: correct, and the radius of a correct row (an incorrect one counts at no radius)."""
    return [(r["idx"], r["label"], r["correct"], r["radius"] if r["correct"] == "1" else "") for r in rows]


def test_savings_change_no_certified_output(models, tmp_path):
    assert main(args(models, tmp_path / "full", "--no-lazy-votes", "--no-stop-abstain", "--Ks", 1, 3, 5)) == 0
    assert main(args(models, tmp_path / "lazy", "--skip-hopeless", "--Ks", 1, 3, 5)) == 0
    full, lazy = VotesStore.open(tmp_path / "full" / "votes"), VotesStore.open(tmp_path / "lazy" / "votes")
    computed = sum((lazy.read(i).labels >= 0).sum() for i in (0, 7, 19, 33))
    assert computed < sum(full.read(i).labels.size for i in (0, 7, 19, 33))
    for K in (1, 3, 5):
        for name in ("full", "lazy"):
            assert main(["aggregate", "--votes-dir", str(tmp_path / name / "votes"), "--K", str(K), "--alpha", "0.01",
                         "--out", str(tmp_path / name / "K{K}.tsv")]) == 0
        a, b = read_tsv(tmp_path / "full" / f"K{K}.tsv"), read_tsv(tmp_path / "lazy" / f"K{K}.tsv")
        assert certified(a) == certified(b)
        for x, y in zip(a, b):
            if y["stop"] != "hopeless":
                assert (x["predict"], x["radius"]) == (y["predict"], y["radius"])
    assert main(["aggregate", "--votes-dir", str(tmp_path / "lazy" / "votes"), "--K", "4", "--alpha", "0.01",
                 "--out", str(tmp_path / "K{K}.tsv")]) == 2


def test_aggregating_an_unserved_K_names_the_served_ones(models, tmp_path, capsys):
    assert main(args(models, tmp_path, "--Ks", 1, 5, ids="0")) == 0
    capsys.readouterr()
    assert main(["aggregate", "--votes-dir", str(tmp_path / "votes"), "--K", "3", "--out",
                 str(tmp_path / "K{K}.tsv")]) == 2
    err = capsys.readouterr().err
    assert "0.npz" in err and "serve K in [1, 5], not K=3" in err and len(err.strip().splitlines()) == 1


def test_one_shot_from_densepure_equals_a_separate_one_shot_job(models, tmp_path):
    """The one-shot x0 from DensePure's first network call, classified once per draw, gives the labels a separate
    `--method onestep` job computes (fp32, CPU), in a store with the same setting."""
    assert main(args(models, tmp_path / "dp", "--one-shot-votes-dir", tmp_path / "dp" / "os",
                     "--one-shot-out", tmp_path / "dp" / "os.tsv")) == 0
    assert main(args(models, tmp_path / "sep", **{"--method": "onestep", "--b": 1, "--K": 1})) == 0
    provided, separate = VotesStore.open(tmp_path / "dp" / "os"), VotesStore.open(tmp_path / "sep" / "votes")
    assert provided.setting == separate.setting
    labels = []
    for i in (0, 7, 19, 33):
        a, b = provided.read(i), separate.read(i)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.stop == b.stop
        labels.append(a.labels[a.labels >= 0])
    assert len(np.unique(np.concatenate(labels))) > 1  # not a constant classifier
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(read_tsv(tmp_path / "dp" / "os.tsv")) == strip(read_tsv(tmp_path / "sep" / "result.tsv"))
    # both stores of the DensePure job record its time, marked shared so a cost over both counts it once
    densepure = VotesStore.open(tmp_path / "dp" / "votes")
    for i in (0, 7):
        assert provided.read(i).extra["shared"] and densepure.read(i).extra["shared"]
        assert provided.read(i).extra["seconds"] == densepure.read(i).extra["seconds"] > 0
        assert "shared" not in separate.read(i).extra


def run_cli(arguments: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "densepure", *arguments], capture_output=True, text=True,
                          **kwargs)


@pytest.mark.slow  # processes killed or run side by side: end to end, in `make test`
def test_sigkill_in_the_middle_of_an_image_resumes_from_its_checkpoint(models, tmp_path):
    """One long image, checkpointed every 0.2 s: killed once its checkpoint holds votes, the rerun starts from those
    votes and ends with exactly the votes and TSV of an uninterrupted run."""
    heavy = {"--ids": "5", "--N": 1500, "--K": 3, "--b": 2, "--N0": 10, "--checkpoint-seconds": 0.2}
    assert run_cli(args(models, tmp_path / "straight", "--no-stop-abstain", **heavy)).returncode == 0
    killed = args(models, tmp_path / "killed", "--no-stop-abstain", **heavy)
    proc = subprocess.Popen([sys.executable, "-m", "densepure", *killed])
    partial = tmp_path / "killed" / "votes" / "5.partial.npz"
    deadline = time.monotonic() + 300
    while not partial.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert partial.exists() and not (tmp_path / "killed" / "votes" / "5.npz").exists(), "killed too late"
    with np.load(partial) as data:
        saved = int((data["labels"] != np.iinfo(data["labels"].dtype).max).sum())
    assert saved > 0
    assert run_cli(killed).returncode == 0
    assert not partial.exists()
    a = np.load(tmp_path / "straight" / "votes" / "5.npz")["labels"]
    b = np.load(tmp_path / "killed" / "votes" / "5.npz")["labels"]
    assert a.tobytes() == b.tobytes()
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(read_tsv(tmp_path / "straight" / "result.tsv")) == strip(read_tsv(tmp_path / "killed" / "result.tsv"))


@pytest.mark.slow  # processes killed or run side by side: end to end, in `make test`
def test_two_jobs_on_one_store_split_the_images(models, tmp_path):
    """A resubmitted job running beside the first: each image is computed by one of them, both TSVs list every
    image, and the votes equal a single run's."""
    ids = "1,2,3,4,5,6"
    assert run_cli(args(models, tmp_path / "single", ids=ids)).returncode == 0
    store = tmp_path / "shared"
    loud = lambda j: [a for a in args(models, store, "--log-interval", 0, ids=ids,  # noqa: E731
                                      **{"--out": store / f"job{j}.tsv"}) if a != "--quiet"]
    jobs = [subprocess.Popen([sys.executable, "-m", "densepure", *loud(j)],
                             stderr=subprocess.PIPE, text=True) for j in (0, 1)]
    logs = [job.communicate()[1] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], logs
    done = [set(re.findall(r"\(image (\d+):", log)) for log in logs]  # the log's line of each image it computed
    assert done[0].isdisjoint(done[1]) and done[0] | done[1] == set(ids.split(",")), logs
    for j in (0, 1):
        assert [r["idx"] for r in read_tsv(store / f"job{j}.tsv")] == ids.split(",")
    for i in map(int, ids.split(",")):
        a = np.load(tmp_path / "single" / "votes" / f"{i}.npz")["labels"]
        b = np.load(store / "votes" / f"{i}.npz")["labels"]
        assert a.tobytes() == b.tobytes()
    assert not list((store / "votes").glob(".*"))  # no lock or temp file left


def test_killed_writes_leave_no_orphans_and_files_follow_the_umask(models, tmp_path):
    votes = tmp_path / "votes"
    votes.mkdir()
    (votes / ".3.npz.abc123.tmp").write_bytes(b"half a file")  # what a write killed mid-way leaves
    old = os.umask(0o002)
    try:
        assert main(args(models, tmp_path, ids="3")) == 0
    finally:
        os.umask(old)
    assert not (votes / ".3.npz.abc123.tmp").exists()
    for path in (votes / "3.npz", votes / "setting.json", tmp_path / "result.tsv"):
        assert path.stat().st_mode & 0o777 == 0o664, path


def test_a_foreign_file_in_the_store_is_an_error_not_overwritten(models, tmp_path, capsys):
    assert main(args(models, tmp_path / "a", ids="3")) == 0
    assert main(args(models, tmp_path / "b", ids="3", **{"--sigma": 0.25})) == 0
    foreign = tmp_path / "b" / "votes" / "3.npz"
    os.replace(tmp_path / "a" / "votes" / "3.npz", foreign)
    before = foreign.read_bytes()
    capsys.readouterr()
    assert main(args(models, tmp_path / "b", ids="3", **{"--sigma": 0.25})) == 2
    err = capsys.readouterr().err
    assert "3.npz" in err and "sigma" in err and len(err.strip().splitlines()) == 1
    assert foreign.read_bytes() == before


def test_unwritable_store_is_found_before_any_model_loads(models, tmp_path, capsys):
    """A folder that cannot be written (sysfs refuses even root) is named before anything is loaded or computed."""
    assert main(args(models, tmp_path, ids="3", **{"--votes-dir": "/sys/densepure-votes",
                                                     "--diffusion-ckpt": tmp_path / "missing.pt"})) == 2
    err = capsys.readouterr().err
    assert "/sys/densepure-votes" in err and "missing.pt" not in err and len(err.strip().splitlines()) == 1


def test_a_full_disk_is_one_line(tmp_path, monkeypatch):
    import errno

    from densepure.files import atomic

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(atomic.WriteError, match="No space left on device") as err:
        atomic.probe_writable(tmp_path)
    assert "\n" not in str(err.value) and not list(tmp_path.iterdir())  # nothing left behind


def test_repeated_ids_are_certified_once(models, tmp_path, capsys):
    assert main(args(models, tmp_path, ids="3,3,4")) == 0
    assert [r["idx"] for r in read_tsv(tmp_path / "result.tsv")] == ["3", "4"]
    assert "repeated" in capsys.readouterr().err


def test_a_table_of_images_from_different_versions_says_so(models, tmp_path, capsys):
    """Provenance: every stored image records the package version (and commit) that computed it; a table built
    from images of different versions names them."""
    assert main(args(models, tmp_path, ids="0,7")) == 0
    rows = read_tsv(tmp_path / "result.tsv")
    assert all(r["version"] for r in rows)
    record = VotesStore.open(tmp_path / "votes").read(0)
    assert record.provenance["version"] and rows[0]["version"].startswith(record.provenance["version"])
    lines = (tmp_path / "result.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    old = lines[2].split("\t")
    old[header.index("version")] = "0.0.9"  # an image computed before an upgrade
    (tmp_path / "mixed.tsv").write_text("\n".join([lines[0], lines[1], "\t".join(old)]) + "\n")
    capsys.readouterr()
    assert main(["table", "--artifact", "mixed", "--results", str(tmp_path / "mixed.tsv"), "--outdir",
                 str(tmp_path / "tables"), "--radii", "0", "0.5"]) == 0
    assert "different densepure versions" in capsys.readouterr().err
    assert "0.0.9 (1 image rows)" in (tmp_path / "tables" / "mixed.md").read_text()
