"""Throughput of ``densepure certify``, reference-equivalent mode vs fast mode, side by side on one device.

For each suite (ImageNet: ADM-256 + BEiT-large-512; CIFAR-10: the 50M improved-diffusion UNet + ViT-B/16), with
random weights, both modes are built exactly as ``densepure certify --mode reference|fast`` builds them
(:func:`densepure.job.execution.resolve_execution`, :func:`densepure.job.networks.prepare_models`) and measured:

* UNet images/s at the mode's network batch (reference: its batch of draws of one vote; fast: draws x votes), and
  its MFU: UNet FLOPs per image (counted by ``torch.utils.flop_counter`` on the meta device) x images/s over a
  dense matmul peak measured here (bf16 on CUDA, fp32 on the CPU);
* classifier images/s at the same batch;
* end-to-end seconds per certified image at K = 40, b = 10 (the paper's main setting; the CPU-only ``digits`` suite:
  the embedded default's K = 10, b = 5) for N0 + N = 10,100 and 100,100 draws, extrapolated from
  timed :class:`densepure.job.purifier.Purifier` calls (noise generation, purification, preprocessing,
  classification: everything but data loading and certification arithmetic; no lazy votes or early stopping, whose
  savings are counted in calls by benchmarks/savings.py), and the ratio reference / fast;
* how often the two modes' labels agree on the (draw, vote) cells both computed (same image, same seeds).

Everything runs under one time budget (``--budget`` seconds, checked before each stage and inside the timing
loops); a stage that does not fit is skipped with a note. The JSON written after every stage holds the measured
rates in the format of ``densepure estimate --rates`` (``diffusion``/``classifiers``; the rest under ``benchmark``).

    python benchmarks/throughput.py --out benchmarks/throughput.json            # one GPU, <= 8 minutes
    python benchmarks/throughput.py --smoke --out /tmp/smoke.json               # tiny models on the CPU, ~1 minute
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from densepure.core.schedule import make_plan, make_schedule
from densepure.job.execution import resolve_execution
from densepure.job.networks import prepare_models
from densepure.job.purifier import Purifier
from densepure.models.classifiers import RandomWeightsWarning, build_classifier
from densepure.models.small_models import DIFFUSION_T, digits_unet_config
from densepure.models.unet import UNetConfig, UNetModel, cifar10_config, imagenet256_config

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DRAWS = {"N=10000": 100 + 10_000, "N=100000": 100 + 100_000}  # N0 = 100, as in the paper


@dataclass(frozen=True)
class Suite:
    """One dataset's pair of networks and the certification setting whose cost is measured."""

    dataset: str
    arch: str  # the diffusion key of `densepure estimate`'s rates
    unet: UNetConfig
    schedule: tuple[str, int]
    classifier: str
    classifier_kwargs: dict = field(default_factory=dict)
    sigma: float = 0.25
    b: int = 10
    K: int = 40
    batches: dict = field(default_factory=dict)  # mode -> batch override (smoke only)


FULL = [
    Suite("imagenet", "guided-imagenet256", imagenet256_config(), ("linear", 1000), "beit-large-512"),
    Suite("cifar10", "improved-cifar10", cifar10_config(), ("cosine", 4000), "vit-b16-cifar10"),
    # the embedded default's networks at its setting (b = 5, K = 10): a CPU measurement, run with --suites digits
    Suite("digits", "bundle", digits_unet_config(), ("cosine", DIFFUSION_T), "digits-cnn", b=5, K=10),
]
# Same code paths with tiny networks, b = 3, K = 4: a CPU check that the script works, not a measurement of anything.
_TINY_VIT = dict(depth=1, embed_dim=32, num_heads=2)
_TINY_UNET = dict(image_size=16, model_channels=32, num_res_blocks=1, attention_resolutions=(2,), channel_mult=(1, 2))
SMOKE = [
    Suite("imagenet", "guided-imagenet256",
          UNetConfig(**_TINY_UNET, num_head_channels=32, resblock_updown=True), ("linear", 1000), "beit-large-512",
          _TINY_VIT, b=3, K=4, batches={"reference": 4, "fast": 8}),
    Suite("cifar10", "improved-cifar10",
          UNetConfig(**_TINY_UNET, num_heads=2), ("cosine", 4000), "vit-b16-cifar10", _TINY_VIT,
          b=3, K=4, batches={"reference": 4, "fast": 8}),
]


class Clock:
    """Wall time against one deadline; ``sync`` waits for the device so that timings include its work."""

    def __init__(self, budget: float, device: torch.device, min_runs: int = 2):
        self.start = time.monotonic()
        self.deadline = self.start + budget
        self.device = device
        self.min_runs = min_runs

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time(self, fn, min_seconds: float, min_runs: int | None = None, max_runs: int = 50) -> tuple[float, int]:
        """Seconds per call of ``fn`` (already warm): at least ``min_runs`` calls and ``min_seconds``, fewer
        seconds when the deadline is near. Returns (seconds per call, calls)."""
        min_runs = self.min_runs if min_runs is None else min_runs
        self.sync()
        began, runs = time.monotonic(), 0
        while runs < min_runs or (runs < max_runs and time.monotonic() - began < min(min_seconds, self.left() / 4)):
            fn()
            runs += 1
            self.sync()
        return (time.monotonic() - began) / runs, runs


def matmul_peak(clock: Clock, smoke: bool) -> tuple[float, str]:
    """Dense matmul FLOP/s measured here: the MFU denominator (bf16 on CUDA, fp32 on the CPU)."""
    dtype = torch.bfloat16 if clock.device.type == "cuda" else torch.float32
    n = 256 if smoke else (8192 if clock.device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=clock.device, dtype=dtype)
    b = torch.randn(n, n, device=clock.device, dtype=dtype)
    torch.matmul(a, b)
    seconds, _ = clock.time(lambda: torch.matmul(a, b), min_seconds=0.5 if smoke else 3.0, min_runs=5, max_runs=500)
    return 2 * n**3 / seconds, str(dtype).replace("torch.", "")


def unet_flops(config: UNetConfig) -> int:
    """FLOPs (2 x multiply-adds, attention matmuls included) of one forward pass on one image."""
    with torch.device("meta"):
        net = UNetModel(config)
        x = torch.zeros(1, config.in_channels, config.image_size, config.image_size)
        t = torch.zeros(1)
    with FlopCounterMode(display=False) as counter:
        net(x, t)
    return counter.get_total_flops()


class CountingClassifier:
    """Wraps a classifier; counts rows whose logits are not all finite (random fp16 weights can overflow)."""

    def __init__(self, classify, device):
        self.classify = classify
        self.nonfinite = torch.zeros((), dtype=torch.int64, device=device)

    def __call__(self, images):
        logits = self.classify(images)
        self.nonfinite += (~torch.isfinite(logits)).any(dim=1).sum()
        return logits


def build(suite: Suite, mode: str, device: torch.device, compile_: bool | None, cache: str | None):
    """The mode's denoiser, classifier and Purifier with random weights, as `densepure certify` builds them."""
    execution = resolve_execution(mode, suite.dataset, device.type, compile=compile_, compile_cache=cache,
                                  batch=suite.batches.get(mode))
    torch.manual_seed(0)
    with torch.device(device), warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        net = UNetModel(suite.unet, attention=execution.attention).eval()
        classifier = build_classifier(suite.classifier, device=device, **suite.classifier_kwargs)
    net.set_torso_dtype(DTYPES[execution.precision])
    denoiser, classify = prepare_models(net, classifier, execution)
    counting = CountingClassifier(classify, device)
    plan = make_plan(suite.sigma, suite.b, make_schedule(*suite.schedule))
    purifier = Purifier(denoiser, counting, plan, None, seed=0, rows=execution.batch, device=device,
                        shared_first_step=execution.shared_first_step)
    return execution, denoiser, classify, purifier, counting


def measure(suite: Suite, mode: str, clock: Clock, args, flops: int, peak: float,
            compile_: bool | None = None) -> tuple[dict, dict]:
    """All measurements of one (suite, mode), and the labels of its end-to-end batches by (draw, vote)."""
    device = clock.device
    execution, denoiser, classify, purifier, counting = build(suite, mode, device, compile_, args.compile_cache)
    size, channels = suite.unet.image_size, suite.unet.in_channels
    rows = execution.batch
    x_rows = torch.randn(rows, channels, size, size, device=device)
    t_rows = torch.full((rows,), float(purifier.plan.model_timesteps[1]), device=device)
    images = torch.rand(rows, channels, size, size, device=device) * 2 - 1
    image = torch.rand(channels, size, size, generator=torch.Generator().manual_seed(0))
    purifier.add_image(7, image)
    labels: dict[tuple[int, int], int] = {}
    # The rows of the vote calls timed: the first rows // K draws with all K votes (both modes compute these cells,
    # so their labels can be compared); with the shared first step those draws' first steps are held.
    first_draws = np.arange(rows)
    unit_draws = np.repeat(np.arange(max(1, rows // suite.K)), suite.K)[:rows]
    unit_votes = np.tile(np.arange(suite.K), max(1, rows // suite.K))[:rows]
    no_one_shot = np.zeros(rows, dtype=bool)

    def first_call():
        purifier.first_steps(np.full(rows, 7), first_draws, np.ones(rows, dtype=bool), no_one_shot)

    def vote_call():
        out = purifier.votes(np.full(len(unit_draws), 7), unit_draws, unit_votes)
        labels.update({(int(d), int(v)): int(y) for d, v, y in zip(unit_draws, unit_votes, out)})

    min_seconds = 0.2 if args.smoke else 5.0
    with torch.no_grad():
        began = time.monotonic()
        denoiser(x_rows, t_rows)  # compiles (if compiled) and warms up
        classify(images)
        if execution.shared_first_step:
            first_call()
        vote_call()
        clock.sync()
        warmup = time.monotonic() - began
        unet_s, unet_runs = clock.time(lambda: denoiser(x_rows, t_rows), min_seconds)
        cls_s, cls_runs = clock.time(lambda: classify(images), min_seconds)
        first_s = clock.time(first_call, min_seconds)[0] if execution.shared_first_step else 0.0
        vote_s, batches = clock.time(vote_call, min_seconds)
    # per draw: its share of a first-step call (one row of `rows`) and K rows of vote calls
    seconds_per_draw = first_s / rows + suite.K * vote_s / rows
    unet_rate, cls_rate = rows / unet_s, rows / cls_s
    result = {
        "suite": suite.dataset, "mode": mode, "K": suite.K, "b": suite.b, "execution": asdict(execution),
        "unet_rows": rows, "unet_images_per_s": unet_rate, "unet_calls_timed": unet_runs,
        "unet_tflop_per_image": flops / 1e12, "unet_mfu": unet_rate * flops / peak,
        "classifier_images_per_s": cls_rate, "classifier_calls_timed": cls_runs,
        "first_step_call_seconds": first_s, "vote_call_seconds": vote_s, "vote_calls_timed": batches,
        "warmup_seconds": warmup,
        "seconds_per_image": {name: seconds_per_draw * draws for name, draws in DRAWS.items()},
        "nonfinite_logit_rows": int(counting.nonfinite),
    }
    del denoiser, classify, purifier, counting, x_rows, images
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result, labels


def measure_fitting(suite: Suite, mode: str, clock: Clock, args, flops: int, peak: float, notes: list):
    """:func:`measure`, retried with half the batch after running out of device memory, and without torch.compile
    after a compilation error (both noted); None if even the smallest batch (one draw) does not fit."""
    compile_ = args.compile if mode == "fast" else None  # the reference baseline runs as the reference: eager
    while True:
        batch = suite.batches.get(mode) or resolve_execution(mode, suite.dataset, clock.device.type).batch
        compiled = resolve_execution(mode, suite.dataset, clock.device.type, compile=compile_).compile
        try:
            return measure(suite, mode, clock, args, flops, peak, compile_)
        except torch.OutOfMemoryError:
            pass
        except Exception as err:  # noqa: BLE001 -- a compiler failure must not lose the rest of a one-shot GPU run
            if not compiled:
                raise
            notes.append(f"{suite.dataset} {mode}: torch.compile failed ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200]}); measured without compiling")
            compile_ = False
            torch._dynamo.reset()
            continue
        gc.collect()
        torch.cuda.empty_cache()
        smallest = suite.K if resolve_execution(mode, suite.dataset).shared_first_step else 1
        if batch // 2 < smallest:
            notes.append(f"{suite.dataset} {mode}: out of memory even at batch {batch}")
            return None
        notes.append(f"{suite.dataset} {mode}: out of memory at batch {batch}, measured at {batch // 2}")
        suite = replace(suite, batches={**suite.batches, mode: batch // 2})


def rates_file(results: list[dict], suites: dict[str, Suite]) -> dict:
    """The measured rates in `densepure estimate --rates` form: UNet by (arch, precision), classifier by
    (name, precision)."""
    diffusion: dict = {}
    classifiers: dict = {}
    for r in results:
        suite, ex = suites[r["suite"]], r["execution"]
        diffusion.setdefault(suite.arch, {})[ex["precision"]] = round(r["unet_images_per_s"], 2)
        rate = round(r["classifier_images_per_s"], 2)
        classifiers.setdefault(suite.classifier, {})[ex["classifier_precision"]] = rate
    return {"diffusion": diffusion, "classifiers": classifiers}


def agreement(a: dict, b: dict) -> dict:
    common = sorted(set(a) & set(b))
    agree = sum(a[c] == b[c] for c in common)
    return {"compared": len(common), "agree": agree, "fraction": agree / len(common) if common else None}


def markdown(report: dict) -> str:
    lines = [f"device: {report['device']}; matmul peak {report['peak_tflops']:.3g} TFLOP/s ({report['peak_dtype']}); "
             "random weights" + ("; SMOKE: tiny models" if report["smoke"] else ""),
             "",
             "| suite | K, b | mode | UNet prec. | attention | rows | UNet img/s | UNet MFU | classifier img/s | "
             "s/image N=10k | s/image N=100k | warmup s |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        ex = r["execution"]
        mode = r["mode"] + (" (compiled)" if ex["compile"] else "")
        lines.append(f"| {r['suite']} | {r['K']}, {r['b']} | {mode} | {ex['precision']} | {ex['attention']} | "
                     f"{r['unet_rows']} | {r['unet_images_per_s']:,.1f} | {r['unet_mfu']:.1%} | "
                     f"{r['classifier_images_per_s']:,.1f} | {r['seconds_per_image']['N=10000']:,.0f} | "
                     f"{r['seconds_per_image']['N=100000']:,.0f} | {r['warmup_seconds']:.0f} |")
    lines.append("")
    for suite, s in report["speedup"].items():
        agree = report["agreement"].get(suite, {})
        text = (f"{agree['agree']}/{agree['compared']} labels agree" if agree.get("compared") else "no common labels")
        lines.append(f"- {suite}: seconds per certified image, reference / fast = {s:.2f} ({text})")
    for note in report["notes"]:
        lines.append(f"- note: {note}")
    return "\n".join(lines)


def write_json(path: Path, report: dict, suites: dict[str, Suite]) -> None:
    data = {**rates_file(report["results"], suites), "benchmark": report}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


# Seconds a stage needs at least (model build, warmup or compilation, timing), estimates; a stage is skipped with a
# note when less is left. Compiling the full-size networks from a cold cache takes minutes (ADM-256 + BEiT-L most).
NEEDS = {"eager": 40, "imagenet compiled": 200, "cifar10 compiled": 120}


def stage_need(suite: Suite, compiled: bool, smoke: bool) -> float:
    if not compiled:
        return 5 if smoke else NEEDS["eager"]
    return NEEDS.get(f"{suite.dataset} compiled", 200)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("benchmarks/throughput.json"), help="JSON output")
    p.add_argument("--budget", type=float, default=450.0, help="seconds for the whole run [450]")
    p.add_argument("--smoke", action="store_true", help="tiny networks (a CPU check of the script)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto [auto]")
    p.add_argument("--suites", nargs="+", default=["imagenet", "cifar10"], help="suites to run, in this order")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile in fast mode [the mode's preset: on CUDA]")
    p.add_argument("--compile-cache", default=os.environ.get("DENSEPURE_COMPILE_CACHE"),
                   help="torch.compile cache folder [$DENSEPURE_COMPILE_CACHE or torch's default]")
    p.add_argument("--threads", type=int, default=1, help="CPU threads [1]")
    p.add_argument("--print", type=Path, metavar="JSON", help="only print the table of a JSON this script wrote")
    args = p.parse_args(argv)
    if args.print:
        print(markdown(json.loads(args.print.read_text())["benchmark"]))
        return 0
    torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    clock = Clock(args.budget, device, min_runs=1 if args.smoke else 2)
    suites = {s.dataset: s for s in (SMOKE if args.smoke else FULL) if s.dataset in args.suites}
    peak, peak_dtype = matmul_peak(clock, args.smoke)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    report = {"device": f"{device.type}: {name}", "torch": torch.__version__, "smoke": args.smoke,
              "peak_tflops": peak / 1e12, "peak_dtype": peak_dtype, "budget_s": args.budget,
              "results": [], "speedup": {}, "agreement": {}, "notes": []}
    flops = {name: unet_flops(suite.unet) for name, suite in suites.items()}
    labels, seconds = {}, {}
    for mode in ("reference", "fast"):  # every reference first: the baseline is never the part that is skipped
        for suite in suites.values():
            preset = resolve_execution(mode, suite.dataset, device.type, compile=args.compile)
            compiled = mode == "fast" and preset.compile
            need = stage_need(suite, compiled, args.smoke)
            if clock.left() < need:
                report["notes"].append(f"{suite.dataset} {mode} skipped: {clock.left():.0f} s left of the budget, "
                                       f"needs about {need} s")
                continue
            result = measure_fitting(suite, mode, clock, args, flops[suite.dataset], peak, report["notes"])
            if result is None:
                continue
            report["results"].append(result[0])
            labels[suite.dataset, mode] = result[1]
            seconds[suite.dataset, mode] = result[0]["seconds_per_image"]["N=10000"]
            if result[0]["nonfinite_logit_rows"]:
                report["notes"].append(f"{suite.dataset} {mode}: {result[0]['nonfinite_logit_rows']} rows of "
                                       f"non-finite logits (random weights)")
            if (suite.dataset, "reference") in seconds and (suite.dataset, "fast") in seconds:
                report["speedup"][suite.dataset] = seconds[suite.dataset, "reference"] / seconds[suite.dataset, "fast"]
                report["agreement"][suite.dataset] = agreement(labels[suite.dataset, "reference"],
                                                               labels[suite.dataset, "fast"])
            report["elapsed_s"] = time.monotonic() - clock.start
            write_json(args.out, report, suites)  # after every stage: a run killed later keeps what it measured
            print(f"[{report['elapsed_s']:.0f} s] {suite.dataset} {mode} done", file=sys.stderr)
    report["elapsed_s"] = time.monotonic() - clock.start
    write_json(args.out, report, suites)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
