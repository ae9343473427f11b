"""Off-the-shelf classifiers that label the purified images, with the reference's preprocessing built in.

Every classifier built here is an ``nn.Module`` (:class:`Classifier`) that takes the purified batch ``x`` in
[-1, 1] at the dataset's resolution (``B x 3 x H x W``) and returns logits. Resizing and normalisation happen
inside the module with torch ops on ``x``'s device (no CPU/numpy round trip, no host sync).

Two preprocessing modes (docs/reference-behaviour.md#ref-6-2, #ref-10-9 and #ref-10-10):

* ``"reference"`` (default) reproduces what DensePure's driver fed each model, **including its mistakes**: the
  timm CNN/Mixer classifiers (``wrn-50-2``, ``resnet-152``, ``mixer-b16-miil``) receive un-normalised [-1, 1]
  inputs; the CIFAR WRN-28-10 is normalised with std (0.2471, 0.2435, 0.2616); the CIFAR ViT goes through an
  exact emulation of the 2022 ``ViTFeatureExtractor`` (uint8 truncation + Pillow bilinear resize).
* ``"correct"`` feeds each model what its weights were trained on (timm config mean/std on [0, 1] inputs; the
  WRN's training std; a float bilinear resize for the ViT). Resizing is otherwise unchanged so that the switch
  isolates the normalisation bug.

Weights are only ever read from a local file (``pretrained=False`` everywhere; nothing is downloaded). Accepted
files: torch pickles (``.pth``/``.pt``/``.bin``/``.t7``, state dicts possibly nested under ``state_dict`` /
``model`` / ``net`` / ``module``, or a pickled whole model), ``.safetensors``, or a Hugging Face model folder.
Pickled whole models (meliketoy's ``wide-resnet-28x10.t7``) are read with a restricted unpickler that replaces
every non-tensor class by an inert stand-in, so the original source is not needed and no foreign code runs.

User errors (unknown name, missing file, state dict that does not fit) raise :class:`ClassifierError`, a
``ValueError`` with a one-line message."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from densepure.models.checkpoints import CHECKPOINT_FORMATS, load_checkpoint_file, load_state_dict_into
from densepure.models.errors import ClassifierError
from densepure.models.preprocessing import (
    CIFAR10_MEAN,
    CIFAR10_STD_REFERENCE,
    CIFAR10_STD_TRAINING,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PIL_BILINEAR_UINT8,
    ClassifierInput,
    Normalization,
    Preprocessing,
    PreprocessingMode,
    timm_preprocessing,
)
from densepure.models.wideresnet import WideResNet


class RandomWeightsWarning(UserWarning):
    """``build_classifier`` was called without a checkpoint: the model has random weights."""


class Classifier(nn.Module):
    """``logits = model(preprocess(x))`` for a purified batch ``x`` in [-1, 1]."""

    def __init__(self, model: nn.Module, preprocessing: Preprocessing, name: str = "", mode: str = "reference"):
        super().__init__()
        self.name = name
        self.mode = mode
        self.preprocess = ClassifierInput(preprocessing)
        self.model = model

    @property
    def preprocessing(self) -> Preprocessing:
        return self.preprocess.preprocessing

    def forward(self, x: Tensor) -> Tensor:
        return self.model(self.preprocess(x))


@dataclass(frozen=True)
class ClassifierSpec:
    """How to build one classifier and what the reference fed it.

    ``architecture``: timm model name (with pretrained tag, used only for its config; never downloaded), or a
    descriptive name when ``factory`` builds the model. ``factory(num_classes=..., **kwargs) -> nn.Module``;
    ``None`` means ``timm.create_model(architecture, pretrained=False, ...)``. ``input_size`` ``None`` = no
    resize. ``reference_norm`` / ``correct_norm``: ``None`` = feed [-1, 1] as is. ``correct_interpolation`` /
    ``correct_antialias`` override the resize for the ``"correct"`` mode (default: same as reference).
    ``checkpoint_format``: a key of :data:`CHECKPOINT_FORMATS`. ``plugin``: built by a user's ``module:function``,
    which may load its own weights (no warning without a checkpoint). ``crop_pct`` / ``crop_mode``: resize to
    ``input_size / crop_pct`` and center crop (timm's evaluation transform); ``None`` resizes the whole image.
    ``timm_data_config``: the built model's preprocessing is ``timm.data.resolve_model_data_config(model)``
    (:func:`densepure.models.preprocessing.timm_preprocessing`), in both modes, rather than the fields above.
    """

    name: str
    dataset: str
    architecture: str
    num_classes: int
    input_size: int | tuple[int, int] | None
    interpolation: str = "bicubic"
    antialias: bool = False
    reference_norm: Normalization | None = None
    correct_norm: Normalization | None = None
    checkpoint_format: str = "state_dict"
    factory: Callable[..., nn.Module] | None = field(default=None, compare=False)
    correct_interpolation: str | None = None
    correct_antialias: bool | None = None
    description: str = ""
    plugin: bool = False
    crop_pct: float | None = None
    crop_mode: str = "center"
    timm_data_config: bool = False

    def __post_init__(self):
        if self.checkpoint_format not in CHECKPOINT_FORMATS:
            raise ClassifierError(
                f"{self.name}: unknown checkpoint format {self.checkpoint_format!r}; "
                f"known: {', '.join(CHECKPOINT_FORMATS)}"
            )

    def preprocessing(self, mode: PreprocessingMode = "reference") -> Preprocessing:
        if mode == "reference":
            return Preprocessing(self.input_size, self.interpolation, self.antialias, self.reference_norm,
                                 self.crop_pct, self.crop_mode)
        if mode == "correct":
            interpolation = self.correct_interpolation or self.interpolation
            antialias = self.antialias if self.correct_antialias is None else self.correct_antialias
            return Preprocessing(self.input_size, interpolation, antialias, self.correct_norm, self.crop_pct,
                                 self.crop_mode)
        raise ClassifierError(f"preprocessing must be 'reference' or 'correct', got {mode!r}")

    def build_model(self, num_classes: int | None = None, **kwargs) -> nn.Module:
        """The bare network with random weights (``kwargs`` go to the factory / ``timm.create_model``)."""
        num_classes = self.num_classes if num_classes is None else num_classes
        if self.factory is not None:
            return self.factory(num_classes=num_classes, **kwargs)
        import timm

        return timm.create_model(self.architecture, pretrained=False, num_classes=num_classes, **kwargs)


#: name -> spec. Add entries with :func:`register_classifier`.
CLASSIFIERS: dict[str, ClassifierSpec] = {}


def register_classifier(spec_or_factory, *, overwrite: bool = False):
    """Register a :class:`ClassifierSpec`, or a zero-argument callable returning one (usable as a decorator).

    Returns its argument. A name already registered raises :class:`ClassifierError` unless ``overwrite``.
    """
    spec = spec_or_factory if isinstance(spec_or_factory, ClassifierSpec) else spec_or_factory()
    if not isinstance(spec, ClassifierSpec):
        raise ClassifierError(f"register_classifier needs a ClassifierSpec, got {type(spec).__name__}")
    if spec.name.startswith("timm:"):
        raise ClassifierError(f"names starting with 'timm:' are reserved for timm models: {spec.name}")
    if spec.name in CLASSIFIERS and not overwrite:
        raise ClassifierError(f"classifier {spec.name!r} is already registered (pass overwrite=True)")
    CLASSIFIERS[spec.name] = spec
    return spec_or_factory


def list_classifiers() -> list[str]:
    """Registered names and those installed packages register (entry-point group ``densepure.classifiers``),
    sorted. Any timm model is also available as ``timm:<model_name>``, and any network of yours as
    ``module:function`` (see :func:`get_classifier_spec`)."""
    from densepure.models.plugins import registered

    return sorted(set(CLASSIFIERS) | set(registered("classifier")))


def _timm_spec(model_name: str) -> ClassifierSpec:
    """A timm model with timm's data config (``resolve_data_config`` of its pretrained config here; of the built
    model, with its keyword arguments, in :func:`build_classifier`): input size, interpolation, mean/std and
    crop_pct, in both modes."""
    import timm
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    if not model_name or not timm.is_model(model_name):
        raise ClassifierError(f"unknown timm model {model_name!r} (see timm.list_models())")
    try:
        cfg = get_pretrained_cfg(model_name)
    except RuntimeError as exc:
        raise ClassifierError(f"timm:{model_name}: {exc}") from exc
    if cfg is None:
        raise ClassifierError(f"timm:{model_name}: timm has no pretrained config for it")
    prep = timm_preprocessing(resolve_data_config(pretrained_cfg=cfg.to_dict()))
    return ClassifierSpec(
        name=f"timm:{model_name}",
        dataset="imagenet" if cfg.num_classes == 1000 else "",
        architecture=model_name,
        num_classes=cfg.num_classes or 1000,
        input_size=prep.size,
        interpolation=prep.interpolation,
        antialias=prep.antialias,
        reference_norm=prep.normalization,
        correct_norm=prep.normalization,
        checkpoint_format="timm",
        crop_pct=prep.crop_pct,
        crop_mode=prep.crop_mode,
        timm_data_config=True,
        description="timm model with timm's data config (no reference: both modes use it)",
    )


def _plugin_spec(name: str, factory: Callable[..., nn.Module]) -> ClassifierSpec:
    """A classifier built by your ``factory`` (a ``module:function`` or an installed package's entry point):
    ``factory(num_classes=n, **kwargs)`` returns an ``nn.Module`` mapping the purified batch (B x C x H x W in
    [-1, 1], the dataset's resolution) to logits; any resizing or normalisation is its own."""
    return ClassifierSpec(name=name, dataset="", architecture=name, num_classes=0, input_size=None, factory=factory,
                          plugin=True, description="your network, fed the purified [-1,1] images")


def _built(spec: ClassifierSpec, num_classes: int | None, kwargs: dict) -> nn.Module:
    """The network of ``spec`` built with ``kwargs``, the user's errors (a function of theirs, arguments the
    factory does not take) as one line."""
    try:
        model = spec.build_model(num_classes, **kwargs)
    except Exception as err:  # whatever the user's function (or a factory, given the user's kwargs) raises
        arguments = ", ".join(f"{key}={value!r}" for key, value in {"num_classes": num_classes, **kwargs}.items())
        raise ClassifierError(f"classifier {spec.name}({arguments}) failed: {type(err).__name__}: {err}") from None
    if not isinstance(model, nn.Module):
        raise ClassifierError(f"classifier {spec.name} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _registered_spec(name: str) -> ClassifierSpec | None:
    """What an installed package registers under ``name``: a :class:`ClassifierSpec`, or a callable that returns
    one when called without arguments, or else the network factory itself."""
    from densepure.models.plugins import PluginError, load_registered

    try:
        obj = load_registered("classifier", name)
    except PluginError as err:
        raise ClassifierError(str(err)) from None
    if obj is None or isinstance(obj, ClassifierSpec):
        return obj
    return _plugin_spec(name, obj)


def get_classifier_spec(name: str) -> ClassifierSpec:
    """The registered spec; a name an installed package registers (:func:`_registered_spec`; a built-in name
    registered again is a ClassifierError); for ``timm:<model_name>`` one made from timm's data config; for
    ``module:function`` your own network (:func:`_plugin_spec`)."""
    from densepure.models.plugins import PluginError, import_object, is_target, refuse_builtin_name

    if not isinstance(name, str):
        raise ClassifierError(f"classifier name must be a string, got {name!r}")
    try:
        if name in CLASSIFIERS:
            refuse_builtin_name("classifier", name)
            return CLASSIFIERS[name]
        if name.startswith("timm:"):
            return _timm_spec(name[len("timm:"):])
        if is_target(name):
            return _plugin_spec(name, import_object(name, "classifier"))
    except PluginError as err:
        raise ClassifierError(str(err)) from None
    spec = _registered_spec(name)
    if spec is not None:
        return spec
    raise ClassifierError(f"unknown classifier {name!r}; known: {', '.join(list_classifiers())}, timm:<model_name> "
                          "or an importable module:function")


def build_classifier(
    name: str,
    checkpoint: str | Path | None = None,
    preprocessing: PreprocessingMode = "reference",
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    **model_kwargs,
) -> Classifier:
    """Build classifier ``name`` in eval mode on ``device``, weights read ONLY from the local ``checkpoint``.

    ``preprocessing="reference"`` reproduces DensePure's inputs (un-normalised [-1, 1] for the timm CNN/Mixer
    models, the reference CIFAR std for the WRN, the 2022 HF feature extractor for the ViT); ``"correct"`` feeds
    what the weights expect. ``num_classes`` overrides the spec's. ``model_kwargs`` go to the model factory /
    ``timm.create_model`` (e.g. reduced ``depth`` for tests, ``in_chans=1``; a config's ``kwargs``). A timm model
    named ``timm:<model_name>`` is fed what ``timm.data.create_transform(**resolve_model_data_config(model))`` makes
    of the images at evaluation (:func:`densepure.models.preprocessing.timm_preprocessing`). Without
    ``checkpoint`` the weights are random and a :class:`RandomWeightsWarning` is issued (not for your own
    networks, which may load their own).
    """
    spec = get_classifier_spec(name)
    prep = spec.preprocessing(preprocessing)
    model = _built(spec, num_classes, model_kwargs)
    if spec.timm_data_config:
        from timm.data import resolve_model_data_config

        prep = timm_preprocessing(resolve_model_data_config(model), model_kwargs.get("in_chans"))
    if checkpoint is None and not spec.plugin:
        warnings.warn(f"{spec.name}: no checkpoint given, the classifier has random weights",
                      RandomWeightsWarning, stacklevel=2)
    elif checkpoint is not None:
        state_dict = load_checkpoint_file(checkpoint)
        state_dict = CHECKPOINT_FORMATS[spec.checkpoint_format](state_dict, model)
        load_state_dict_into(model, state_dict, source=checkpoint)
    return Classifier(model, prep, spec.name, preprocessing).to(device).eval()


def _wrn_factory(num_classes: int = 10, depth: int = 28, widen_factor: int = 10, dropout_rate: float = 0.3,
                 **kwargs) -> nn.Module:
    if kwargs:
        raise TypeError(f"unexpected WideResNet arguments: {', '.join(kwargs)}")
    return WideResNet(depth, widen_factor, dropout_rate, num_classes)


def _digits_cnn_factory(num_classes: int = 10, **kwargs) -> nn.Module:
    from densepure.models.small_models import DigitsCNN

    return DigitsCNN(num_classes=num_classes, **kwargs)


def _hf_vit_factory(num_classes: int = 10, **kwargs) -> nn.Module:
    import timm

    kwargs.setdefault("norm_layer", functools.partial(nn.LayerNorm, eps=1e-12))  # HF ViT layer_norm_eps
    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=num_classes, **kwargs)


def _imagenet_timm_spec(name: str, architecture: str, correct_norm: Normalization, description: str) -> ClassifierSpec:
    """A timm ImageNet model as DensePure fed it: bicubic to 224 without antialias, [-1, 1] un-normalised."""
    return ClassifierSpec(name=name, dataset="imagenet", architecture=architecture, num_classes=1000, input_size=224,
                          interpolation="bicubic", antialias=False, reference_norm=None, correct_norm=correct_norm,
                          checkpoint_format="timm", description=description)


_BUILTINS = (
    ClassifierSpec(
        name="beit-large-512",
        dataset="imagenet",
        architecture="beit_large_patch16_512.in22k_ft_in22k_in1k",
        num_classes=1000,
        input_size=512,
        interpolation="bicubic",
        antialias=False,
        reference_norm=None,
        correct_norm=None,
        checkpoint_format="timm",
        description="ImageNet main classifier. Reference: bicubic 256->512 without antialias, no clamp, [-1,1] fed "
        "directly, which is correct for BEiT (mean=std=0.5). Original .pth (nested under 'model') is converted "
        "with timm's BEiT checkpoint filter.",
    ),
    ClassifierSpec(
        name="vit-b16-cifar10",
        dataset="cifar10",
        architecture="vit_base_patch16_224 (HF aaraki/vit-base-patch16-224-in21k-finetuned-cifar10)",
        num_classes=10,
        input_size=224,
        interpolation=PIL_BILINEAR_UINT8,
        antialias=True,
        reference_norm=Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        correct_norm=Normalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        checkpoint_format="hf_vit",
        factory=_hf_vit_factory,
        correct_interpolation="bilinear",
        correct_antialias=True,
        description="CIFAR-10 main classifier: HF ViT-B/16 weights converted to timm (LayerNorm eps 1e-12). "
        "Reference: 2022 ViTFeatureExtractor (floor(255*x01) uint8, Pillow bilinear to 224, *1/255, (x-0.5)/0.5), "
        "emulated bit-exactly. Correct: float bilinear of x01, mean=std=0.5.",
    ),
    ClassifierSpec(
        name="wrn-28-10",
        dataset="cifar10",
        architecture="Wide_ResNet(28, 10, dropout 0.3) of meliketoy/wide-resnet.pytorch",
        num_classes=10,
        input_size=None,
        reference_norm=Normalization(CIFAR10_MEAN, CIFAR10_STD_REFERENCE),
        correct_norm=Normalization(CIFAR10_MEAN, CIFAR10_STD_TRAINING),
        checkpoint_format="wrn_pickle",
        factory=_wrn_factory,
        description="CIFAR-10 WRN-28-10; checkpoint is a pickled whole model under 'net' (wide-resnet-28x10.t7). "
        "Reference std (0.2471, 0.2435, 0.2616); correct = the training config's (0.2023, 0.1994, 0.2010), "
        "unverified.",
    ),
    _imagenet_timm_spec("wrn-50-2", "wide_resnet50_2.racm_in1k", Normalization(IMAGENET_MEAN, IMAGENET_STD),
                        "Reference feeds bicubic-224 [-1,1] UN-normalised (bug, docs/reference-behaviour.md#ref-10-9); "
                        "correct = ImageNet mean/std on x01."),
    _imagenet_timm_spec("resnet-152", "resnet152.a1h_in1k", Normalization(IMAGENET_MEAN, IMAGENET_STD),
                        "Reference feeds bicubic-224 [-1,1] UN-normalised (bug); correct = ImageNet mean/std on x01."),
    _imagenet_timm_spec("mixer-b16-miil", "mixer_b16_224.miil_in21k_ft_in1k",
                        Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
                        "Reference feeds bicubic-224 [-1,1] (bug); its config expects [0,1] (mean 0, std 1)."),
    ClassifierSpec(
        name="digits-cnn",
        dataset="digits",
        architecture="DigitsCNN (densepure.models.small_models)",
        num_classes=10,
        input_size=None,
        factory=_digits_cnn_factory,
        description="Embedded default: a small CNN on scikit-learn's 8x8 digits, trained by the workflow; fed [-1,1].",
    ),
)


for _spec in _BUILTINS:
    register_classifier(_spec)


del _spec


def check_classifier_dataset(classifier: str, dataset: str) -> None:
    """Refuse a registered classifier of another dataset (its input size, channels or classes would not fit)."""
    spec = get_classifier_spec(classifier)
    if spec.dataset and spec.dataset != dataset:
        raise ValueError(f"classifier {classifier!r} is for {spec.dataset}, not {dataset} "
                         "(see `densepure classifiers`)")
