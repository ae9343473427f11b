"""What each CLI command does, given parsed arguments. User mistakes raise ValueError subclasses."""

from __future__ import annotations

import argparse
import os
import re
import string
import sys
from dataclasses import replace
from pathlib import Path

from .data import NUM_CLASSES, DataError, check_dataset, load_dataset, parse_ids
from .results import Setting, result_row, write_tsv
from .votes import VotesError, VotesStore


def resolve_device(name: str):
    """``auto`` is the first CUDA device when there is one, else the CPU; ``cpu``, ``cuda`` and ``cuda:N`` must exist
    (:data:`densepure.execution.DEVICE_PATTERN`)."""
    import torch

    from .execution import DEVICE_PATTERN

    if not re.fullmatch(DEVICE_PATTERN, name):
        raise ValueError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        index, count = int(name.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise ValueError(f"device {name!r} requested but there are {count} CUDA devices (cuda:0..cuda:{count - 1})")
    return torch.device(name)


def nearest_existing(path: Path) -> Path:
    """``path`` if it exists, else the nearest folder above it that does (the current folder at worst)."""
    return next((p for p in (path, *path.parents) if p.exists()), Path("."))


def check_writable(path: Path, option: str, folder: bool = False) -> None:
    """Refuse, before any work, an output ``path`` that cannot be written: a file where a folder is needed (or the
    other way round), a file on the way to it, or a nearest existing folder that is not writable."""
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        found, wanted = ("file", "folder") if folder else ("folder", "file")
        raise ValueError(f"{option} {path} is a {found}; expected a {wanted}")
    existing = nearest_existing(path if folder else path.parent)
    if not existing.is_dir():
        raise ValueError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: {existing} is not writable")


def check_classifier_dataset(classifier: str, dataset: str) -> None:
    """Refuse a registered classifier of another dataset (its input size, channels or classes would not fit)."""
    from .classifiers import get_classifier_spec

    spec = get_classifier_spec(classifier)
    if spec.dataset and spec.dataset != dataset:
        raise ValueError(f"classifier {classifier!r} is for {spec.dataset}, not {dataset} "
                         "(see `densepure classifiers`)")


def execution_from_args(args: argparse.Namespace, device=None):
    """The :class:`densepure.execution.Execution` of a ``certify`` command line: the mode's preset with the options
    given explicitly."""
    from .execution import resolve_execution

    cache = getattr(args, "compile_cache", None)
    return resolve_execution(
        getattr(args, "mode", "custom"), args.dataset, getattr(device, "type", "cpu"), precision=args.precision,
        attention=args.attention, batch=args.batch, classifier_precision=getattr(args, "classifier_precision", None),
        shared_first_step=getattr(args, "shared_first_step", None), channels_last=getattr(args, "channels_last", None),
        compile=getattr(args, "compile", None), compile_cache=str(cache) if cache else None)


def plugin_extra(args: argparse.Namespace) -> dict:
    """What else defines the votes when a certify command line names your own models or data (empty otherwise):
    the classifier that builds ``--classifier``, the dataset loader, a diffusion schedule. (A loaded dataset adds
    its number of classes, which aggregation needs.)"""
    options = ("classifier_model", "dataset_loader", "diffusion_schedule")
    return {option: getattr(args, option) for option in options if getattr(args, option, None)}


def setting_from_args(args: argparse.Namespace, execution=None) -> Setting:
    """The votes-defining setting of a ``certify`` command line. A classifier precision other than fp32 changes
    the votes, so it is recorded (under ``extra``, which stays empty otherwise), as do your own models and data
    (:func:`plugin_extra`)."""
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


def checkpoint_digests(diffusion_ckpt: str | Path, classifier_ckpt: str | Path | None) -> dict:
    """sha256 of the weights files a certification job loads (None where there is none: random weights, or your
    own network that loads its weights itself): part of the votes' setting. Call after the models loaded (they
    report a missing file)."""
    from .classifiers import checkpoint_file
    from .download import sha256

    return {"diffusion": sha256(diffusion_ckpt) if diffusion_ckpt else None,
            "classifier": sha256(checkpoint_file(classifier_ckpt)) if classifier_ckpt else None}


def check_ids(ids: list[int], length: int, dataset: str) -> None:
    bad = [i for i in ids if not 0 <= i < length]
    if bad:
        raise DataError(f"image id {bad[0]} is out of range for {dataset} (0..{length - 1})")
    if not ids:
        raise DataError("no image ids to certify")


def one_shot_setting(setting: Setting) -> Setting:
    """The setting of the one-shot baseline (DensePure's own one-shot, the paper's "Carlini" rows) on the same
    draws and models: what a separate ``--method onestep --b 1 --K 1`` job records."""
    return replace(setting, method="onestep", b=1, K=1)


def savings_from_args(args: argparse.Namespace):
    from .lazy import Savings

    return Savings(lazy_votes=args.lazy_votes, skip_hopeless=args.skip_hopeless, stop_abstain=args.stop_abstain)


def served_Ks(args: argparse.Namespace) -> list[int]:
    Ks = sorted(set(args.Ks or [args.K]))
    if Ks[-1] > args.K:
        raise ValueError(f"--Ks {Ks[-1]} exceeds --K {args.K} (the votes computed per draw)")
    return Ks


def certify(args: argparse.Namespace) -> int:
    import torch

    from .certify import Purifier, StoreTarget, prepare_models, run_certification
    from .progress import JobProgress
    from .classifiers import build_classifier
    from .diffusion import load_diffusion
    from .rng import check_count, check_seed
    from .schedule import make_plan, one_shot_plan

    check_seed(args.seed, "--seed")
    check_count(args.N0 + args.N, "--N0 + --N")
    check_count(args.K, "--K")
    check_writable(args.votes_dir, "--votes-dir", folder=True)
    check_writable(args.out, "--out")
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
    Ks = served_Ks(args)
    savings = savings_from_args(args)
    dataset = load_dataset(args.dataset, args.data_root, loader=args.dataset_loader)
    if args.dataset_loader:
        setting = replace(setting, extra={**setting.extra, "num_classes": dataset.num_classes})
    ids = unique_ids(parse_ids(args.ids, limit=len(dataset)))
    check_ids(ids, len(dataset), args.dataset)
    one_shot_job = args.method in ("onestep", "carlini") or args.b == 1
    if args.one_shot_votes_dir and one_shot_job:
        raise ValueError("--one-shot-votes-dir needs a DensePure job (--method densepure, --b >= 2)")
    rows = args.N0 + args.N
    if args.one_shot_votes_dir:
        check_writable(args.one_shot_votes_dir, "--one-shot-votes-dir", folder=True)
    for directory in (args.votes_dir, args.one_shot_votes_dir, args.out.parent):
        if directory is not None:
            writable_directory(directory)
    net, schedule = load_diffusion(args.diffusion, args.diffusion_ckpt, device=device, precision=execution.precision,
                                   attention=execution.attention, schedule_spec=args.diffusion_schedule)
    plan = make_plan(args.sigma, args.b, schedule, method=args.method, rule=args.timestep_rule)
    classifier = build_classifier(args.classifier_model or args.classifier, checkpoint=args.classifier_ckpt,
                                  preprocessing=args.preprocessing, num_classes=dataset.num_classes, device=device)
    setting = replace(setting, checkpoints=checkpoint_digests(args.diffusion_ckpt, args.classifier_ckpt))
    denoiser, classify = prepare_models(net, classifier, execution)
    store = VotesStore(args.votes_dir, setting.as_dict(), num_classes=dataset.num_classes, rows=rows)
    targets = [StoreTarget(store, setting, [1] if one_shot_job else Ks, args.out, savings)]
    one_shot = plan if one_shot_job else None
    if args.one_shot_votes_dir:
        os_setting = one_shot_setting(setting)
        one_shot = one_shot_plan(args.sigma, schedule, rule=args.timestep_rule)
        os_store = VotesStore(args.one_shot_votes_dir, os_setting.as_dict(), num_classes=dataset.num_classes,
                              rows=rows)
        os_ids = unique_ids(parse_ids(args.one_shot_ids)) if args.one_shot_ids else ids
        if set(os_ids) - set(ids):
            raise DataError(f"--one-shot-ids: image {sorted(set(os_ids) - set(ids))[0]} is not in --ids")
        targets.append(StoreTarget(os_store, os_setting, [1], args.one_shot_out, savings, ids=os_ids))
    purifier = Purifier(denoiser, classify, None if one_shot_job else plan, one_shot, args.seed, rows=execution.batch,
                        device=device, shared_first_step=execution.shared_first_step)
    with JobProgress(len(ids), rows, stream=None if args.quiet else sys.stderr,
                     interval=args.log_interval) as progress:
        run_certification(purifier, dataset, ids, targets, args.alpha, checkpoint_seconds=args.checkpoint_seconds,
                          progress=progress, device=str(device))
    return 0


def unique_ids(ids: list[int]) -> list[int]:
    """The ids in order, each once (a list like ``0:100,50`` names 50 twice: it is certified once)."""
    seen = list(dict.fromkeys(ids))
    if len(seen) < len(ids):
        print(f"densepure: note: {len(ids) - len(seen)} repeated image ids are certified once", file=sys.stderr)
    return seen


def writable_directory(directory: Path) -> None:
    """Write and remove a probe file in ``directory`` (or, before it exists, the nearest folder above it that does):
    a read-only folder or a full disk is found before any model is loaded or image computed (VotesError naming it),
    and nothing is created."""
    from .votes import check_writable as probe

    directory = Path(directory)
    try:
        probe(nearest_existing(directory))
    except VotesError as err:
        raise VotesError(f"{directory} cannot be written: {err}") from None


def open_stores(directories: list[Path]) -> tuple[Setting, dict[int, VotesStore]]:
    """Open votes stores of one setting (K may differ); return the setting with the smallest K and the store of
    every stored image id."""
    stores = [VotesStore.open(d) for d in directories]
    settings = [Setting(**store.setting) for store in stores]
    base = min(settings, key=lambda s: s.K)
    for directory, setting in zip(directories, settings):
        if {**setting.as_dict(), "K": base.K} != base.as_dict():
            raise VotesError(f"{directory} holds votes of another setting than {directories[0]}")
    by_id = {i: store for store in stores for i in store.stored_ids()}  # read() explains a bad file
    return base, by_id


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


def aggregate(args: argparse.Namespace) -> int:
    paths = output_paths(args.out, args.K)
    for path in paths.values():
        check_writable(path, "--out")
    setting, by_id = open_stores(args.votes_dir)
    too_many = [k for k in args.K if k > setting.K]
    if too_many:
        raise VotesError(f"K'={too_many[0]} exceeds the K={setting.K} votes stored in {args.votes_dir[0]}")
    ids = parse_ids(args.ids, limit=len(by_id)) if args.ids else sorted(by_id)
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise VotesError(f"image {missing[0]} has no complete votes file in {', '.join(map(str, args.votes_dir))}")
    rows: dict[int, list] = {K: [] for K in args.K}
    num_classes = setting.extra.get("num_classes") or NUM_CLASSES[setting.dataset]  # your own data records its own
    for i in ids:
        record = by_id[i].read(i)
        for K in args.K:
            try:
                rows[K].append(result_row(i, record, setting, K, args.alpha, num_classes))
            except VotesError as err:
                raise VotesError(f"{by_id[i].path(i)}: {err}") from None
    for K in args.K:
        write_tsv(paths[K], rows[K])
    return 0


def classifiers(args: argparse.Namespace) -> int:
    from .classifiers import get_classifier_spec, list_classifiers

    for name in list_classifiers():
        spec = get_classifier_spec(name)
        print(f"{name:18s} {spec.dataset:9s} {spec.description}")
    print("also: timm:<model name> (any timm model), or your own network as an importable module:function")
    return 0


def download(args: argparse.Namespace) -> int:
    from .download import download as fetch

    check_writable(args.out, "--out")
    check_writable(args.lock, "--lock")
    if args.extract_to:
        check_writable(args.extract_to, "--extract-to", folder=True)
    fetch(args.url, args.out, args.lock, name=args.name, retries=args.retries, extract_to=args.extract_to)
    return 0


def estimate(args: argparse.Namespace) -> int:
    from .estimate import run_estimate

    return run_estimate(args)


def report(args: argparse.Namespace) -> int:
    from .report import run_report

    if getattr(args, "outdir", None):
        check_writable(args.outdir, "--outdir", folder=True)
    if getattr(args, "out", None):
        check_writable(args.out, "--out")
    return run_report(args)


def train(args: argparse.Namespace) -> int:
    from .train import run

    return run(args)


def theory(args: argparse.Namespace) -> int:
    from .theory import run

    return run(args)


COMMANDS = {"certify": certify, "aggregate": aggregate, "classifiers": classifiers, "download": download,
            "estimate": estimate, "table": report, "figure": report, "compare": report, "import": report,
            "export": report, "train": train, "theory": theory}


def run(args: argparse.Namespace) -> int:
    return COMMANDS[args.command](args)
