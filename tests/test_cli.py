"""End to end through the command line: certify, aggregate, resume after SIGKILL, and one-line user errors."""

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import beta, norm

from densepure.cli.main import main
from densepure.core.schedule import cosine_schedule
from densepure.job.votes import VotesStore
from densepure.models.diffusion import save_bundle
from densepure.models.small_models import DigitsCNN, digits_unet_config
from densepure.models.unet import UNetModel

SIGMA, N0, N, K, B, ALPHA = 0.5, 5, 40, 3, 2, 0.01
REPO_CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A random-weight digits UNet bundle and digits CNN: the pipeline's mechanics need no trained weights."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_bundle(root / "unet.pt", UNetModel(digits_unet_config()), cosine_schedule(1000))
    torch.save(DigitsCNN().state_dict(), root / "cnn.pt")
    return {"unet": root / "unet.pt", "cnn": root / "cnn.pt"}


def certify_args(models, out: Path, ids="0,1,2", **overrides) -> list[str]:
    options = {"--dataset": "digits", "--ids": ids, "--diffusion": "bundle", "--diffusion-ckpt": models["unet"],
               "--classifier": "digits-cnn", "--classifier-ckpt": models["cnn"], "--sigma": SIGMA, "--b": B,
               "--K": K, "--N0": N0, "--N": N, "--alpha": ALPHA, "--batch": 120, "--device": "cpu",
               "--votes-dir": out / "votes", "--out": out / "result.tsv"}
    options.update(overrides)
    return ["certify", "--quiet"] + [str(v) for kv in options.items() for v in kv]


def read_tsv(path: Path) -> list[dict[str, str]]:
    header, *lines = path.read_text().splitlines()
    return [dict(zip(header.split("\t"), line.split("\t"))) for line in lines]


def independent_certificate(votes: np.ndarray, k: int) -> tuple[int, float]:
    """Cohen et al. from the stored votes with no densepure code: per-row majority (ties: first column
    reached), counts, scipy's beta quantile, radius sigma * Phi^-1(pA)."""
    voted = [max(list(row[:k]), key=list(row[:k]).count) for row in votes]
    top = min(Counter(voted[:N0]).items(), key=lambda kv: (-kv[1], kv[0]))[0]
    n_a = sum(v == top for v in voted[N0:])
    p_lower = beta.ppf(ALPHA, n_a, N - n_a + 1) if n_a else 0.0
    return (top, SIGMA * norm.ppf(p_lower)) if p_lower >= 0.5 else (-1, 0.0)


def test_certify_and_aggregate_agree_with_an_independent_computation(models, tmp_path):
    """Every vote computed (no savings): the TSV and the aggregation at any K' equal Cohen et al. computed from
    the stored votes by hand."""
    assert main(certify_args(models, tmp_path) + ["--no-lazy-votes", "--no-stop-abstain"]) == 0
    rows = read_tsv(tmp_path / "result.tsv")
    assert [r["idx"] for r in rows] == ["0", "1", "2"]
    store = VotesStore.open(tmp_path / "votes")
    for row in rows:
        votes = store.read(int(row["idx"])).labels
        assert votes.shape == (N0 + N, K)
        top, radius = independent_certificate(votes, K)
        assert int(row["predict"]) == top
        assert float(row["radius"]) == pytest.approx(radius, rel=5e-3, abs=1e-12)  # written with 3 digits
        assert row["K"] == str(K) and row["sigma"] == str(SIGMA) and row["b"] == str(B)
    assert main(["aggregate", "--votes-dir", str(tmp_path / "votes"), "--K", "1", "3", "--alpha", str(ALPHA),
                 "--out", str(tmp_path / "K{K}.tsv")]) == 0
    assert [r["radius"] for r in read_tsv(tmp_path / "K3.tsv")] == [r["radius"] for r in rows]
    for row in read_tsv(tmp_path / "K1.tsv"):
        top, radius = independent_certificate(store.read(int(row["idx"])).labels, 1)
        assert (int(row["predict"]), float(row["radius"])) == pytest.approx((top, radius), rel=5e-3, abs=1e-12)


def test_rerun_skips_finished_images(models, tmp_path):
    assert main(certify_args(models, tmp_path, ids="0,1")) == 0
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "votes").glob("*.npz")}
    assert main(certify_args(models, tmp_path, ids="0,1,2")) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "votes").glob("*.npz")}
    assert {k: after[k] for k in before} == before and set(after) == {"0.npz", "1.npz", "2.npz"}


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "densepure", *args], capture_output=True, text=True)


@pytest.mark.slow  # processes killed or run side by side: end to end, in `make test`
def test_sigkill_and_resume_gives_identical_outputs(models, tmp_path):
    """Kill -9 after the first image is stored, resume, and compare with an uninterrupted run: the votes are
    byte-identical and so is the TSV, except its `time` column, which is each run's own wall-clock time."""
    heavy = {"--N": 300, "--K": 2, "--b": 2, "--ids": "3,4,5,6"}
    assert run_cli(certify_args(models, tmp_path / "straight", **heavy)).returncode == 0

    args = certify_args(models, tmp_path / "killed", **heavy)
    proc = subprocess.Popen([sys.executable, "-m", "densepure", *args])
    deadline = time.monotonic() + 120
    while not list((tmp_path / "killed" / "votes").glob("*.npz")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = sorted(p.name for p in (tmp_path / "killed" / "votes").glob("*.npz"))
    assert 1 <= len(stored) < 4, f"kill came too late to test anything: {stored}"
    assert run_cli(args).returncode == 0

    for image in range(3, 7):
        a = np.load(tmp_path / "straight" / "votes" / f"{image}.npz")["labels"]
        b = np.load(tmp_path / "killed" / "votes" / f"{image}.npz")["labels"]
        assert a.tobytes() == b.tobytes() and a.dtype == b.dtype
    strip = lambda rows: [{k: v for k, v in r.items() if k != "time"} for r in rows]  # noqa: E731
    assert strip(read_tsv(tmp_path / "straight" / "result.tsv")) == strip(read_tsv(tmp_path / "killed" / "result.tsv"))


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"--classifier": "no-such-net"}, "unknown classifier 'no-such-net'"),
        ({"--diffusion-ckpt": "missing.pt"}, "missing.pt"),
        ({"--classifier-ckpt": "missing-cnn.pt"}, "missing-cnn.pt"),
        ({"--diffusion": "improved-cifar10"}, "does not match"),
        ({"--sigma": "0"}, "--sigma: must be a finite number > 0"),
        ({"--N0": "0"}, "--N0: must be >= 1"),
        ({"--N": "-3"}, "--N: must be >= 1"),
        ({"--alpha": "1.5"}, "--alpha: must be in (0, 1)"),
        ({"--ids": "0,5000"}, "image id 5000 is out of range"),
        ({"--dataset": "cifar10", "--classifier": "wrn-28-10", "--data-root": "nowhere"}, "nowhere"),
    ],
)
def test_user_errors_are_one_line(models, tmp_path, overrides, message):
    result = run_cli(certify_args(models, tmp_path, **overrides))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 3


def test_votes_from_another_setting_or_truncated_are_refused(models, tmp_path):
    assert main(certify_args(models, tmp_path, ids="0")) == 0
    result = run_cli(certify_args(models, tmp_path, ids="0", **{"--sigma": "0.25"}))
    assert result.returncode == 2 and "sigma" in result.stderr and "Traceback" not in result.stderr
    votes_file = tmp_path / "votes" / "0.npz"
    votes_file.write_bytes(votes_file.read_bytes()[:100])
    result = run_cli(["aggregate", "--votes-dir", str(tmp_path / "votes"), "--K", "1", "--ids", "0",
                      "--out", str(tmp_path / "K{K}.tsv")])
    assert result.returncode == 2 and "0.npz" in result.stderr and "Traceback" not in result.stderr


def test_votes_of_other_weights_under_the_same_names_are_refused(models, tmp_path):
    """The setting records each checkpoint's sha256: retrained weights saved under the same file name must not
    extend a store computed with the old ones."""
    from densepure.models.download import sha256

    unet = tmp_path / "unet.pt"
    unet.write_bytes(models["unet"].read_bytes())
    args = certify_args({**models, "unet": unet}, tmp_path, ids="0")
    assert main(args) == 0
    recorded = VotesStore.open(tmp_path / "votes").setting["checkpoints"]
    assert recorded == {"diffusion": sha256(unet), "classifier": sha256(models["cnn"])}
    torch.manual_seed(1)
    save_bundle(unet, UNetModel(digits_unet_config()), cosine_schedule(1000))
    result = run_cli(certify_args({**models, "unet": unet}, tmp_path, ids="0,1"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "checkpoints.diffusion" in result.stderr and recorded["diffusion"] in result.stderr
    assert VotesStore.open(tmp_path / "votes").stored_ids() == [0]


# --- one line, never a traceback, for what a hostile user types (issue: each with a test) ------------------------


def cli_error(args: list[str], capsys) -> str:
    """Run ``densepure ARGS`` in this process; assert exit status 2 and an error of one line (after any progress
    lines), without a traceback. Returns that line."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert code == 2, err
    assert "Traceback" not in err and [line for line in lines if line.startswith("densepure")] == lines[-1:], err
    assert re.match(r"densepure( \w+)?: error: ", lines[-1]), err
    return lines[-1]


@pytest.fixture
def junk(tmp_path) -> dict[str, Path]:
    """Files a user may pass by mistake: garbage, empty, a truncated checkpoint, a plain file where a folder goes."""
    paths = {name: tmp_path / name for name in ("garbage.pt", "empty.pt", "truncated.pt", "file")}
    paths["garbage.pt"].write_text("garbage\n")
    paths["empty.pt"].write_bytes(b"")
    paths["file"].write_text("x\n")
    paths["binary"] = tmp_path / "binary"
    paths["binary"].write_bytes(bytes(range(256)) * 4)
    return paths


@pytest.mark.parametrize("overrides, message", [
    ({"--diffusion-ckpt": "garbage.pt"}, "cannot read checkpoint {tmp}/garbage.pt: not a PyTorch weights file"),
    ({"--diffusion-ckpt": "empty.pt"}, "checkpoint {tmp}/empty.pt is empty"),
    ({"--diffusion-ckpt": "truncated.pt"}, "cannot read checkpoint {tmp}/truncated.pt: not a PyTorch weights file, or "
                                           "truncated"),
    ({"--diffusion": "improved-cifar10", "--diffusion-ckpt": "garbage.pt", "--dataset": "cifar10"},
     "classifier 'digits-cnn' is for digits, not cifar10"),
    ({"--device": "foo"}, "--device 'foo': expected auto, cpu, cuda or cuda:N"),
    ({"--device": "cpu:5"}, "--device 'cpu:5': expected auto, cpu, cuda or cuda:N"),
    ({"--votes-dir": "file"}, "--votes-dir {tmp}/file is a file; expected a folder"),
    ({"--votes-dir": "file/votes"}, "--votes-dir {tmp}/file/votes: {tmp}/file is a file, not a folder"),
    ({"--out": "."}, "--out {tmp} is a folder; expected a file"),
    ({"--out": "file/r.tsv"}, "--out {tmp}/file/r.tsv: {tmp}/file is a file, not a folder"),
    ({"--classifier": "beit-large-512"}, "classifier 'beit-large-512' is for imagenet, not digits"),
    ({"--classifier": "wrn-28-10"}, "classifier 'wrn-28-10' is for cifar10, not digits"),
    ({"--N": "1000000000000"}, "--N0 + --N = 1000000000005 exceeds 4294967296, the indices one 32-bit word of the "
                               "noise counter holds"),
    ({"--N": "1e5"}, "argument --N: expected an integer, got '1e5'"),
    ({"--seed": "4294967296"}, "--seed must be an integer in 0..4294967295"),
    ({"--seed": "-1"}, "--seed must be an integer in 0..4294967295"),
    ({"--sigma": "inf"}, "argument --sigma: must be a finite number > 0, got inf"),
    ({"--sigma": "nan"}, "argument --sigma: must be a finite number > 0, got nan"),
    ({"--sigma": "0.01", "--b": "10"}, "sigma 0.01, b 10: t* = 7.12169 on the cosine schedule with T = 1000: the "
                                       "visited timesteps repeat (6, 4, 1)"),
    ({"--b": "500"}, "sigma 0.5, b 500: t* = 496.05 on the cosine schedule"),
    ({"--sigma": "1000", "--method": "onestep"}, "sigma 1000, b 1: t* = 999.679 on the cosine schedule with T = 1000 "
                                                 "is beyond the schedule's last timestep 999"),
    ({"--ids": "5:1"}, "'5:1' holds no image ids"),
    ({"--ids": "0:1000000000000"}, "'0:1000000000000' holds 1000000000000 ids; at most 597 are possible here"),
    ({"--K": "10000000000"}, "--K = 10000000000 exceeds 4294967296, the indices one 32-bit word of the noise counter"),
    ({"--dataset": "mnist"}, "unknown dataset 'mnist' (known: digits, cifar10, imagenet;"),
    ({"--threads": "100000"}, "--threads 100000: this machine has"),
])
def test_certify_mistakes_are_one_line(models, junk, tmp_path, capsys, overrides, message):
    junk["truncated.pt"].write_bytes(models["unet"].read_bytes()[:5000])
    paths = {"--diffusion-ckpt", "--votes-dir", "--out"}
    overrides = {k: tmp_path / v if k in paths else v for k, v in overrides.items()}
    err = cli_error(certify_args(models, tmp_path, **overrides), capsys)
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert not (tmp_path / "votes").exists()  # refused before any work


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_out_is_refused_before_any_work(models, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    err = cli_error(certify_args(models, tmp_path, **{"--out": locked / "r.tsv"}), capsys)
    assert f"--out {locked}/r.tsv: {locked} is not writable" in err


@pytest.mark.parametrize("out, message", [
    ("K{x}.tsv", "--out must contain {K} and no other placeholder"),
    ("K{K}-{x}.tsv", "--out must contain {K} and no other placeholder"),
    ("K{K}{}.tsv", "--out must contain {K} and no other placeholder"),
    ("K{K.real}.tsv", "--out must contain {K} and no other placeholder"),
    ("K{K}}.tsv", "--out must contain {K} and no other placeholder"),
    ("K.tsv", "--out must contain {K} and no other placeholder"),
    ("file/K{K}.tsv", "--out {tmp}/file/K1.tsv: {tmp}/file is a file, not a folder"),
])
def test_aggregate_out_mistakes_are_one_line(tmp_path, junk, capsys, out, message):
    err = cli_error(["aggregate", "--votes-dir", tmp_path / "votes", "--K", "1", "--out", tmp_path / out], capsys)
    assert message.replace("{tmp}", str(tmp_path)) in err


@pytest.fixture
def tiny_store(tmp_path) -> Path:
    """A votes store of images 0 and 1 with made-up votes: what aggregate reads, without computing anything."""
    from densepure.job.results import Setting

    store = VotesStore(tmp_path / "votes", Setting("digits", "bundle", "digits-cnn", SIGMA, B, K, N0, N).as_dict(),
                       num_classes=10, rows=N0 + N)
    for image in (0, 1):
        store.write(image, np.zeros((N0 + N, K), dtype=np.uint8), label=0)
    return store.directory


@pytest.mark.parametrize("ids, message", [
    ("5:1", "'5:1' holds no image ids"),
    ("0:1000000000000", "'0:1000000000000' holds 1000000000000 ids; at most 2 are possible here"),
    ("0,7", "image 7 has no complete votes file in"),
])
def test_aggregate_ids_mistakes_are_one_line(tiny_store, tmp_path, capsys, ids, message):
    err = cli_error(["aggregate", "--votes-dir", tiny_store, "--K", "1", "--ids", ids, "--out", tmp_path / "K{K}.tsv"],
                    capsys)
    assert message in err


@pytest.mark.parametrize("option, message", [
    ("--extract-to", "out.bin: cannot extract into {tmp}/extracted"),
    ("--lock", "--lock {tmp} is a folder; expected a file"),
    ("--out", "--out {tmp}/file/x: {tmp}/file is a file, not a folder"),
])
def test_download_mistakes_are_one_line(tmp_path, junk, capsys, option, message):
    from densepure.models.download import sha256

    # a file already there with its digest in the lock file: nothing is downloaded (the URL goes nowhere)
    (tmp_path / "out.bin").write_bytes(junk["file"].read_bytes())
    (tmp_path / "lock").write_text(f"{sha256(tmp_path / 'out.bin')}  out.bin\n")
    args = {"--url": "http://127.0.0.1:9/file", "--out": tmp_path / "out.bin", "--lock": tmp_path / "lock"}
    args.update({"--extract-to": {"--extract-to": tmp_path / "extracted"}, "--lock": {"--lock": tmp_path},
                 "--out": {"--out": tmp_path / "file" / "x"}}[option])
    err = cli_error(["download", *[str(v) for kv in args.items() for v in kv]], capsys)
    assert message.replace("{tmp}", str(tmp_path)) in err


@pytest.mark.parametrize("error", [
    MemoryError(),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to "
                 "allocate 84000000000 bytes"),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
])
def test_a_failed_allocation_is_one_line(monkeypatch, capsys, error):
    """What a --K or --batch too large for the machine ends in (the allocation itself is not provoked: a machine
    with enough memory would start computing)."""
    from densepure.cli import models

    def fail(args):
        raise error

    monkeypatch.setattr(models, "run_classifiers", fail)
    assert cli_error(["classifiers"], capsys).startswith("densepure: error: out of memory")


def test_other_runtime_errors_keep_their_traceback(monkeypatch):
    """Only user mistakes and the machine's limits are one line: a bug still shows where it is."""
    from densepure.cli import models

    def fail(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(models, "run_classifiers", fail)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["classifiers"])


@pytest.mark.parametrize("args, message", [
    (["table", "--artifact", "tableA", "--spec", "binary", "--results", "file", "--outdir", "t"],
     "{tmp}/binary: cannot read spec ('utf-8' codec can't decode"),
    (["table", "--artifact", "tableA", "--spec", REPO_CONFIG, "--results", "binary", "--outdir", "t"],
     "{tmp}/binary: not a result TSV"),
    (["table", "--artifact", "tableA", "--spec", REPO_CONFIG, "--results", "file", "--outdir", "file"],
     "--outdir {tmp}/file is a file; expected a folder"),
    (["figure", "--artifact", "fig3", "--spec", REPO_CONFIG, "--results", "file", "--outdir", "file/f"],
     "--outdir {tmp}/file/f: {tmp}/file is a file, not a folder"),
    (["compare", "--artifact", "tableA", "--spec", REPO_CONFIG, "--results", "file", "--paper", "binary", "--out",
      "c.csv"], "result file has no rows: {tmp}/file"),
    (["compare", "--artifact", "tableA", "--spec", "binary", "--results", "file", "--out", "c.csv"],
     "{tmp}/binary: cannot read spec ('utf-8' codec can't decode"),
    (["compare", "--artifact", "tableA", "--spec", REPO_CONFIG, "--results", "file", "--out", "."],
     "--out {tmp} is a folder; expected a file"),
    (["estimate", "--configfile", "binary"], "{tmp}/binary: cannot read config ('utf-8' codec can't decode"),
    (["estimate", "--configfile", REPO_CONFIG, "--rates", "binary"], "{tmp}/binary: cannot read rates file"),
])
def test_report_and_estimate_mistakes_are_one_line(tmp_path, junk, capsys, args, message):
    paths = [tmp_path / a if i and args[i - 1] in ("--spec", "--results", "--outdir", "--paper",
                                                   "--out", "--configfile", "--rates") else a
             for i, a in enumerate(args)]
    assert message.replace("{tmp}", str(tmp_path)) in cli_error(paths, capsys)


# --- messages: logging on stderr, -v / -q, one-line warnings ------------------------------------------------------

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


def densepure(args: list, cwd: Path, terminal: bool = False) -> tuple[int, str, str]:
    """``densepure ARGS`` as a user types it (the installed entry point) in ``cwd``: (status, stdout, stderr), stderr
    a pipe (a log file, say) or, with ``terminal``, a pseudo-terminal."""
    import pty

    from conftest import tool_env

    args = ["densepure", *map(str, args)]
    if not terminal:
        run = subprocess.run(args, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=600)
        return run.returncode, run.stdout, run.stderr
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, cwd=cwd, env=tool_env(), stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed its side: everything is read
            break
        if not chunk:
            break
        err += chunk
    os.close(master)
    out = proc.stdout.read()
    return proc.wait(timeout=600), out, err.decode().replace("\r\n", "\n")


def carlini_log(path: Path) -> Path:
    """A Carlini-style log (running total in `correct`): importing it logs a warning and a line."""
    path.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t3\t3\t0.5\t1\t0:00:01\n20\t4\t4\t0.25\t2\t0:00:01\n")
    return path


IMPORT = ["cohen", "carlini.tsv", "--dataset", "cifar10", "--classifier", "c", "--method", "carlini", "--sigma",
          "0.25", "--alpha", "infer", "--out", "out"]


def test_messages_are_dated_in_a_log_and_plain_on_a_terminal(tmp_path):
    carlini_log(tmp_path / "carlini.tsv")
    status, out, err = densepure(["import", *IMPORT], tmp_path)
    assert status == 0 and out == "out/carlini.tsv\n", err
    warning, line = err.splitlines()
    assert re.fullmatch(STAMP + r" WARNING densepure.report.imports: carlini.tsv: the correct column is a running "
                        r"total .*", warning), err
    assert re.fullmatch(STAMP + r" INFO densepure.report.imports: carlini.tsv -> out/carlini.tsv \(unchanged\)?.*|"
                        + STAMP + r" INFO densepure.report.imports: carlini.tsv -> out/carlini.tsv: 2 images.*",
                        line), err
    status, out, err = densepure(["import", *IMPORT], tmp_path, terminal=True)
    assert status == 0 and out == "out/carlini.tsv\n", err
    warning, line = err.splitlines()
    assert warning.startswith("warning: carlini.tsv: the correct column is a running total"), err
    assert line.startswith("carlini.tsv -> out/carlini.tsv (unchanged): 2 images"), err


@pytest.mark.parametrize("options, levels", [
    (["import"], ["WARNING", "INFO"]),
    (["-q", "import"], ["WARNING"]),
    (["import", "-q"], ["WARNING"]),
    (["--quiet", "import", "cohen"], ["WARNING"]),  # after the format: IMPORT starts with it, given twice is fine
    (["-v", "import"], ["DEBUG", "WARNING", "INFO"]),
    (["import", "--verbose"], ["DEBUG", "WARNING", "INFO"]),
])
def test_verbose_and_quiet_before_or_after_the_command(tmp_path, options, levels):
    carlini_log(tmp_path / "carlini.tsv")
    args = options + IMPORT[1:] if options[-1] == "cohen" else options + IMPORT
    status, out, err = densepure(args, tmp_path)
    assert status == 0 and out == "out/carlini.tsv\n", err
    assert [line.split()[2] for line in err.splitlines()] == levels, err
    if "DEBUG" in levels:  # the first debug line names the version and the command
        assert re.search(r"DEBUG densepure.cli.main: densepure \S+ \(Python [\d.]+\): .*import .*carlini.tsv", err)


def test_verbose_and_quiet_together_are_one_line_error(tmp_path):
    status, out, err = densepure(["-v", "import", *IMPORT, "-q"], tmp_path)
    assert status == 2 and err.count("\n") == 1 and "give -v/--verbose or -q/--quiet, not both" in err, err
    status, out, err = densepure(["-v", "-q", "import", *IMPORT], tmp_path)
    assert status == 2 and err.count("\n") == 1 and "not allowed with argument" in err, err


def test_random_weights_warning_is_one_line(models, tmp_path):
    """A classifier without a checkpoint: Python's warning becomes one line, no source file or line, in a log and
    on a terminal; -q keeps it (it is a warning) and drops the rest."""
    args = [a for a in certify_args(models, tmp_path, ids="0", **{"--N": 10, "--K": 1, "--threads": 1})
            if a != "--quiet"]
    i = args.index("--classifier-ckpt")
    args = ["-q", *args[:i], *args[i + 2:]]
    status, _, err = densepure(args, tmp_path)
    assert status == 0, err
    assert re.fullmatch(STAMP + r" WARNING py.warnings: digits-cnn: no checkpoint given, the classifier has random "
                        r"weights[^\n]*\n", err), err
    args[args.index("--out") + 1] = str(tmp_path / "again.tsv")
    status, _, err = densepure(args, tmp_path, terminal=True)
    assert status == 0, err
    assert re.fullmatch(r"warning: digits-cnn: no checkpoint given, the classifier has random weights[^\n]*\n", err), \
        err


def small_theory_spec(tmp_path: Path) -> Path:
    """The repository's `theory` section with a coarse Figure 2 grid (seconds)."""
    import yaml

    theory = yaml.safe_load(REPO_CONFIG.read_text())["theory"]
    theory["fig2"]["pixels"] = 40
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"theory": theory}))
    return tmp_path / "spec.yaml"


def test_theory_fig2_writes_the_outputs_given(tmp_path):
    small_theory_spec(tmp_path)
    status, _, err = densepure(["theory", "fig2", "--spec", "spec.yaml", "--csv", "fig2.csv"], tmp_path)
    assert status == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig2.csv", "spec.yaml"]
    assert "r_sub" in (tmp_path / "fig2.csv").read_text() and re.search(r"INFO .*sigma_t [\d.]+: r [\d.]+", err)
    status, _, err = densepure(["theory", "fig2", "--spec", "spec.yaml", "--pdf", "only.pdf"], tmp_path)
    assert status == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig2.csv", "only.pdf", "spec.yaml"]
    assert (tmp_path / "only.pdf").read_bytes().startswith(b"%PDF")
    status, _, err = densepure(["theory", "fig2", "--spec", "spec.yaml"], tmp_path)
    assert status == 2 and err == "densepure: error: theory fig2 writes nothing: give at least one of --png, --pdf, " \
                                  "--csv\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig2.csv", "only.pdf", "spec.yaml"]
