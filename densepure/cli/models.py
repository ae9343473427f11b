"""``densepure classifiers``, ``densepure download`` and ``densepure train``: the models a job runs on."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from densepure.cli.args import check_output_path, positive_int

logger = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("classifiers", help="list the registered classifier names",
                       description="List the registered classifiers with their dataset and description, and the "
                                   "other ways to name one (timm models, your own module:function).")
    p.set_defaults(handler=run_classifiers)

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
    p.add_argument("--retries", type=positive_int, default=3, help="attempts before giving up [3]")
    p.add_argument("--extract-to", type=Path, help="also extract the (tar) archive into this folder")
    p.set_defaults(handler=run_download)
    add_train_command(sub)


def add_train_command(sub) -> None:
    """``densepure train {classifier,diffusion}``: the embedded default's small models (densepure.models.train)."""
    p = sub.add_parser("train", help="train the embedded default's small models on the digits (CPU, minutes)",
                       description="Train the embedded default's small models on scikit-learn's 8x8 digits (CPU, "
                                   "minutes). Progress and results go to stderr.")
    models = p.add_subparsers(dest="model", required=True, parser_class=type(p))
    cls = models.add_parser("classifier", help="DigitsCNN classifier (saved as a state dict)",
                            description="Train DigitsCNN on the clean training digits; saves torch.save(state_dict).")
    cls.add_argument("--out", required=True, help="output .pt file (written atomically)")
    cls.add_argument("--seed", type=int, default=0, help="random seed [0]")
    cls.add_argument("--epochs", type=positive_int, default=20, help="training epochs [20]")
    dif = models.add_parser("diffusion", help="digits UNet diffusion model (saved as a bundle)",
                            description="Train the digits UNet as an improved-diffusion model (cosine, T=4000, hybrid "
                                        "loss); saves a bundle loadable by load_diffusion('bundle', path).")
    dif.add_argument("--out", required=True, help="output bundle .pt file (written atomically)")
    dif.add_argument("--seed", type=int, default=0, help="random seed [0]")
    dif.add_argument("--steps", type=positive_int, default=1000, help="training steps [1000]")
    dif.add_argument("--batch", type=positive_int, default=64, help="batch size [64]")
    dif.add_argument("--log-every", type=positive_int, default=50, help="print the loss every N steps [50]")
    for q in (cls, dif):
        q.add_argument("--threads", type=positive_int, help="torch threads [min(4, usable cores // 2), at least 1]")
        q.set_defaults(handler=run_train)


def run_classifiers(args: argparse.Namespace) -> int:
    from densepure.models.classifiers import get_classifier_spec, list_classifiers

    for name in list_classifiers():
        spec = get_classifier_spec(name)
        print(f"{name:18s} {spec.dataset:9s} {spec.description}")
    print("also: timm:<model name> (any timm model), or your own network as an importable module:function")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from densepure.models.download import download

    check_output_path(args.out, "--out")
    check_output_path(args.lock, "--lock")
    if args.extract_to:
        check_output_path(args.extract_to, "--extract-to", folder=True)
    download(args.url, args.out, args.lock, name=args.name, retries=args.retries, extract_to=args.extract_to)
    return 0


def run_train(args: argparse.Namespace) -> int:
    """``densepure train {classifier,diffusion}``: train one model, save it atomically, report to stderr."""
    import torch

    from densepure.files.atomic import atomic_write
    from densepure.models.small_models import DIFFUSION_T
    from densepure.models.train import default_threads, one_shot_mse, torch_threads, train_classifier, train_diffusion

    check_output_path(Path(args.out), "--out")  # before minutes of training
    threads = args.threads or default_threads()
    say = logger.info  # the workflow logs stderr
    start = time.perf_counter()
    if args.model == "classifier":
        say(f"training DigitsCNN: seed {args.seed}, {args.epochs} epochs, {threads} threads")
        model, accuracy = train_classifier(args.seed, args.epochs, threads=threads, progress=say)
        out = atomic_write(args.out, lambda f: torch.save(model.state_dict(), f))
        say(f"test accuracy {accuracy:.4f}  wall time {time.perf_counter() - start:.1f} s  -> {out}")
        return 0
    say(f"training digits diffusion UNet: seed {args.seed}, {args.steps} steps x batch {args.batch}, "
        f"cosine T={DIFFUSION_T}, {threads} threads")
    from densepure.models.diffusion import save_bundle

    net, schedule, log = train_diffusion(args.seed, args.steps, args.batch, log_every=args.log_every,
                                         threads=threads, progress=say)
    out = atomic_write(args.out, lambda f: save_bundle(f, net, schedule))
    say(f"final loss {log.final_loss:.4f}  training time {log.wall_s:.1f} s  -> {out}")
    with torch_threads(threads):
        for sigma in (0.25, 0.5, 1.0):
            purified, noisy = one_shot_mse(net, schedule, sigma)
            say(f"one-shot denoising, test digits, sigma {sigma}: MSE {purified:.4f} (noisy input {noisy:.4f})")
    say(f"wall time {time.perf_counter() - start:.1f} s")
    return 0
