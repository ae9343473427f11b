"""Execution modes of `densepure certify` (reference-equivalent and fast), their cost model in `densepure estimate`,
and the throughput benchmark's smoke run. Everything on the CPU with tiny networks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_pipeline import tiny_unet

from densepure.cli.main import main
from densepure.core import schedule as S
from densepure.job.execution import Execution, resolve_execution
from densepure.job.networks import Compiled, prepare_models
from densepure.job.purifier import Purifier
from densepure.job.results import Setting
from densepure.job.scheduler import image_votes
from densepure.job.votes import VotesStore
from densepure.models.classifiers import Classifier
from densepure.models.diffusion import save_bundle
from densepure.models.preprocessing import Preprocessing
from densepure.models.small_models import DigitsCNN, digits_unet_config
from densepure.models.unet import UNetModel
from densepure.plan import estimate as est
from densepure.plan import grid, validation
from densepure.plan import rates as plan_rates

REPO = Path(__file__).resolve().parents[1]
B, K, N0, N = 3, 4, 3, 14


def tiny_classifier() -> Classifier:
    """A random conv net behind a real preprocessing (bicubic 16 -> 24, mean/std): varied labels on purified noise."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 11 * 11, 10))
    prep = Preprocessing(24, "bicubic", normalization=None)
    return Classifier(model, prep, "tiny").eval()


SETTING = Setting("imagenet", "tiny", "tiny", sigma=0.25, b=B, K=K, N0=N0, N=N, seed=1)


def purifier_for(execution: Execution, calls: list[int]) -> Purifier:
    """A Purifier built as `densepure certify` builds it for ``execution``; ``calls`` records UNet batch rows."""
    net = tiny_unet("guided").set_attention(execution.attention)
    net.set_torso_dtype({"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[execution.precision])
    denoiser, classify = prepare_models(net, tiny_classifier(), execution)
    counting = lambda x, t: calls.append(len(x)) or denoiser(x, t)  # noqa: E731
    plan = S.make_plan(0.25, B, S.linear_schedule(1000))
    return Purifier(counting, classify, plan, None, SETTING.seed, rows=execution.batch,
                    shared_first_step=execution.shared_first_step)


def all_votes(purifier: Purifier) -> np.ndarray:
    return image_votes(purifier, IMAGE, 2, label=0, setting=SETTING)[0].labels


IMAGE = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(4))


def test_presets_and_overrides():
    ref = resolve_execution("reference", "imagenet", "cuda")
    assert (ref.precision, ref.attention, ref.batch, ref.shared_first_step, ref.compile) == (
        "fp16", "einsum", 16, False, False)
    assert resolve_execution("reference", "cifar10").precision == "fp32"
    assert resolve_execution("reference", "cifar10").batch == 100
    fast = resolve_execution("fast", "imagenet", "cuda")
    assert (fast.precision, fast.classifier_precision, fast.attention, fast.channels_last, fast.compile) == (
        "bf16", "bf16", "sdpa", True, True)
    assert resolve_execution("fast", "imagenet", "cpu").compile is False  # compiling needs minutes on a CPU
    assert resolve_execution("fast", "cifar10", "cpu", batch=7, precision="fp32").batch == 7
    custom = resolve_execution("custom", "digits")
    assert custom == Execution()  # the defaults certify had before modes existed
    with pytest.raises(ValueError, match="mode"):
        resolve_execution("turbo", "digits")


def test_reference_and_fast_modes_give_identical_labels_in_fp32():
    """Sharing the first step and packing draws x votes into one batch change the cost, not the votes: with fp32
    everywhere the two modes (einsum vs SDPA attention, channels_last, batch 16 draws of one vote vs 80 rows) give
    the same labels. The reference runs b K UNet rows per draw, the fast mode 1 + (b - 1) K."""
    ref_calls, fast_calls = [], []
    reference = purifier_for(resolve_execution("reference", "imagenet", precision="fp32"), ref_calls)
    fast = purifier_for(resolve_execution("fast", "imagenet", precision="fp32", classifier_precision="fp32"),
                        fast_calls)
    a, b = all_votes(reference), all_votes(fast)
    assert a.shape == b.shape == (N0 + N, K)
    assert len(np.unique(a)) > 2  # the comparison is not between constant label matrices
    np.testing.assert_array_equal(a, b)
    # every call has the mode's rows (a short one padded); the reference runs b K rows per draw: 68 rows x 3 steps
    assert set(ref_calls) == {16} and len(ref_calls) == -(-(N0 + N) * K // 16) * B
    # fast: the first steps of all 17 draws in one call, then their 68 (draw, vote) rows in one: 1 + (b - 1) calls
    assert set(fast_calls) == {80} and len(fast_calls) == B


def test_fast_mode_in_bf16_runs_with_fp32_preprocessing():
    """bf16: the UNet torso holds bf16 weights, the classifier network runs under bf16 autocast while its
    preprocessing stays fp32; most labels agree with fp32 (bf16 rounding flips a few)."""
    execution = resolve_execution("fast", "imagenet")
    counter = purifier_for(execution, [])
    seen = {}
    classify = counter.classifier
    classify.preprocess.register_forward_hook(lambda m, i, o: seen.setdefault("preprocess", o.dtype) and None)
    classify.model[0].register_forward_hook(lambda m, i, o: seen.setdefault("conv", o.dtype) and None)
    labels = all_votes(counter)
    assert seen == {"preprocess": torch.float32, "conv": torch.bfloat16}
    assert tiny_unet("guided").set_torso_dtype(torch.bfloat16).torso_dtype == torch.bfloat16
    fp32 = purifier_for(resolve_execution("fast", "imagenet", precision="fp32", classifier_precision="fp32"), [])
    agree = (labels == all_votes(fp32)).mean()
    assert labels.shape == (N0 + N, K) and labels.min() >= 0 and labels.max() < 10
    assert agree >= 0.5, agree


def test_compiled_denoiser_makes_one_graph_for_every_batch_size():
    """The first step (draws), later steps (draws x votes) and a short last batch share one compiled graph. The
    backend here only counts graphs (inductor needs minutes on a CPU; benchmarks/throughput.py compiles on a GPU)."""
    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    net = tiny_unet("guided")
    compiled = Compiled(net, backend=backend)
    with torch.no_grad():
        for rows in (2, 8, 3):
            x, t = torch.randn(rows, 3, 16, 16), torch.full((rows,), 144.0)
            torch.testing.assert_close(compiled(x, t), net(x, t), rtol=0, atol=1e-5)
    assert len(graphs) == 1


# --- command line and workflow -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_bundle(root / "unet.pt", UNetModel(digits_unet_config()), S.cosine_schedule(1000))
    torch.save(DigitsCNN().state_dict(), root / "cnn.pt")
    return {"unet": root / "unet.pt", "cnn": root / "cnn.pt"}


def certify(digits, out: Path, *extra: str) -> VotesStore:
    args = ["certify", "--quiet", "--no-lazy-votes", "--no-stop-abstain", "--dataset", "digits", "--ids", "0,5", "--diffusion", "bundle",
            "--diffusion-ckpt", str(digits["unet"]), "--classifier", "digits-cnn", "--classifier-ckpt",
            str(digits["cnn"]), "--sigma", "0.5", "--b", "3", "--K", "5", "--N0", "4", "--N", "30", "--device", "cpu",
            "--votes-dir", str(out / "votes"), "--out", str(out / "r.tsv"), *extra]
    assert main(args) == 0
    return VotesStore.open(out / "votes")


def test_cli_modes_record_what_changes_the_votes(digits, tmp_path):
    reference = certify(digits, tmp_path / "ref", "--mode", "reference")
    fast32 = certify(digits, tmp_path / "fast32", "--mode", "fast", "--precision", "fp32",
                     "--classifier-precision", "fp32", "--batch", "12")
    for i in (0, 5):
        np.testing.assert_array_equal(reference.read(i).labels, fast32.read(i).labels)
    assert (reference.read(0).labels >= 0).all()  # --no-lazy-votes: every vote computed
    assert (reference.setting["attention"], fast32.setting["attention"]) == ("einsum", "sdpa")
    assert reference.setting["extra"] == fast32.setting["extra"] == {}
    fast = certify(digits, tmp_path / "fast", "--mode", "fast")
    assert fast.setting["precision"] == "bf16" and fast.setting["extra"] == {"classifier_precision": "bf16"}
    assert fast.read(0).labels.shape == (34, 5)


def workflow_config(mode: str | None) -> dict:
    config = validation.load_config(REPO / "config" / "paper.yaml")
    if mode:
        config["datasets"]["imagenet"]["mode"] = mode
        config["datasets"]["imagenet"]["precision"] = None
        config["datasets"]["imagenet"]["batch"] = None
    return config


def imagenet_store(config: dict) -> grid.PlannedStore:
    return next(s for s in grid.settings(config) if s.key.dataset == "imagenet" and s.key.b == 10 and s.K == 40)


@pytest.mark.parametrize("mode", ["reference", "fast"])
def test_workflow_mode_reaches_the_command_line(mode, tmp_path):
    config = workflow_config(mode)
    line = grid.certify_arguments(config, imagenet_store(config).name, 0)
    assert f"--mode {mode}" in line and "--precision" not in line and "--batch" not in line
    assert ("--compile-cache work/torch-compile" in line) == (mode == "fast")
    from densepure.cli.certify import execution_from_args
    from densepure.cli.main import build_parser

    args = build_parser().parse_args(["certify", *line.split(), "--diffusion-ckpt", "x", "--votes-dir", "v",
                                      "--out", "o"])
    assert execution_from_args(args, torch.device("cuda")) == resolve_execution(
        mode, "imagenet", "cuda", compile_cache="work/torch-compile" if mode == "fast" else None)
    default = grid.certify_arguments(workflow_config(None), imagenet_store(workflow_config(None)).name, 0)
    assert "--mode" not in default and "--precision fp16 --batch 64" in default  # unchanged command lines


def test_estimate_follows_the_mode():
    """ImageNet, N0 + N = 10,100, K = 40, b = 10: the reference mode costs 400 UNet calls per draw at the fp16
    rate and BEiT in fp32; the fast mode 361 calls at the bf16 rate and BEiT in bf16."""
    costs = {}
    for mode in ("reference", "fast"):
        costs[mode] = est.store_costs(workflow_config(mode))[imagenet_store(workflow_config(mode)).name]
    ref, fast = costs["reference"], costs["fast"]
    assert (ref.unet_per_draw, ref.unet_rate, ref.classifier_rate) == (400, 87.7, 127.0)
    assert (fast.unet_per_draw, fast.unet_rate, fast.classifier_rate) == (361, 182.5, 376.0)
    assert ref.seconds_per_image == pytest.approx(10_100 * (400 / 87.7 + 40 / 127))
    assert ref.seconds_per_image / fast.seconds_per_image > 2


def test_rates_per_precision_merge_and_are_checked(tmp_path):
    path = tmp_path / "rates.yaml"
    path.write_text("classifiers: {wrn-28-10: {bf16: 9000}, beit-large-512: {bf16: 400}}\nbenchmark: {any: thing}\n")
    rates = plan_rates.load_rates(path)
    assert rates["classifiers"]["wrn-28-10"] == {"fp32": 5000.0, "fp16": 5000.0, "bf16": 9000.0}
    assert rates["classifiers"]["beit-large-512"] == {"fp32": 127.0, "bf16": 400.0}
    path.write_text("classifiers: {beit-large-512: {bf16: fast}}\n")
    with pytest.raises(plan_rates.RatesError, match="beit-large-512.bf16"):
        plan_rates.load_rates(path)


# --- the benchmark -----------------------------------------------------------------------------------------------


@pytest.mark.slow  # processes killed or run side by side: end to end, in `make test`
def test_benchmark_smoke_writes_rates_that_estimate_uses(tmp_path):
    out = tmp_path / "throughput.json"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--smoke", "--out", str(out),
                          "--budget", "300"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "| imagenet | 4, 3 | fast | bf16 |" in run.stdout and "reference / fast" in run.stdout
    data = json.loads(out.read_text())
    bench = data["benchmark"]
    assert bench["smoke"] and not bench["notes"]
    assert {(r["suite"], r["mode"]) for r in bench["results"]} == {
        (s, m) for s in ("imagenet", "cifar10") for m in ("reference", "fast")}
    for r in bench["results"]:
        assert r["unet_images_per_s"] > 0 and 0 < r["unet_mfu"] < 1 and r["classifier_images_per_s"] > 0
        per_draw = r["seconds_per_image"]["N=10000"] / 10_100
        assert r["seconds_per_image"]["N=100000"] == pytest.approx(per_draw * 100_100)
    for suite in ("imagenet", "cifar10"):
        assert bench["speedup"][suite] > 0 and bench["agreement"][suite]["compared"] > 0
    assert set(data["diffusion"]["guided-imagenet256"]) == {"fp16", "bf16"}
    assert set(data["classifiers"]["vit-b16-cifar10"]) == {"fp32", "bf16"}
    rates = plan_rates.load_rates(out)  # `densepure estimate --rates` reads the benchmark's JSON as it is
    config = workflow_config("fast")
    fast = est.store_costs(config, rates)[imagenet_store(config).name]
    measured = next(r for r in bench["results"] if (r["suite"], r["mode"]) == ("imagenet", "fast"))
    assert fast.unet_rate == pytest.approx(measured["unet_images_per_s"], rel=1e-3)
    assert fast.classifier_rate == pytest.approx(measured["classifier_images_per_s"], rel=1e-3)
    path = tmp_path / "paper_fast.yaml"
    path.write_text(yaml.safe_dump(config))
    code = subprocess.run([sys.executable, "-m", "densepure", "estimate", "--configfile", str(path), "--rates", str(out)],
                          capture_output=True, text=True, cwd=REPO)
    assert code.returncode == 0, code.stderr
    assert f"guided-imagenet256 bf16 {data['diffusion']['guided-imagenet256']['bf16']:g}" in code.stdout


def test_benchmark_measures_the_issues_full_size_networks_at_the_papers_setting():
    """The GPU benchmark's suites are the full-size networks whose cost the throughput issue quotes (FLOPs per
    image counted on the meta device: ADM-256 2.24 T, CIFAR-10 50M UNet 16.8 G, BEiT-L-512 0.72 T) at K = 40,
    b = 10."""
    from torch.utils.flop_counter import FlopCounterMode

    from densepure.models.classifiers import get_classifier_spec

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import throughput
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    suites = {s.dataset: s for s in throughput.FULL}
    assert throughput.unet_flops(suites["imagenet"].unet) == pytest.approx(2.24e12, rel=2e-3)
    assert throughput.unet_flops(suites["cifar10"].unet) == pytest.approx(16.8e9, rel=2e-3)
    assert [(s.classifier, s.K, s.b) for s in (suites["imagenet"], suites["cifar10"])] == [
        ("beit-large-512", 40, 10), ("vit-b16-cifar10", 40, 10)]
    spec = get_classifier_spec("beit-large-512")
    with torch.device("meta"):
        beit = spec.build_model()
        x = torch.zeros(1, 3, spec.input_size, spec.input_size)
    with FlopCounterMode(display=False) as counter:
        beit(x)
    assert counter.get_total_flops() == pytest.approx(0.72e12, rel=1e-2)
