"""Command line of densepure. Run ``densepure COMMAND --help`` for the options of each command.

Errors a user can cause (bad values, missing files, mismatched checkpoints or votes) print one line and exit
with status 2; set DENSEPURE_DEBUG=1 to get the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys

from densepure import __version__
from densepure.cli import certify, estimate, models, report, theory

#: the command families, each a module with ``register(subparsers)`` (parsers whose defaults name their ``run``)
FAMILIES = (certify, models, report, estimate, theory)
DESCRIPTION = """\
Certify classifiers with DensePure (diffusion-purified randomized smoothing, Xiao et al., ICLR 2023) and the one-shot
baseline, and turn per-image results, ours or imported, into the paper's tables, figures and comparisons.
Run densepure COMMAND --help for the options of each command.

Errors a user can cause (bad values, missing files, mismatched checkpoints or votes) print one line and exit with
status 2; set DENSEPURE_DEBUG=1 to get the traceback instead."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``densepure certify: error: ... (see --help)``, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="densepure", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    args = build_parser().parse_args(argv)
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
