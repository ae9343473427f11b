"""Progress of a long certification job, for a person at a terminal and for a person reading its log file.

On a terminal (the stream is a tty) a tqdm bar over the job's draws shows the images done, the draws, draws per
second and the ETA; log lines written to the terminal meanwhile (warnings) go above it, never into its line
(``tqdm.contrib.logging``). In a log file (a Slurm job's stderr, say) the job logs lines instead (INFO messages of this
module's logger, which the command line writes as dated lines): one when an image is finished and, while one image
takes long, one every ``interval`` seconds, but never more than one line per ``interval`` (the first finished image
is reported at once); so a 15-hour job's log shows where it is without growing by megabytes.
:meth:`JobProgress.close` logs one summary line: images done, images skipped as already done, seconds per image,
and the GPU memory high-water mark where a GPU was used.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import sys
import time
from typing import Callable, TextIO

logger = logging.getLogger(__name__)
#: the loggers the command line writes to the terminal: the package's and the one :func:`logging.captureWarnings`
#: writes to; while the bar is shown their lines go above it, so that a warning never lands inside the bar's line
TERMINAL_LOGGERS = ("densepure", "py.warnings")


def gpu_memory_peak() -> tuple[int, int] | None:
    """Bytes (allocated, reserved) at PyTorch's high-water mark over the visible GPUs; None when no GPU was used."""
    torch = sys.modules.get("torch")  # never imports torch: a job that did not load it used no GPU
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    devices = range(torch.cuda.device_count())
    return (max(torch.cuda.max_memory_allocated(d) for d in devices),
            max(torch.cuda.max_memory_reserved(d) for d in devices))


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds))) if math.isfinite(seconds) else "?"


class JobProgress:
    """Reports a job of ``images_total`` images of ``draws_per_image`` draws each: a bar on ``stream``, or lines
    to this module's logger (``stream`` None: silent).

    Call :meth:`skipped` for images found already done, :meth:`draws` as draws are computed, :meth:`image_done`
    for each finished image and :meth:`close` at the end (also as a context manager). ``bar``: None picks the bar
    when ``stream`` is a terminal, lines otherwise. ``clock`` (seconds) is replaceable for tests.
    """

    def __init__(self, images_total: int, draws_per_image: int, stream: TextIO | None = sys.stderr,
                 interval: float = 60.0, bar: bool | None = None, clock: Callable[[], float] = time.monotonic):
        self.images_total, self.draws_per_image = images_total, draws_per_image
        self.stream, self.interval, self.clock = stream, interval, clock
        self.use_bar = bool(stream is not None and (stream.isatty() if bar is None else bar))
        self.images_skipped = self.images_done = 0
        self.draws_done = 0.0
        self.image_seconds = 0.0
        self.start = clock()
        self.last_line: float | None = None
        self._bar = None
        self._redirect = contextlib.ExitStack()
        self._closed = False

    # --- what the job reports ------------------------------------------------------------------------------------

    def skipped(self, count: int) -> None:
        """``count`` images were already done (a resumed job): they cost no draws."""
        self.images_skipped += count

    def draws(self, count: float) -> None:
        """``count`` more draws computed (fractions allowed: a draw's votes may be computed one at a time)."""
        self.draws_done += count
        if self.use_bar:
            self._update_bar()
        elif self.stream is not None and self._line_due():  # a long image: a line per interval
            self._line()

    def image_done(self, image_id: int, seconds: float) -> None:
        """Image ``image_id`` is finished and stored; it took ``seconds``."""
        self.images_done += 1
        self.image_seconds += seconds
        if self.use_bar:
            self._update_bar()
            self._bar.set_description_str(self._images_text())
        elif self.stream is not None and (self.last_line is None or self._line_due()):
            self._line(f" (image {image_id}: {seconds:.1f} s)")

    def close(self) -> None:
        """Log the summary line (once)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        self._redirect.close()
        if self.stream is not None:
            self._write(self.summary())

    def __enter__(self) -> JobProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- what it writes ------------------------------------------------------------------------------------------

    @property
    def draws_total(self) -> int:
        """Draws this run computes: those of the images not skipped."""
        return (self.images_total - self.images_skipped) * self.draws_per_image

    def _images_text(self) -> str:
        return f"images {self.images_skipped + self.images_done}/{self.images_total}"

    def summary(self) -> str:
        elapsed = self.clock() - self.start
        per_image = f"{self.image_seconds / self.images_done:.1f} s per image" if self.images_done else "no image"
        text = (f"job summary: {self.images_done} images certified, {self.images_skipped} skipped as "
                f"already done, {per_image}, {_duration(elapsed)} in all")
        peak = gpu_memory_peak()
        if peak is not None:
            text += f", GPU memory high-water mark {peak[0] / 2**30:.2f} GiB allocated, {peak[1] / 2**30:.2f} GiB reserved"
        return text

    def _line_due(self) -> bool:
        """``interval`` seconds have passed since the last line (or since the start, before the first line)."""
        since = self.start if self.last_line is None else self.last_line
        return self.clock() - since >= self.interval

    def _line(self, detail: str = "") -> None:
        now = self.clock()
        self.last_line = now
        rate = self.draws_done / (now - self.start) if now > self.start else 0.0
        eta = (self.draws_total - self.draws_done) / rate if rate > 0 else math.inf
        self._write(f"{self._images_text()}{detail}  draws {self.draws_done:,.0f}/{self.draws_total:,}"
                    f"  {rate:,.1f} draws/s  ETA {_duration(eta)}")

    def _update_bar(self) -> None:
        if self._bar is None:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._redirect.enter_context(logging_redirect_tqdm([logging.getLogger(n) for n in TERMINAL_LOGGERS]))
            self._bar = tqdm(total=self.draws_total, unit=" draws", unit_scale=True, file=self.stream,
                             dynamic_ncols=True, desc=self._images_text())
        self._bar.update(int(self.draws_done + 1e-6) - self._bar.n)  # thirds of a draw add up to whole ones

    @staticmethod
    def _write(text: str) -> None:
        logger.info(text)
