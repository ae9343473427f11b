"""What each CLI command does, given parsed arguments. User mistakes raise ValueError subclasses."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from .data import NUM_CLASSES, DataError, load_dataset, parse_ids
from .results import Setting, result_row, write_tsv
from .votes import VotesError, VotesStore


def resolve_device(name: str):
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


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


def setting_from_args(args: argparse.Namespace, execution=None) -> Setting:
    """The votes-defining setting of a ``certify`` command line. A classifier precision other than fp32 changes
    the votes, so it is recorded (under ``extra``, which stays empty otherwise)."""
    execution = execution or execution_from_args(args)
    extra = {} if execution.classifier_precision == "fp32" else {"classifier_precision": execution.classifier_precision}
    setting = Setting(
        dataset=args.dataset, diffusion=args.diffusion, classifier=args.classifier, sigma=args.sigma, b=args.b,
        K=args.K, N0=args.N0, N=args.N, seed=args.seed, method=args.method, timestep_rule=args.timestep_rule,
        preprocessing=args.preprocessing, precision=execution.precision, attention=execution.attention, extra=extra,
    )
    setting.validate()
    return setting


def checkpoint_digests(diffusion_ckpt: str | Path, classifier_ckpt: str | Path | None) -> dict:
    """sha256 of the weights files a certification job loads (``classifier`` is None for random weights): part of
    the votes' setting. Call after the models loaded (they report a missing file)."""
    from .classifiers import checkpoint_file
    from .download import sha256

    return {"diffusion": sha256(diffusion_ckpt),
            "classifier": sha256(checkpoint_file(classifier_ckpt)) if classifier_ckpt else None}


def check_ids(ids: list[int], length: int, dataset: str) -> None:
    bad = [i for i in ids if not 0 <= i < length]
    if bad:
        raise DataError(f"image id {bad[0]} is out of range for {dataset} (0..{length - 1})")
    if not ids:
        raise DataError("no image ids to certify")


def certify(args: argparse.Namespace) -> int:
    import torch

    from .certify import VoteCounter, prepare_models, run_certification
    from .classifiers import build_classifier
    from .diffusion import load_diffusion
    from .schedule import make_plan

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    execution = execution_from_args(args, device)
    setting = setting_from_args(args, execution)
    dataset = load_dataset(args.dataset, args.data_root)
    ids = parse_ids(args.ids)
    check_ids(ids, len(dataset), args.dataset)
    net, schedule = load_diffusion(args.diffusion, args.diffusion_ckpt, device=device, precision=execution.precision,
                                   attention=execution.attention)
    classifier = build_classifier(args.classifier, checkpoint=args.classifier_ckpt, preprocessing=args.preprocessing,
                                  device=device)
    setting = replace(setting, checkpoints=checkpoint_digests(args.diffusion_ckpt, args.classifier_ckpt))
    denoiser, classify = prepare_models(net, classifier, execution)
    plan = make_plan(args.sigma, args.b, schedule, method=args.method, rule=args.timestep_rule)
    store = VotesStore(args.votes_dir, setting.as_dict(), num_classes=dataset.num_classes,
                       shape=(args.N0 + args.N, args.K))
    counter = VoteCounter(denoiser, classify, plan, setting, batch=execution.batch, device=device,
                          shared_first_step=execution.shared_first_step)
    run_certification(counter, dataset, ids, store, args.out, args.alpha, progress=not args.quiet)
    return 0


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


def aggregate(args: argparse.Namespace) -> int:
    setting, by_id = open_stores(args.votes_dir)
    too_many = [k for k in args.K if k > setting.K]
    if too_many:
        raise VotesError(f"K'={too_many[0]} exceeds the K={setting.K} votes stored in {args.votes_dir[0]}")
    if "{K}" not in args.out:
        raise ValueError(f"--out must contain {{K}}, got {args.out!r}")
    ids = parse_ids(args.ids) if args.ids else sorted(by_id)
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise VotesError(f"image {missing[0]} has no complete votes file in {', '.join(map(str, args.votes_dir))}")
    rows: dict[int, list] = {K: [] for K in args.K}
    for i in ids:
        record = by_id[i].read(i)
        for K in args.K:
            rows[K].append(result_row(i, record, setting, K, args.alpha, NUM_CLASSES[setting.dataset]))
    for K in args.K:
        write_tsv(Path(args.out.format(K=K)), rows[K])
    return 0


def classifiers(args: argparse.Namespace) -> int:
    from .classifiers import get_classifier_spec, list_classifiers

    for name in list_classifiers():
        spec = get_classifier_spec(name)
        print(f"{name:18s} {spec.dataset:9s} {spec.description}")
    return 0


def download(args: argparse.Namespace) -> int:
    from .download import download as fetch, extract_tar

    fetch(args.url, args.out, args.lock, name=args.name, retries=args.retries)
    if args.extract_to:
        extract_tar(args.out, args.extract_to)
    return 0


def estimate(args: argparse.Namespace) -> int:
    from .estimate import run_estimate

    return run_estimate(args)


def report(args: argparse.Namespace) -> int:
    from .report import run_report

    return run_report(args)


COMMANDS = {"certify": certify, "aggregate": aggregate, "classifiers": classifiers,
            "download": download, "estimate": estimate, "table": report, "figure": report, "compare": report,
            "import": report, "export": report}


def run(args: argparse.Namespace) -> int:
    return COMMANDS[args.command](args)
