"""Progress of a long job (densepure.job.progress): the bar on a terminal, rate-limited lines in a log file (logged;
the command line dates them), the summary; then a real `densepure certify` job writing its log to a file."""

import fcntl
import io
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import torch
from test_cli import models  # noqa: F401  (a fixture: the random-weight digits UNet and CNN of the CLI tests)

from densepure.job.progress import JobProgress

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
LOGGER = "densepure.job.progress"


class Clock:
    """A hand-driven clock (seconds)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def log_lines(text: str) -> list[str]:
    """The lines of a job's log file, each dated by the command line's log format; their messages."""
    assert text.endswith("\n") and "\r" not in text
    lines = text.splitlines()
    assert all(re.match(STAMP + f" INFO {LOGGER}: ", line) for line in lines), lines
    return [line.split(": ", 1)[1] for line in lines]


def messages(caplog) -> list[str]:
    """The progress messages logged so far (and forgets them)."""
    out = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == LOGGER)
    caplog.clear()
    return out


@pytest.fixture
def progress_log(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    return caplog


def test_log_file_gets_a_line_per_image_at_most_one_per_interval_and_a_summary(progress_log):
    """3 of 5 images to do (2 skipped), 100 draws each. Image 10 ends at 2 s (reported at once), image 11 at 30 s
    (within the minute: no line), image 12 takes 130 s, during which the log gets a line a minute."""
    clock, out = Clock(), io.StringIO()
    job = JobProgress(5, 100, stream=out, interval=60.0, clock=clock)
    assert not job.use_bar  # a StringIO is no terminal
    job.skipped(2)
    clock.now = 2.0
    job.draws(100)
    job.image_done(10, 2.0)
    clock.now = 30.0
    job.draws(100)
    job.image_done(11, 28.0)
    for second in range(31, 161):  # image 12: a draw every second, its last draw at 160 s
        clock.now = float(second)
        job.draws(100 / 130)
    job.image_done(12, 130.0)
    job.close()
    job.close()  # once only
    assert out.getvalue() == ""  # the lines are logged; the stream only ever gets a bar
    lines = messages(progress_log)
    assert len(lines) == 4, lines
    assert "images 3/5 (image 10: 2.0 s)  draws 100/300  50.0 draws/s  ETA 0:00:04" in lines[0]
    assert "images 4/5  draws 2" in lines[1] and "image 11" not in lines[1]  # 62 s: the minute after the first line
    assert "images 4/5  draws 2" in lines[2]  # 122 s
    # 160 s: image 12 is done 38 s after the last line: no line of its own; the summary says it all
    assert "job summary: 3 images certified, 2 skipped as already done, 53.3 s per image, 0:02:40 in all" in lines[3]
    assert "GPU" not in lines[3] or torch.cuda.is_available()


def test_summary_names_the_gpu_memory_high_water_mark(monkeypatch, progress_log):
    """Where the job used a GPU, the summary gives PyTorch's peak over the devices (a stand-in torch here)."""
    gib = 2**30
    peaks = {0: (1 * gib, 2 * gib), 1: (int(1.5 * gib), int(1.75 * gib))}
    cuda = type("cuda", (), {"is_available": staticmethod(lambda: True), "is_initialized": staticmethod(lambda: True),
                             "device_count": staticmethod(lambda: 2),
                             "max_memory_allocated": staticmethod(lambda d: peaks[d][0]),
                             "max_memory_reserved": staticmethod(lambda d: peaks[d][1])})
    monkeypatch.setitem(sys.modules, "torch", type("torch", (), {"cuda": cuda}))
    out = io.StringIO()
    job = JobProgress(1, 10, stream=out, clock=Clock())
    job.image_done(0, 3.0)
    job.close()
    assert messages(progress_log)[-1].endswith(
        "3.0 s per image, 0:00:00 in all, GPU memory high-water mark 1.50 GiB allocated, 2.00 GiB reserved")


def test_nothing_to_do_and_silent_jobs(progress_log):
    out = io.StringIO()
    job = JobProgress(4, 10, stream=out, clock=Clock())
    job.skipped(4)
    job.close()
    (summary,) = messages(progress_log)
    assert summary == "job summary: 0 images certified, 4 skipped as already done, no image, 0:00:00 in all"
    quiet = JobProgress(4, 10, stream=None)
    quiet.draws(10)
    quiet.image_done(0, 1.0)
    quiet.close()  # writes nothing, fails nothing
    assert messages(progress_log) == []


def test_interval_zero_reports_every_image(progress_log):
    out = io.StringIO()
    job = JobProgress(3, 10, stream=out, interval=0.0, clock=Clock())
    for image in range(3):
        job.image_done(image, 1.0)
    job.close()
    lines = messages(progress_log)
    assert [f"(image {i}: 1.0 s)" in line for i, line in enumerate(lines[:3])] == [True] * 3
    assert "3 images certified" in lines[3]


def test_terminal_gets_a_tqdm_bar(progress_log):
    """On a pseudo-terminal the bar is picked by itself: images, draws, draws/s and ETA; no progress lines, then the
    summary (logged)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column terminal
    stream = os.fdopen(slave, "w")
    job = JobProgress(3, 1000, stream=stream, interval=60.0)
    assert job.use_bar
    job.skipped(1)
    for image in (5, 6):
        for _ in range(10):
            job.draws(100)
        job.image_done(image, 0.5)
    job.close()
    stream.close()
    text = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the slave side is closed: everything is read
            break
        if not chunk:
            break
        text += chunk
    os.close(master)
    bar = text.decode().replace("\r\n", "\n")  # the terminal's line ends
    assert "\r" in bar and "images 3/3" in bar and "2.00k/2.00k" in bar and "draws/s" in bar
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", bar)  # elapsed < ETA
    assert "job summary" not in bar
    (summary,) = messages(progress_log)
    assert "job summary: 2 images certified, 1 skipped as already done, 0.5 s per image" in summary


def test_forced_bar_and_fractional_draws():
    """bar=True on any stream; a draw's votes counted one at a time (fractions) still add up to whole draws."""
    out = io.StringIO()
    job = JobProgress(1, 30, stream=out, bar=True)
    for _ in range(90):
        job.draws(1 / 3)
    job.image_done(0, 1.0)
    job.close()
    assert "images 1/1" in out.getvalue() and "30.0/30.0" in out.getvalue()


def test_a_warning_while_the_bar_is_shown_gets_its_own_line(monkeypatch):
    """A warning logged (as the command line logs it, to stderr) while the bar is shown is written above the bar on a
    line of its own, never appended to the bar's line; after the job the handler writes to stderr directly again."""
    from densepure.cli.main import cli_logging

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with cli_logging():
        job = JobProgress(2, 30, stream=sys.stderr, bar=True)
        job.draws(10)
        logging.getLogger("densepure.job.runner").warning("boom")
        job.draws(20)
        job.image_done(0, 1.0)
        job.close()
        logging.getLogger("densepure.job.runner").warning("after")
    lines = err.getvalue().split("\n")
    (boom,) = [line for line in lines if "boom" in line]
    assert re.fullmatch(STAMP + " WARNING densepure.job.runner: boom", boom.split("\r")[-1]), boom
    assert "draws" not in boom.split("\r")[-1]
    assert "30.0/60.0" in err.getvalue()  # the bar went on after the warning
    (after,) = [line for line in lines if "after" in line]
    assert re.fullmatch(STAMP + " WARNING densepure.job.runner: after", after)


# --- a real certification job writing a log file ------------------------------------------------------------------


def certify_log(models, out: Path, *extra: str) -> str:
    """Run `python -m densepure certify` on images 0, 1, 2 with stderr going to a file; return that file's text."""
    args = [sys.executable, "-m", "densepure", "certify", "--dataset", "digits", "--ids", "0,1,2",
            "--diffusion", "bundle", "--diffusion-ckpt", str(models["unet"]), "--classifier", "digits-cnn",
            "--classifier-ckpt", str(models["cnn"]), "--sigma", "0.5", "--b", "2", "--K", "3", "--N0", "5",
            "--N", "40", "--batch", "60", "--device", "cpu", "--threads", "1", "--votes-dir", str(out / "votes"),
            "--out", str(out / "result.tsv"), *extra]
    log = out / "certify.log"
    out.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        subprocess.run(args, stderr=handle, check=True, timeout=600)
    return log.read_text()


def test_certify_job_log_shows_each_image_and_a_summary(models, tmp_path):
    lines = log_lines(certify_log(models, tmp_path, "--log-interval", "0"))
    for image in (0, 1, 2):
        assert sum(f"(image {image}: " in line for line in lines) == 1, lines
    assert re.search(r"images 3/3 \(image 2: [\d.]+ s\)  draws 135/135", "\n".join(lines))
    assert re.search(r"job summary: 3 images certified, 0 skipped as already done, [\d.]+ s per image", lines[-1])
    # rerun: every image is in the store already
    (summary,) = log_lines(certify_log(models, tmp_path))
    assert "job summary: 0 images certified, 3 skipped as already done, no image" in summary
    assert certify_log(models, tmp_path, "-q") == ""  # warnings and errors only


def test_certify_job_log_at_the_default_interval(models, tmp_path):
    """A fast job within the minute: the first image at once, then only the summary."""
    lines = log_lines(certify_log(models, tmp_path))
    # the first image to finish (images share the network calls, so it need not be image 0)
    assert len(lines) == 2 and re.search(r"images 1/3 \(image [012]: ", lines[0]), lines
    assert "job summary: 3 images certified" in lines[1], lines
