"""Printed names: datasets, classifiers (with their aliases) and methods, as the paper spells them."""

from __future__ import annotations

from collections.abc import Mapping

from densepure.core.methods import ONE_SHOT_METHODS

DATASET_LABELS = {"cifar10": "CIFAR-10", "imagenet": "ImageNet", "digits": "digits"}
CLASSIFIER_LABELS = {"vit-b16": "ViT-B/16", "wrn-28-10": "WRN28-10", "beit-large": "BEiT", "wrn-50-2": "WRN50-2",
                     "resnet-152": "ResNet-152", "mixer-b16": "MLP-Mixer"}
# Other names of the same classifier: registered names, reference CLI names, paper spellings (lower case).
CLASSIFIER_ALIASES = {"vit-b16": {"vit-b16-cifar10", "vit", "vit-b/16"},
                      "wrn-28-10": {"cifar-wrn", "wrn28-10"},
                      "beit-large": {"beit-large-512", "beit", "beit_large_patch16_512"},
                      "wrn-50-2": {"wrn", "wrn50-2", "wide_resnet50_2"},
                      "resnet-152": {"resnet", "resnet152"},
                      "mixer-b16": {"mixer-b16-miil", "mixer"}}
# Built-in methods: b-step DensePure, the DensePure code's one-shot (the paper's "Carlini" rows) and Carlini et
# al.'s own code path. Any other method is a row when it has a display label (imported results, a spec).
METHOD_LABELS = {"densepure": "Ours", "onestep": "Carlini", "carlini": "Carlini (own code)"}
LEGEND_LABELS = {"onestep": "Carlini (one-shot)", "carlini": "Carlini, own code (one-shot)"}
# Section 3's figures (the exact model): each one-shot method as the paper names what it computes.
THEORY_LABELS = {"densepure": "DensePure", "onestep": "one-shot (DensePure code)", "carlini": "Carlini et al."}
BASELINES = ONE_SHOT_METHODS  # the one-shot baselines, preferred in this order
PAPER_METHOD_KEY = {"densepure": "densepure", "onestep": "carlini", "carlini": "carlini"}


def dataset_label(name: str) -> str:
    return DATASET_LABELS.get(str(name), str(name))


def canonical_classifier(name: str) -> str:
    """The key of :data:`CLASSIFIER_LABELS` that ``name`` (or an alias, case-insensitive) stands for, else ``name``
    lower-cased: ``beit-large-512`` -> ``beit-large``."""
    n = str(name).strip().lower()
    for key, aliases in CLASSIFIER_ALIASES.items():
        if n == key or n in aliases:
            return key
    return n


def classifier_label(name: str) -> str:
    """Printed name of a classifier (the paper's spelling): ``vit-b16-cifar10`` -> ``ViT-B/16``."""
    return CLASSIFIER_LABELS.get(canonical_classifier(name), str(name))


def classifier_matches(written: str, key: str) -> bool:
    """Whether the classifier name written in a TSV is the spec's ``key``: the same classifier up to aliases
    (:func:`canonical_classifier`: ``vit-b16-cifar10`` for ``vit-b16``). Names are matched whole: ``resnet110`` is
    not ``resnet110-noise0.25``."""
    return canonical_classifier(written) == canonical_classifier(key)


def method_label(method: str, labels: Mapping[str, str] | None = None) -> str:
    """Display label of a method key: ``labels`` first (a spec's ``method_labels``, imported results' labels), then
    the built-in ones; ValueError when there is none (a row must say what it is)."""
    labels = {**METHOD_LABELS, **(labels or {})}
    if method not in labels:
        raise ValueError(f"method {method!r} has no display label: give one with `method_labels: {{{method}: ...}}` "
                         "in the artifact spec, or import its results with `densepure import ... --label`")
    return labels[method]


def legend_label(method: str, labels: Mapping[str, str] | None = None) -> str:
    """Label of a baseline's line in a figure legend: ``Carlini (one-shot)``, or the method's display label."""
    return LEGEND_LABELS.get(method) or method_label(method, labels)


def theory_label(method: str, K: int | None = None) -> str:
    """Legend label of a method in Section 3's figures: ``DensePure (K = 11)``, ``one-shot (DensePure code)``,
    ``Carlini et al.``; another method keeps its key."""
    text = THEORY_LABELS.get(method, method)
    return f"{text} (K = {int(K)})" if method == "densepure" and K is not None else text


def method_order(methods, labels: Mapping[str, str] | None = None) -> list[str]:
    """Table row order: the one-shot baselines first (as the paper), then other methods as given, DensePure last.
    ValueError for a method without a display label."""
    methods = list(dict.fromkeys(methods))
    for m in methods:
        method_label(m, labels)
    others = [m for m in methods if m not in BASELINES and m != "densepure"]
    return [m for m in BASELINES if m in methods] + others + (["densepure"] if "densepure" in methods else [])
