"""Command line of densepure. Run ``densepure COMMAND --help`` for the options of each command.

Errors a user can cause (bad values, missing files, mismatched checkpoints or votes) print one line and exit
with status 2; set DENSEPURE_DEBUG=1 to get the traceback instead.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from . import __version__

EPILOG_THEORY = """\
examples (SPEC is a config file with a `theory` section, e.g. the workflow's work/<run>/config.effective.yaml):
  densepure theory thm31 --spec SPEC --csv thm31.csv --md thm31.md
  densepure theory fig2 --spec SPEC --png fig2.png --pdf fig2.pdf --csv fig2_data.csv
  densepure theory radius --spec SPEC --csv r.csv --md r.md --png r.png --pdf r.pdf
"""

EPILOG_CERTIFY = """\
examples:
  # CIFAR-10, DensePure main setting (sigma 0.25, b 10, 40 votes), images 0, 20, ..., 9980
  densepure certify --dataset cifar10 --data-root data/cifar10 --ids 0:10000:20 \\
      --diffusion improved-cifar10 --diffusion-ckpt checkpoints/cifar10_uncond_50M_500K.pt \\
      --classifier vit-b16-cifar10 --classifier-ckpt checkpoints/vit-b16-cifar10/pytorch_model.bin \\
      --sigma 0.25 --b 10 --K 40 --N0 100 --N 100000 --votes-dir votes/c10 --out c10.tsv
  # Carlini et al.'s one-shot baseline as the DensePure code runs it
  densepure certify ... --method onestep
  # the same votes, faster: bf16, compiled, draws x votes packed into large batches (a different setting: bf16)
  densepure certify ... --mode fast --compile-cache .cache/torch-compile
  # your own data and networks (importable module:function names; a timm model by name)
  densepure certify --dataset pets --dataset-loader image_folder --data-root data/pets --ids 0:100 \\
      --diffusion mypackage.nets:make_unet --diffusion-schedule linear:1000 --diffusion-ckpt ckpt/unet.pt \\
      --classifier my-resnet --classifier-model timm:resnet18 --classifier-ckpt ckpt/resnet18.pth \\
      --sigma 0.25 --b 10 --K 40 --votes-dir votes/pets --out pets.tsv

Kill it at any time: rerunning the same command resumes after the last finished image.
"""


def _number(text: str, kind: type) -> float | int:
    try:
        return kind(text)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def _int(text: str) -> int:
    return _number(text, int)


def _positive_float(text: str) -> float:
    value = _number(text, float)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _alpha(text: str) -> float:
    value = _number(text, float)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def add_setting_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to certify")
    g.add_argument("--dataset", required=True,
                   help="cifar10, imagenet or digits (embedded); with --dataset-loader, any name for your own data")
    g.add_argument("--dataset-loader", metavar="LOADER",
                   help="your own data: image_folder (class folders under --data-root) or an importable "
                        "module:function(root) returning (image in [0,1], label) pairs")
    g.add_argument("--data-root", help="dataset folder (CIFAR-10: contains cifar-10-batches-py/; ImageNet: val/ "
                   "in class folders); not needed for digits")
    g.add_argument("--ids", required=True, help="test-set image ids: start:stop:step, 0,20,40 or @file")
    g = p.add_argument_group("models")
    g.add_argument("--diffusion", required=True,
                   help="guided-imagenet256 (OpenAI 256x256 uncond), improved-cifar10 (50M, L_hybrid), bundle "
                        "(a densepure .pt file that carries its own UNet config and schedule), or your own "
                        "eps-predicting network as an importable module:function (with --diffusion-schedule)")
    g.add_argument("--diffusion-ckpt", type=Path,
                   help="diffusion checkpoint file (for a module:function: an optional state dict to load)")
    g.add_argument("--diffusion-schedule", metavar="KIND:T",
                   help="noise schedule of a module:function diffusion model, e.g. linear:1000 or cosine:4000")
    g.add_argument("--classifier", required=True,
                   help="registered classifier name (see `densepure classifiers`), timm:<model name>, or your own "
                        "network as an importable module:function(num_classes)")
    g.add_argument("--classifier-model", metavar="MODEL",
                   help="what builds the classifier (timm:<model name> or module:function) when --classifier is "
                        "only the name the results carry")
    g.add_argument("--classifier-ckpt", type=Path,
                   help="classifier weights file (never downloaded at run time; optional for a module:function)")
    g.add_argument("--preprocessing", choices=["reference", "correct"], default="reference",
                   help="classifier input preprocessing: the reference's (default; some models get un-normalised "
                        "inputs) or the model's correct normalisation")
    g = p.add_argument_group("smoothing and purification")
    g.add_argument("--sigma", type=_positive_float, required=True, help="smoothing noise std in pixel space [0,1]")
    g.add_argument("--b", type=_positive_int, default=10, help="reverse steps (1 = one-shot denoiser) [10]")
    g.add_argument("--K", type=_positive_int, default=40, help="votes (reverse runs) per noisy draw [40]")
    g.add_argument("--N0", type=_positive_int, default=100, help="draws for class selection [100]")
    g.add_argument("--N", type=_positive_int, default=100_000, help="draws for estimation [100000]")
    g.add_argument("--alpha", type=_alpha, default=0.001, help="failure probability [0.001]")
    g.add_argument("--seed", type=_int, default=0,
                   help="run seed addressing all noise, 0..4294967295 [0]")
    g.add_argument("--method", choices=["densepure", "onestep", "carlini"], default="densepure",
                   help="densepure: b-step reverse (b=1 runs the one-shot); onestep: DensePure code's one-shot "
                        "(the paper's 'Carlini22' rows); carlini: Carlini et al.'s own code path")
    g.add_argument("--timestep-rule", choices=["reference", "paper"], default="reference",
                   help="sigma -> t*: as the reference code computes it (default) or the paper's Alg. 2")
    g = p.add_argument_group("execution", "--mode picks a preset; an option given explicitly overrides it")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N [auto]")
    g.add_argument("--mode", choices=["custom", "reference", "fast"], default="custom",
                   help="custom: the options below at their own defaults; reference: what the reference code runs "
                        "(ImageNet UNet fp16, CIFAR-10 fp32, einsum attention, batches of 16 (ImageNet) or 100 draws "
                        "of one vote, every vote from scratch, fp32 classifier); fast: bf16 UNet and classifier, "
                        "SDPA, channels_last, draws x votes packed into batches of 80 (ImageNet) or 1000 rows, "
                        "shared first step, torch.compile on CUDA [custom]")
    g.add_argument("--precision", choices=["fp32", "fp16", "bf16"],
                   help="UNet torso precision (the reference ran ImageNet in fp16) [custom: fp32]")
    g.add_argument("--attention", choices=["sdpa", "einsum"],
                   help="attention kernel: PyTorch SDPA or the reference's einsum order [custom: sdpa]")
    g.add_argument("--classifier-precision", choices=["fp32", "fp16", "bf16"],
                   help="classifier network under autocast in this precision; preprocessing stays fp32 "
                        "[custom: fp32]")
    g.add_argument("--batch", type=_positive_int,
                   help="network rows per batch: draws x votes with the shared first step, else draws of one "
                        "vote [custom: 100]")
    g.add_argument("--shared-first-step", action=argparse.BooleanOptionalAction, default=None,
                   help="run the first reverse step once per draw for its K votes (same votes, fewer UNet calls) "
                        "[custom: yes]")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="UNet weights and activations in channels_last memory format [custom: no]")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the UNet and the classifier network [custom: no; fast: on CUDA]")
    g.add_argument("--compile-cache", type=Path,
                   help="folder where torch.compile keeps its kernels for later runs [torch's default]")
    g.add_argument("--threads", type=_positive_int, help="CPU threads for PyTorch [PyTorch's default]")
    g = p.add_argument_group("progress", "on a terminal a progress bar; in a log file (stderr not a terminal) one line "
                             "per finished image, at most one per --log-interval, and a summary at the end")
    g.add_argument("--quiet", action="store_true", help="no progress bar, lines or summary")
    g.add_argument("--log-interval", type=_non_negative_float, default=60.0, metavar="SECONDS",
                   help="in a log file, at most one progress line per SECONDS (0: every image and batch) [60]")
    g = p.add_argument_group("exact savings", "each computes less without changing any certified output at the "
                                                "served Ks (label, predict, radius, correct)")
    g.add_argument("--Ks", type=_positive_int, nargs="+",
                   help="vote counts K' <= K whose results the votes must serve (e.g. 1 3 5 10 for an ablation); "
                        "only those can be aggregated later [K]")
    g.add_argument("--lazy-votes", action=argparse.BooleanOptionalAction, default=True,
                   help="compute each draw's votes in rounds until its majority at every served K' is settled "
                        "[yes]")
    g.add_argument("--stop-abstain", action=argparse.BooleanOptionalAction, default=True,
                   help="stop an image's estimation draws once it abstains at every served K' whatever the rest "
                        "vote [yes]")
    g.add_argument("--skip-hopeless", action=argparse.BooleanOptionalAction, default=False,
                   help="skip the estimation draws of an image whose selected class is not its label at every "
                        "served K' (it counts at no radius; its TSV row has an empty predict and radius, stop "
                        "'hopeless') [no]")
    g.add_argument("--checkpoint-seconds", type=_positive_float, default=300.0,
                   help="save the votes of the images in progress this often: a killed job loses at most this "
                        "much work [300]")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``densepure certify: error: ... (see --help)``, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_train_command(sub) -> None:
    """``densepure train {classifier,diffusion}``: the embedded default's small models (densepure.train)."""
    p = sub.add_parser("train", help="train the embedded default's small models on the digits (CPU, minutes)",
                       description="Train the embedded default's small models on scikit-learn's 8x8 digits (CPU, "
                                   "minutes). Progress and results go to stderr.")
    models = p.add_subparsers(dest="model", required=True, parser_class=Parser)
    cls = models.add_parser("classifier", help="DigitsCNN classifier (saved as a state dict)",
                            description="Train DigitsCNN on the clean training digits; saves torch.save(state_dict).")
    cls.add_argument("--out", required=True, help="output .pt file (written atomically)")
    cls.add_argument("--seed", type=int, default=0, help="random seed [0]")
    cls.add_argument("--epochs", type=_positive_int, default=20, help="training epochs [20]")
    dif = models.add_parser("diffusion", help="digits UNet diffusion model (saved as a bundle)",
                            description="Train the digits UNet as an improved-diffusion model (cosine, T=4000, hybrid "
                                        "loss); saves a bundle loadable by load_diffusion('bundle', path).")
    dif.add_argument("--out", required=True, help="output bundle .pt file (written atomically)")
    dif.add_argument("--seed", type=int, default=0, help="random seed [0]")
    dif.add_argument("--steps", type=_positive_int, default=1000, help="training steps [1000]")
    dif.add_argument("--batch", type=_positive_int, default=64, help="batch size [64]")
    dif.add_argument("--log-every", type=_positive_int, default=50, help="print the loss every N steps [50]")
    for q in (cls, dif):
        q.add_argument("--threads", type=_positive_int, help="torch threads [min(4, usable cores // 2), at least 1]")


def add_theory_command(sub) -> None:
    """``densepure theory {thm31,fig2,radius}``: Section 3 of the paper on an exact diffusion model."""
    p = sub.add_parser("theory", help="Section 3 of the paper on an exact diffusion model (CPU, seconds)",
                       description="Section 3 of the paper on an exact diffusion model (a Gaussian mixture whose "
                                   "noised score is closed form): Theorem 3.1, Theorem 3.3 / Figure 2, and the "
                                   "certified radius of the majority vote vs the one-shot posterior mean.",
                       epilog=EPILOG_THEORY, formatter_class=argparse.RawDescriptionHelpFormatter)
    artifacts = p.add_subparsers(dest="theory_command", required=True, parser_class=Parser)
    q = artifacts.add_parser("thm31", help="Theorem 3.1: the b-step sampler against the exact posterior (table)")
    q.add_argument("--spec", required=True, help="config YAML with a `theory` section")
    q.add_argument("--csv", required=True)
    q.add_argument("--md", required=True)
    q = artifacts.add_parser("fig2", help="Theorem 3.3 / Figure 2: robust region, sub-regions, r and r_sub "
                             "(figure + data)")
    q.add_argument("--spec", required=True, help="config YAML with a `theory` section")
    q.add_argument("--png", required=True)
    q.add_argument("--pdf", required=True)
    q.add_argument("--csv", required=True, help="the plotted numbers")
    q = artifacts.add_parser("radius", help="certified radius: DensePure majority vote vs one-shot posterior mean")
    q.add_argument("--spec", required=True, help="config YAML with a `theory` section")
    for name in ("csv", "md", "png", "pdf"):
        q.add_argument(f"--{name}", required=True)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="densepure", description=__doc__)
    parser.add_argument("--version", action="version", version=f"densepure {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("certify", help="compute votes and certified radii for one setting",
                       description="Certify images with DensePure (or the one-shot baseline): N0 + N noisy draws "
                                   "per image, K purified votes per draw, Cohen et al.'s certification.",
                       epilog=EPILOG_CERTIFY, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_setting_arguments(p)
    g = p.add_argument_group("outputs")
    g.add_argument("--votes-dir", required=True, type=Path, help="votes store (one file per image)")
    g.add_argument("--out", required=True, type=Path, help="per-image TSV (idx label predict radius correct time ...)")
    g.add_argument("--one-shot-votes-dir", type=Path,
                   help="also write the one-shot baseline (--method onestep) of the same draws into this store: "
                        "its network call is DensePure's first step, so it costs one classifier call per draw")
    g.add_argument("--one-shot-ids", help="only these of --ids get one-shot votes [all of --ids]")
    g.add_argument("--one-shot-out", type=Path, help="per-image TSV of the one-shot store")

    p = sub.add_parser("aggregate", help="certify stored votes for every K' <= K",
                       description="Majority vote over the first K' votes of each draw and certify; one TSV per K'. "
                                   "Several stores of the same setting with different K may be combined (votes are "
                                   "nested in K).")
    p.add_argument("--votes-dir", required=True, type=Path, nargs="+",
                   help="votes stores written by `densepure certify` (same setting but K)")
    p.add_argument("--K", type=_positive_int, nargs="+", required=True, help="vote counts K' to certify with")
    p.add_argument("--alpha", type=_alpha, default=0.001, help="failure probability [0.001]")
    p.add_argument("--ids", help="restrict to these ids (default: all stored)")
    p.add_argument("--out", required=True, help="output TSV path pattern containing {K}, e.g. out/K{K}.tsv")

    sub.add_parser("classifiers", help="list the registered classifier names")

    p = sub.add_parser("download", help="download a file with retries and verify its sha256 against a lock file",
                       description="Download URL to OUT with pooch (retries, progress bar), checked against the "
                                   "lock file's sha256 before it is kept: a mismatch keeps nothing. A file with no "
                                   "digest in the lock file is trusted on first use: its sha256 is recorded there. "
                                   "An OUT that already matches its digest is not downloaded again.")
    p.add_argument("--url", required=True, help="public URL (http, https or ftp)")
    p.add_argument("--out", required=True, type=Path, help="destination file")
    p.add_argument("--lock", required=True, type=Path,
                   help="lock file of '<sha256>  <name>' lines (or 'sha256-prefix:<hex>  <name>')")
    p.add_argument("--name", help="the file's key in the lock file [its file name]")
    p.add_argument("--retries", type=_positive_int, default=3, help="attempts before giving up [3]")
    p.add_argument("--extract-to", type=Path, help="also extract the (tar) archive into this folder")

    from .report import add_report_commands

    add_report_commands(sub)

    from .estimate import add_estimate_command

    add_estimate_command(sub)
    add_train_command(sub)
    add_theory_command(sub)
    return parser


def _out_of_memory(err: BaseException) -> bool:
    """A failed allocation: Python's MemoryError, torch's OutOfMemoryError (CUDA), or the RuntimeError of torch's
    CPU allocator."""
    return (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in str(err))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import commands

    try:
        return commands.run(args)
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
