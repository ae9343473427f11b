"""Command line of densepure. Run ``densepure COMMAND --help`` for the options of each command.

Errors a user can cause (bad values, missing files, mismatched checkpoints or votes) print one line and exit
with status 2; set DENSEPURE_DEBUG=1 to get the traceback instead.

Diagnostics go through :mod:`logging` (one logger per module, ``logging.getLogger(__name__)``), configured here for
the run of one command: see :func:`cli_logging`. A command's result (a table, the paths written, an estimate) goes
to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import sys
import warnings
from typing import Iterator

from densepure import __version__
from densepure.cli import certify, claims, estimate, models, report, theory
from densepure.job.progress import TERMINAL_LOGGERS

logger = logging.getLogger(__name__)

#: the command families, each a module with ``register(subparsers)`` (parsers whose defaults name their ``run``)
FAMILIES = (certify, models, report, estimate, theory, claims)
DESCRIPTION = """\
Certify classifiers with DensePure (diffusion-purified randomized smoothing, Xiao et al., ICLR 2023) and the one-shot
baseline, and turn per-image results, ours or imported, into the paper's tables, figures and comparisons.
Run densepure COMMAND --help for the options of each command.

Errors a user can cause (bad values, missing files, mismatched checkpoints or votes) print one line and exit with
status 2; set DENSEPURE_DEBUG=1 to get the traceback instead.

Messages (progress, notes, warnings) go to stderr: on a terminal as plain lines, a warning as one line
"warning: <message>"; when stderr is not a terminal (a log file, a Snakemake or Slurm job's log) as dated lines
"2026-01-31 12:00:00 INFO densepure.job.progress: <message>". -v/--verbose adds debug messages, -q/--quiet keeps
warnings and errors only (and no progress bar); both are accepted before or after the command."""

LOG_OPTIONS_TITLE = "messages"
DATED_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
LOGGERS = TERMINAL_LOGGERS  # the loggers the command line configures


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``densepure certify: error: ... (see --help)``, exit status 2. Every parser
    takes -v/--verbose and -q/--quiet; a command's parser leaves them unset unless given, so ``densepure -q certify``
    and ``densepure certify -q`` mean the same."""

    def __init__(self, *args, log_defaults: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        default = False if log_defaults else argparse.SUPPRESS
        group = self.add_argument_group(LOG_OPTIONS_TITLE).add_mutually_exclusive_group()
        group.add_argument("-v", "--verbose", action="store_true", default=default,
                           help="also debug messages")
        group.add_argument("-q", "--quiet", action="store_true", default=default,
                           help="warnings and errors only: no notes, progress bar, progress lines or summary")

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class TerminalFormatter(logging.Formatter):
    """A message as it is; a warning as ``warning: <message>``, an error as ``error: <message>``."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def log_formatter(terminal: bool) -> logging.Formatter:
    """Plain lines for a person at a terminal; dated lines (:data:`DATED_FORMAT`) for a log file."""
    return TerminalFormatter("%(message)s") if terminal else logging.Formatter(DATED_FORMAT, DATE_FORMAT)


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning's message on one line, without its source file and line (``warnings.formatwarning``'s
    signature)."""
    return " ".join(str(message).split())


def log_level(verbose: bool, quiet: bool) -> int:
    """DEBUG with ``verbose``, WARNING with ``quiet``, INFO otherwise."""
    return logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO


@contextlib.contextmanager
def cli_logging(level: int = logging.INFO, stream=None) -> Iterator[None]:
    """Within the block, messages of :data:`LOGGERS` at ``level`` and above go to ``stream`` (stderr), formatted by
    :func:`log_formatter` (plain when ``stream`` is a terminal, dated otherwise), and every Python warning is logged
    as one line (:func:`logging.captureWarnings`, :func:`one_line_warning`). Everything is restored on exit, so a
    command run in-process leaves no handler behind."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(log_formatter(bool(getattr(stream, "isatty", lambda: False)())))
    loggers = [logging.getLogger(name) for name in LOGGERS]
    saved = [lg.level for lg in loggers]
    saved_format = warnings.formatwarning
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(level)
    warnings.formatwarning = one_line_warning
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        warnings.formatwarning = saved_format
        for lg, lvl in zip(loggers, saved):
            lg.removeHandler(handler)
            lg.setLevel(lvl)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="densepure", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                    log_defaults=True)
    parser.add_argument("--version", action="version", version=f"densepure {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for family in FAMILIES:
        family.register(sub)
    return parser


def _out_of_memory(err: BaseException) -> bool:
    """A failed allocation: Python's MemoryError, torch's OutOfMemoryError (CUDA), or the RuntimeError of torch's
    CPU allocator."""
    return (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in str(err))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose and args.quiet:
        parser.error("give -v/--verbose or -q/--quiet, not both")
    with cli_logging(log_level(args.verbose, args.quiet)):
        logger.debug(f"densepure {__version__} (Python {platform.python_version()}): "
                     f"{' '.join(sys.argv[1:] if argv is None else map(str, argv))}")
        return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command; a user's mistake is one line on stderr and status 2 (see the module docstring)."""
    try:
        return args.handler(args)
    except (ValueError, OSError) as err:  # user mistakes: ValueError subclasses; paths the system refuses: OSError
        if os.environ.get("DENSEPURE_DEBUG"):
            raise
        print(f"densepure: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as err:
        if os.environ.get("DENSEPURE_DEBUG") or not _out_of_memory(err):
            raise
        detail = " ".join(str(err).split())[:200]
        print(f"densepure: error: out of memory{': ' + detail if detail else ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ndensepure: interrupted; finished images are kept, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
