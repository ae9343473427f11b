"""``densepure certify`` and ``densepure aggregate``: compute votes for one setting, and certify stored votes."""

from __future__ import annotations

import argparse
import logging
import os
import string
import sys
from dataclasses import replace
from pathlib import Path

from densepure.cli.args import (
    alpha,
    check_output_path,
    integer,
    nearest_existing,
    non_negative_float,
    positive_float,
    positive_int,
)

logger = logging.getLogger(__name__)

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

Kill it at any time: rerunning the same command resumes the images in progress from their last checkpoint
(--checkpoint-seconds) and skips the finished ones; what the kill left behind (temp files, a checkpoint of an image
it had just finished) is removed. A checkpoint of a job at another --K is resumed too.

Grow a store by running again with more --Ks, a larger --K or a larger --alpha: only the missing votes are computed
(an image stopped by certain abstention at a smaller alpha is extended), and the TSV is written from what each image
serves after the job. A smaller --K reads a grown store; jobs at different --K may share one store, even at the same
time. --method onestep and carlini give one vote per draw in one step: they are recorded as --b 1 --K 1.
"""


def json_kwargs(text: str) -> dict:
    """A ``--*-kwargs`` value: a JSON object, e.g. ``'{"in_chans": 1}'``."""
    import json

    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"in_chans\": 1}}', got {text!r}")
    return value


def add_setting_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to certify")
    g.add_argument("--dataset", required=True,
                   help="cifar10, imagenet or digits (embedded); with --dataset-loader, any name for your own data")
    g.add_argument("--dataset-loader", metavar="LOADER",
                   help="your own data: image_folder (class folders under --data-root) or an importable "
                        "module:function(root) returning (image in [0,1], label) pairs, or a name an installed "
                        "package registers (densepure.datasets)")
    g.add_argument("--dataset-kwargs", type=json_kwargs, metavar="JSON",
                   help="keyword arguments of your own loader, a JSON object")
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
    g.add_argument("--diffusion-kwargs", type=json_kwargs, metavar="JSON",
                   help="keyword arguments of your own diffusion network's function, a JSON object")
    g.add_argument("--diffusion-schedule", metavar="KIND:T",
                   help="noise schedule of a module:function diffusion model, e.g. linear:1000 or cosine:4000")
    g.add_argument("--classifier", required=True,
                   help="registered classifier name (see `densepure classifiers`), timm:<model name>, or your own "
                        "network as an importable module:function(num_classes)")
    g.add_argument("--classifier-model", metavar="MODEL",
                   help="what builds the classifier (timm:<model name> or module:function) when --classifier is "
                        "only the name the results carry")
    g.add_argument("--classifier-kwargs", type=json_kwargs, metavar="JSON",
                   help="keyword arguments of a timm: or your own classifier, a JSON object, e.g. '{\"in_chans\": 1}'")
    g.add_argument("--classifier-ckpt", type=Path,
                   help="classifier weights file (never downloaded at run time; optional for a module:function)")
    g.add_argument("--preprocessing", choices=["reference", "correct"], default="reference",
                   help="classifier input preprocessing: the reference's (default; some models get un-normalised "
                        "inputs) or the model's correct normalisation")
    g = p.add_argument_group("smoothing and purification")
    g.add_argument("--sigma", type=positive_float, required=True, help="smoothing noise std in pixel space [0,1]")
    g.add_argument("--b", type=positive_int, help="reverse steps (1 = one-shot denoiser) [10; one-shot methods: 1]")
    g.add_argument("--K", type=positive_int, help="votes (reverse runs) per noisy draw [40; one-shot: 1]")
    g.add_argument("--N0", type=positive_int, default=100, help="draws for class selection [100]")
    g.add_argument("--N", type=positive_int, default=100_000, help="draws for estimation [100000]")
    g.add_argument("--alpha", type=alpha, default=0.001, help="failure probability [0.001]")
    g.add_argument("--seed", type=integer, default=0,
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
    g.add_argument("--batch", type=positive_int,
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
    g.add_argument("--threads", type=positive_int, help="CPU threads for PyTorch [PyTorch's default]")
    g = p.add_argument_group("progress", "on a terminal a progress bar; in a log file (stderr not a terminal) one line "
                             "per finished image, at most one per --log-interval, and a summary at the end "
                             "(-q/--quiet: none of them)")
    g.add_argument("--log-interval", type=non_negative_float, default=60.0, metavar="SECONDS",
                   help="in a log file, at most one progress line per SECONDS (0: every image and batch) [60]")
    g = p.add_argument_group("exact savings", "each computes less without changing any certified output at the "
                                                "served Ks (label, predict, radius, correct)")
    g.add_argument("--Ks", type=positive_int, nargs="+",
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
    g.add_argument("--checkpoint-seconds", type=positive_float, default=300.0,
                   help="save the votes of the images in progress this often: a killed job loses at most this "
                        "much work [300]")


def register(sub) -> None:
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
    p.set_defaults(handler=run_certify)

    p = sub.add_parser("aggregate", help="certify stored votes for every K' <= K",
                       description="Majority vote over the first K' votes of each draw and certify; one TSV per K'. "
                                   "Several stores of the same setting with different K may be combined (votes are "
                                   "nested in K).")
    p.add_argument("--votes-dir", required=True, type=Path, nargs="+",
                   help="votes stores written by `densepure certify` (same setting but K)")
    p.add_argument("--K", type=positive_int, nargs="+", required=True, help="vote counts K' to certify with")
    p.add_argument("--alpha", type=alpha, default=0.001, help="failure probability [0.001]")
    p.add_argument("--ids", help="restrict to these ids: start:stop:step, 0,20,40 or @file, every one of them stored "
                                 "(default: all stored)")
    p.add_argument("--out", required=True, help="output TSV path pattern containing {K}, e.g. out/K{K}.tsv")
    p.set_defaults(handler=run_aggregate)


def execution_from_args(args: argparse.Namespace, device=None):
    """The :class:`densepure.job.execution.Execution` of a ``certify`` command line: the mode's preset with the
    options given explicitly."""
    from densepure.job.execution import resolve_execution

    cache = getattr(args, "compile_cache", None)
    return resolve_execution(
        getattr(args, "mode", "custom"), args.dataset, getattr(device, "type", "cpu"), precision=args.precision,
        attention=args.attention, batch=args.batch, classifier_precision=getattr(args, "classifier_precision", None),
        shared_first_step=getattr(args, "shared_first_step", None), channels_last=getattr(args, "channels_last", None),
        compile=getattr(args, "compile", None), compile_cache=str(cache) if cache else None)


def plugin_extra(args: argparse.Namespace) -> dict:
    """What else defines the votes when a certify command line names your own models or data (empty otherwise):
    the classifier that builds ``--classifier``, the dataset loader, a diffusion schedule, the kwargs of each. (Data
    of your own adds its number of classes, which aggregation needs.)"""
    options = ("classifier_model", "dataset_loader", "diffusion_schedule", "classifier_kwargs", "dataset_kwargs",
               "diffusion_kwargs")
    return {option: getattr(args, option) for option in options if getattr(args, option, None)}


DEFAULT_B, DEFAULT_K = 10, 40


def one_shot_options(args: argparse.Namespace) -> list[str]:
    """Fill in ``--b``, ``--K`` (and ``--Ks``) of a ``certify`` command line: their defaults, and 1 for a one-shot job
    (``--method onestep`` or ``carlini``, or ``--b 1``), which purifies each draw in one network call and gives it one
    vote whatever they say. Recording b = 1, K = 1 makes the store the same setting as the one-shot store a DensePure
    job writes beside its own (``--one-shot-votes-dir``) and as the workflow's one-shot stores, and its K the votes
    it holds (so aggregating it at K' > 1 is refused). Returns the options given that were replaced, for a note.
    Idempotent."""
    from densepure.core.methods import ONE_SHOT_METHODS, is_one_shot

    replaced = []
    if args.method in ONE_SHOT_METHODS:
        if args.b not in (None, 1):
            replaced.append(f"--b {args.b}")
        args.b = 1
    elif args.b is None:
        args.b = DEFAULT_B
    if is_one_shot(args.method, args.b):
        if args.K not in (None, 1):
            replaced.append(f"--K {args.K}")
        if getattr(args, "Ks", None) and args.Ks != [1]:
            replaced.append("--Ks " + " ".join(map(str, args.Ks)))
        args.K = 1
        if getattr(args, "Ks", None):
            args.Ks = [1]
    elif args.K is None:
        args.K = DEFAULT_K
    return replaced


def setting_from_args(args: argparse.Namespace, execution=None):
    """The votes-defining setting of a ``certify`` command line. A classifier precision other than fp32 changes
    the votes, so it is recorded (under ``extra``, which stays empty otherwise), as do your own models and data
    (:func:`plugin_extra`)."""
    from densepure.job.results import Setting

    one_shot_options(args)
    execution = execution or execution_from_args(args)
    extra = {} if execution.classifier_precision == "fp32" else {"classifier_precision": execution.classifier_precision}
    extra.update(plugin_extra(args))
    setting = Setting(
        dataset=args.dataset, diffusion=args.diffusion, classifier=args.classifier, sigma=args.sigma, b=args.b,
        K=args.K, N0=args.N0, N=args.N, seed=args.seed, method=args.method, timestep_rule=args.timestep_rule,
        preprocessing=args.preprocessing, precision=execution.precision, attention=execution.attention, extra=extra,
    )
    setting.validate()
    return setting


def check_ids(ids: list[int], length: int, dataset: str) -> None:
    from densepure.models.datasets import DataError

    bad = [i for i in ids if not 0 <= i < length]
    if bad:
        raise DataError(f"image id {bad[0]} is out of range for {dataset} (0..{length - 1})")
    if not ids:
        raise DataError("no image ids to certify")


def unique_ids(ids: list[int], what: str = "image ids") -> list[int]:
    """The ids in order, each once (a list like ``0:100,50`` names 50 twice: it is certified once)."""
    seen = list(dict.fromkeys(ids))
    if len(seen) < len(ids):
        logger.warning(f"{len(ids) - len(seen)} repeated {what} are certified once")
    return seen


def writable_directory(directory: Path) -> None:
    """Write and remove a probe file in ``directory`` (or, before it exists, the nearest folder above it that does):
    a read-only folder or a full disk is found before any model is loaded or image computed, and nothing is
    created."""
    from densepure.files.atomic import WriteError, probe_writable

    directory = Path(directory)
    try:
        probe_writable(nearest_existing(directory))
    except WriteError as err:
        raise WriteError(f"{directory} cannot be written: {err}") from None


def run_certify(args: argparse.Namespace) -> int:
    import torch

    from densepure.core.lazy import Savings
    from densepure.core.methods import is_one_shot
    from densepure.core.rng import check_count, check_seed
    from densepure.job.assemble import certify_images
    from densepure.job.execution import resolve_device
    from densepure.job.progress import JobProgress
    from densepure.models.checkpoints import checkpoint_digests
    from densepure.models.classifiers import build_classifier, check_classifier_dataset
    from densepure.models.datasets import NUM_CLASSES, DataError, check_dataset, load_dataset, parse_ids
    from densepure.models.diffusion import load_diffusion

    replaced = one_shot_options(args)  # the note comes with the job's end: an error stays the one line it prints
    check_seed(args.seed, "--seed")
    check_count(args.N0 + args.N, "--N0 + --N")
    check_count(args.K, "--K")
    check_output_path(args.votes_dir, "--votes-dir", folder=True)
    check_output_path(args.out, "--out")
    if not args.dataset_loader:
        check_dataset(args.dataset)
        if not args.classifier_model:
            check_classifier_dataset(args.classifier, args.dataset)
    if args.threads:
        if args.threads > (os.cpu_count() or 1):
            raise ValueError(f"--threads {args.threads}: this machine has {os.cpu_count()} CPUs")
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    execution = execution_from_args(args, device)
    setting = setting_from_args(args, execution)
    Ks = sorted(set(args.Ks or [args.K]))
    if Ks[-1] > args.K:
        raise ValueError(f"--Ks {Ks[-1]} exceeds --K {args.K} (the votes computed per draw)")
    savings = Savings(lazy_votes=args.lazy_votes, skip_hopeless=args.skip_hopeless, stop_abstain=args.stop_abstain)
    dataset = load_dataset(args.dataset, args.data_root, loader=args.dataset_loader, kwargs=args.dataset_kwargs)
    if args.dataset_loader or args.dataset not in NUM_CLASSES:
        setting = replace(setting, extra={**setting.extra, "num_classes": dataset.num_classes})
    ids = unique_ids(parse_ids(args.ids, limit=len(dataset)))
    check_ids(ids, len(dataset), args.dataset)
    if args.one_shot_votes_dir and is_one_shot(args.method, args.b):
        raise ValueError("--one-shot-votes-dir needs a DensePure job (--method densepure, --b >= 2)")
    os_ids = None
    if args.one_shot_votes_dir:
        check_output_path(args.one_shot_votes_dir, "--one-shot-votes-dir", folder=True)
        os_ids = unique_ids(parse_ids(args.one_shot_ids)) if args.one_shot_ids else ids
        if set(os_ids) - set(ids):
            raise DataError(f"--one-shot-ids: image {sorted(set(os_ids) - set(ids))[0]} is not in --ids")
    for directory in (args.votes_dir, args.one_shot_votes_dir, args.out.parent):
        if directory is not None:
            writable_directory(directory)
    net, schedule = load_diffusion(args.diffusion, args.diffusion_ckpt, device=device, precision=execution.precision,
                                   attention=execution.attention, schedule_spec=args.diffusion_schedule,
                                   kwargs=args.diffusion_kwargs)
    classifier = build_classifier(args.classifier_model or args.classifier, checkpoint=args.classifier_ckpt,
                                  preprocessing=args.preprocessing, num_classes=dataset.num_classes, device=device,
                                  **(args.classifier_kwargs or {}))
    setting = replace(setting, checkpoints=checkpoint_digests(args.diffusion_ckpt, args.classifier_ckpt))
    with JobProgress(len(ids), args.N0 + args.N, stream=None if args.quiet else sys.stderr,
                     interval=args.log_interval) as progress:
        certify_images(setting, net, schedule, classifier, dataset, ids, args.votes_dir, args.out, Ks=Ks,
                       alpha=args.alpha, execution=execution, device=device, savings=savings,
                       one_shot_votes_dir=args.one_shot_votes_dir, one_shot_ids=os_ids,
                       one_shot_out=args.one_shot_out, checkpoint_seconds=args.checkpoint_seconds, progress=progress)
    if replaced:
        logger.warning(f"a one-shot job (--method {args.method}) purifies each draw in one step and gives it "
                       f"one vote: recorded as --b 1 --K 1, not {' '.join(replaced)}")
    return 0


def output_paths(pattern: str, Ks: list[int]) -> dict[int, Path]:
    """The TSV path of each K' from an ``--out`` pattern holding ``{K}`` and no other placeholder."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None}
        paths = {K: Path(pattern.format(K=K)) for K in Ks} if fields == {"K"} else None
    except (ValueError, KeyError, IndexError, AttributeError):
        paths = None
    if paths is None or len(set(paths.values())) < len(set(Ks)):
        raise ValueError(f"--out must contain {{K}} and no other placeholder, e.g. out/K{{K}}.tsv; got {pattern!r}")
    return paths


def run_aggregate(args: argparse.Namespace) -> int:
    from densepure.job.aggregate import aggregate_stores
    from densepure.models.datasets import NUM_CLASSES, parse_ids

    paths = output_paths(args.out, unique_ids(args.K, "K' values"))
    for path in paths.values():
        check_output_path(path, "--out")
    # a comma list is read whole (it may name an image twice: certified once); a range or @file is refused before it
    # is listed when it holds more ids than are stored
    plain_list = args.ids is not None and not args.ids.startswith("@") and ":" not in args.ids
    ids = (lambda stored: unique_ids(parse_ids(args.ids, limit=None if plain_list else stored))) if args.ids else None
    aggregate_stores(args.votes_dir, paths, args.alpha, ids, lambda setting: NUM_CLASSES[setting.dataset])
    return 0
