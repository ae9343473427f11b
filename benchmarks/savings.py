"""What each exact saving of the certification job saves, measured on the embedded default (CPU).

The default's grid (config/config.yaml: its DensePure stores and one-shot stores) is certified with the trained
models of a finished run, once per row, each row adding one saving to the one above:

1. reference: every vote runs all b reverse steps (the reference code's cost), separate one-shot jobs;
2. shared first step: the K votes of a draw share their first reverse step (the mode before lazy votes);
3. + lazy votes: each draw's votes stop once its majority is settled at every served K;
4. + hopeless images: estimation skipped where the selected class is not the label at every served K;
5. + certain abstention: estimation stops once the image abstains whatever the rest vote;
6. + one-shot from DensePure: the one-shot baseline's votes come from the DensePure jobs' first steps.

For each: UNet images (rows through the network, padding included), classifier images, seconds, and per certified
image (DensePure and one-shot images together); and whether every certified output (label, correct, the radius of
a correct image, predict where defined) equals row 1's.

    python benchmarks/savings.py --models work/default/models            # all 30 images per store (minutes)
    python benchmarks/savings.py --models work/default/models --images 3 # a quick check
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from densepure.core.lazy import NO_SAVINGS, Savings
from densepure.core.methods import is_one_shot
from densepure.core.schedule import make_plan, one_shot_plan
from densepure.job.assemble import one_shot_setting
from densepure.job.purifier import Purifier
from densepure.job.results import Setting
from densepure.job.runner import StoreTarget, run_certification
from densepure.job.votes import VotesStore
from densepure.models.classifiers import build_classifier
from densepure.models.datasets import load_dataset
from densepure.models.diffusion import load_diffusion
from densepure.plan import grid
from densepure.plan.validation import load_config

ROWS = [
    ("reference (every vote from scratch)", False, NO_SAVINGS, False),
    ("shared first step", True, NO_SAVINGS, False),
    ("+ lazy votes", True, Savings(lazy_votes=True, skip_hopeless=False, stop_abstain=False), False),
    ("+ hopeless images", True, Savings(lazy_votes=True, skip_hopeless=True, stop_abstain=False), False),
    ("+ certain abstention", True, Savings(lazy_votes=True, skip_hopeless=True, stop_abstain=True), False),
    ("+ one-shot from DensePure", True, Savings(lazy_votes=True, skip_hopeless=True, stop_abstain=True), True),
]


@dataclass
class Cost:
    unet: int = 0  # rows run, padding included
    used: int = 0  # rows whose results were used
    classifier: int = 0
    seconds: float = 0.0
    images: int = 0


def certify_store(net, classifier, schedule, setting: Setting, Ks, ids, rows, alpha, shared, savings, root: Path,
                  one_shot_store: Setting | None, dataset, cost: Cost) -> None:
    """One store's images (and, with ``one_shot_store``, that store's images from the same job)."""
    one_shot = is_one_shot(setting.method, setting.b)
    plan = make_plan(setting.sigma, setting.b, schedule, method=setting.method)
    targets = [StoreTarget(VotesStore(root / setting_name(setting), setting.as_dict(), num_classes=10,
                                      rows=setting.N0 + setting.N), setting, [1] if one_shot else Ks,
                           root / f"{setting_name(setting)}.tsv", savings)]
    os_plan = plan if one_shot else None
    if one_shot_store is not None:
        os_plan = one_shot_plan(setting.sigma, schedule)
        targets.append(StoreTarget(VotesStore(root / setting_name(one_shot_store), one_shot_store.as_dict(),
                                              num_classes=10, rows=setting.N0 + setting.N), one_shot_store, [1],
                                   root / f"{setting_name(one_shot_store)}.tsv", savings, ids=ids))
    purifier = Purifier(net, classifier, None if one_shot else plan, os_plan, setting.seed, rows=rows,
                        shared_first_step=shared)
    began = time.perf_counter()
    run_certification(purifier, dataset, ids, targets, alpha, checkpoint_seconds=1e9)
    cost.seconds += time.perf_counter() - began
    cost.unet += purifier.unet_rows
    cost.used += purifier.unet_used
    cost.classifier += purifier.classifier_rows
    cost.images += len(ids) * len(targets)


def setting_name(setting: Setting) -> str:
    return f"{setting.method}-sigma{setting.sigma:g}-b{setting.b}-K{setting.K}"


def certified_fields(tsv: Path) -> list[dict]:
    """Per row: what tables and figures use (label, correct, the radius of a correct row) and predict."""
    header, *lines = tsv.read_text().splitlines()
    cols = header.split("\t")
    out = []
    for line in lines:
        r = dict(zip(cols, line.split("\t")))
        out.append({"certified": (r["idx"], r["label"], r["correct"], r["radius"] if r["correct"] == "1" else ""),
                    "predict": r["predict"] if r["stop"] != "hopeless" else None})
    return out


def identical(a: dict, b: dict) -> bool:
    """Equal certified fields in every TSV, and equal predict wherever both define it."""
    if a.keys() != b.keys():
        return False
    for name in a:
        if [r["certified"] for r in a[name]] != [r["certified"] for r in b[name]]:
            return False
        if any(x["predict"] != y["predict"] for x, y in zip(a[name], b[name])
               if x["predict"] is not None and y["predict"] is not None):
            return False
    return True


def run_row(config, models: Path, images: int, shared: bool, savings: Savings, provide: bool, root: Path):
    data = config["datasets"]["digits"]
    net, schedule = load_diffusion("bundle", models / "digits-unet.pt")
    classifier = build_classifier("digits-cnn", checkpoint=models / "digits-cnn.pt")
    dataset = load_dataset("digits")
    cost = Cost()
    stores = grid.settings(config)
    provided = grid.one_shot_providers(config) if provide else {}
    for s in stores:
        setting = Setting("digits", "bundle", s.key.classifier, s.key.sigma, s.key.b, s.K, N0=data["N0"],
                          N=data["N"], seed=config["seed"], method=s.key.method)
        ids = s.ids[:images]
        if s.key.one_shot:
            own = [i for i in ids if i not in provided.get(s.name, {})]
            if own:
                certify_store(net, classifier, schedule, setting, [1], own, data["batch"], config["alpha"], shared,
                              savings, root, None, dataset, cost)
            continue
        one_shot = grid.provided_one_shot(config, s) if provide else None
        os_setting = one_shot_setting(setting) if one_shot else None
        os_ids = [i for i in ids if one_shot and i in set(one_shot[1])]
        if one_shot and os_ids != ids:
            raise SystemExit("benchmark: a DensePure store provides one-shot votes for some of its images only")
        certify_store(net, classifier, schedule, setting, grid.served_Ks(config, s), ids, data["batch"],
                      config["alpha"], shared, savings, root, os_setting, dataset, cost)
    return cost


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, required=True, help="the trained models of a finished default run")
    p.add_argument("--config", default="config/config.yaml", help="the embedded default's config")
    p.add_argument("--images", type=int, default=30, help="images per store [30: all]")
    p.add_argument("--threads", type=int, default=1, help="CPU threads [1, as the default's jobs]")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    results, outputs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, shared, savings, provide) in enumerate(ROWS):
            root = Path(tmp) / f"row{i}"
            cost = run_row(config, args.models, args.images, shared, savings, provide, root)
            outputs.append({p.name: certified_fields(p) for p in sorted(root.glob("*.tsv"))})
            results.append((name, cost))
            print(f"[{cost.seconds:.0f} s] {name}", file=sys.stderr)
    base = results[1][1]
    print(f"embedded default, {args.images} images per store, {args.threads} thread(s), "
          f"{results[0][1].images} certified images per row\n")
    print("| | UNet images per image | classifier images per image | seconds per image | UNet vs shared first step "
          "| padding | outputs identical |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for (name, cost), out in zip(results, outputs):
        same = "yes" if identical(out, outputs[0]) else "NO"
        print(f"| {name} | {cost.unet / cost.images:,.0f} | {cost.classifier / cost.images:,.0f} | "
              f"{cost.seconds / cost.images:.2f} | {cost.unet / base.unet:.2f} | {1 - cost.used / cost.unet:.1%} | "
              f"{same} |")
    return 0 if all(identical(out, outputs[0]) for out in outputs) else 1


if __name__ == "__main__":
    sys.exit(main())
