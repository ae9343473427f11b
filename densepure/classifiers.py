"""Off-the-shelf classifiers that label the purified images, with the reference's preprocessing built in.

Every classifier built here is an ``nn.Module`` (:class:`Classifier`) that takes the purified batch ``x`` in
[-1, 1] at the dataset's resolution (``B x 3 x H x W``) and returns logits. Resizing and normalisation happen
inside the module with torch ops on ``x``'s device (no CPU/numpy round trip, no host sync).

Two preprocessing modes (SPEC §6.2, §10 items 9-10):

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
``ValueError`` with a one-line message.
"""

from __future__ import annotations

import functools
import pickle
import re
import sys
import types
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD_REFERENCE",
    "CIFAR10_STD_TRAINING",
    "CLASSIFIERS",
    "Classifier",
    "ClassifierError",
    "ClassifierInput",
    "ClassifierSpec",
    "Normalization",
    "Preprocessing",
    "RandomWeightsWarning",
    "WideBasic",
    "WideResNet",
    "build_classifier",
    "checkpoint_file",
    "convert_hf_vit_state_dict",
    "get_classifier_spec",
    "list_classifiers",
    "load_checkpoint_file",
    "load_state_dict_into",
    "pil_bilinear_resize_levels",
    "register_classifier",
    "resize",
]

PreprocessingMode = Literal["reference", "correct"]
#: Interpolation modes: the ``F.interpolate`` ones, plus the emulation of the 2022 HF ViT feature extractor
#: (float -> uint8 truncation, Pillow bilinear resize of the uint8 image).
PIL_BILINEAR_UINT8 = "pil_bilinear_uint8"
_TORCH_MODES = ("bicubic", "bilinear", "nearest", "nearest-exact", "area")

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
#: std DensePure's driver uses for the CIFAR WRN-28-10 (SPEC §6.2).
CIFAR10_STD_REFERENCE = (0.2471, 0.2435, 0.2616)
#: std of meliketoy/wide-resnet.pytorch's training config (``config.py``); from memory, unverified (SPEC §10.9).
CIFAR10_STD_TRAINING = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ClassifierError(ValueError):
    """A user-caused classifier problem (unknown name, missing checkpoint, keys that do not fit)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


class RandomWeightsWarning(UserWarning):
    """``build_classifier`` was called without a checkpoint: the model has random weights."""


# ----------------------------------------------------------------------------------------------------------------
# Resizing
# ----------------------------------------------------------------------------------------------------------------


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def resize(x: Tensor, size: int | tuple[int, int] | None, mode: str = "bicubic", antialias: bool = False) -> Tensor:
    """``F.interpolate`` of a ``B x C x H x W`` batch to ``size`` (``align_corners=False``); no clamping.

    ``size=None`` or a batch already at ``size`` is returned unchanged. Note (SPEC §6.2): bicubic with
    ``antialias=True`` uses the a = -0.5 kernel even when upsampling, ``antialias=False`` the a = -0.75 one, and
    both overshoot [-1, 1]. DensePure resizes without antialias; Carlini et al. with.
    """
    if size is None:
        return x
    size = _pair(size)
    if tuple(x.shape[-2:]) == size:
        return x
    if mode not in _TORCH_MODES:
        raise ClassifierError(f"unknown resize mode {mode!r}; use one of {', '.join(_TORCH_MODES)}")
    align_corners = False if mode in ("bilinear", "bicubic") else None
    return F.interpolate(x, size=size, mode=mode, align_corners=align_corners, antialias=antialias)


_PIL_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit images (libImaging/Resample.c)


def _pil_bilinear_filter(t: float) -> float:
    t = abs(t)
    return 1.0 - t if t < 1.0 else 0.0


@functools.lru_cache(maxsize=64)
def _pil_bilinear_matrix(in_size: int, out_size: int) -> Tensor:
    """Pillow's fixed-point bilinear coefficients as an ``out x in`` float64 matrix of integers.

    Same double-precision arithmetic as Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc``: support
    scaled by the downscale factor, taps in ``[int(center - support + 0.5), int(center + support + 0.5))``,
    weights normalised to sum 1, then rounded to ``PRECISION_BITS`` fixed point.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    inv = 1.0 / filterscale
    one = float(1 << _PIL_PRECISION_BITS)
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        weights = [_pil_bilinear_filter(((j - center) + 0.5) * inv) for j in range(xmin, xmax)]
        total = 0.0
        for w in weights:
            total += w
        for j, w in zip(range(xmin, xmax), weights):
            k = w / total if total != 0.0 else w
            matrix[xx, j] = float(int(0.5 + k * one) if k >= 0 else int(-0.5 + k * one))
    return matrix


_PIL_MATRIX_ON_DEVICE: dict[tuple[int, int, str], Tensor] = {}


def _pil_matrix(in_size: int, out_size: int, device: torch.device) -> Tensor:
    key = (in_size, out_size, str(device))
    if key not in _PIL_MATRIX_ON_DEVICE:  # one host->device copy per (size, device), then cached
        _PIL_MATRIX_ON_DEVICE[key] = _pil_bilinear_matrix(in_size, out_size).to(device)
    return _PIL_MATRIX_ON_DEVICE[key]


def _pil_round(acc: Tensor) -> Tensor:
    # Pillow: (acc + 2^(P-1)) >> P, clipped to [0, 255]; acc is an exact integer in float64.
    half = float(1 << (_PIL_PRECISION_BITS - 1))
    return torch.floor((acc + half) / float(1 << _PIL_PRECISION_BITS)).clamp_(0.0, 255.0)


def pil_bilinear_resize_levels(levels: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Bit-exact torch emulation of Pillow's ``Image.resize(size, BILINEAR)`` on an 8-bit RGB image.

    ``levels``: ``... x H x W`` tensor of integer values in [0, 255] (any float dtype). Returns the resized
    levels (integers in [0, 255], same dtype). Like Pillow: horizontal pass first, rounded to uint8, then the
    vertical pass, each with Pillow's 22-bit fixed-point coefficients; a pass is skipped when that side keeps its
    size. Computed in float64, where every product and sum is an exact integer. The float bilinear resize
    (``F.interpolate(..., 'bilinear', antialias=True)``, same filter) followed by rounding differs from this by
    1 level on roughly 10-20 % of the pixels (Pillow's intermediate uint8 rounding and fixed-point weights), which
    is why the reference path uses this emulation.
    """
    out_h, out_w = _pair(size)
    in_h, in_w = levels.shape[-2:]
    y = levels.to(torch.float64)
    if in_w != out_w:
        y = _pil_round(torch.matmul(y, _pil_matrix(in_w, out_w, y.device).T))
    if in_h != out_h:
        y = _pil_round(torch.matmul(_pil_matrix(in_h, out_h, y.device), y))
    return y.to(levels.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Preprocessing description and module
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x01 - mean) / std`` applied to ``x01 = (x + 1) / 2``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class Preprocessing:
    """What the classifier module does to the purified [-1, 1] batch before the network.

    ``size``: target ``H`` (int) or ``(H, W)``; ``None`` keeps the input resolution. ``interpolation``: an
    ``F.interpolate`` mode or ``"pil_bilinear_uint8"`` (the 2022 HF ViT feature extractor: ``floor(255 x01)`` as
    uint8, Pillow bilinear, ``* (1/255)``). ``normalization``: ``None`` feeds the resized [-1, 1] tensor as is;
    otherwise ``(x01 - mean) / std``.
    """

    size: int | tuple[int, int] | None
    interpolation: str = "bicubic"
    antialias: bool = False
    normalization: Normalization | None = None

    def __post_init__(self):
        if self.interpolation not in _TORCH_MODES + (PIL_BILINEAR_UINT8,):
            raise ClassifierError(f"unknown interpolation {self.interpolation!r}")

    def describe(self) -> str:
        size = "input resolution" if self.size is None else "x".join(map(str, _pair(self.size)))
        if self.interpolation == PIL_BILINEAR_UINT8:
            resize_text = f"uint8 floor(255*x01) + Pillow bilinear to {size}, /255"
        else:
            resize_text = f"{self.interpolation} to {size} (antialias={self.antialias})"
        norm = self.normalization
        norm_text = "fed [-1,1] as is" if norm is None else f"(x01 - {norm.mean}) / {norm.std}"
        return f"{resize_text}; {norm_text}"


class ClassifierInput(nn.Module):
    """Applies a :class:`Preprocessing` with torch ops on the input's device (buffers move with ``.to``)."""

    def __init__(self, preprocessing: Preprocessing):
        super().__init__()
        self.preprocessing = preprocessing
        norm = preprocessing.normalization
        mean = torch.tensor(norm.mean if norm else (0.0, 0.0, 0.0), dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(norm.std if norm else (1.0, 1.0, 1.0), dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        p = self.preprocessing
        if p.interpolation == PIL_BILINEAR_UINT8:
            work = x if x.dtype in (torch.float32, torch.float64) else x.float()
            x01 = (work + 1) / 2
            # numpy's float->uint8 cast truncates; the reference never sees values outside [0, 1] because the
            # purified output is clipped. We saturate instead of wrapping.
            levels = torch.floor(x01 * 255).clamp_(0.0, 255.0)
            if p.size is not None:
                levels = pil_bilinear_resize_levels(levels, p.size)
            x01 = levels * (1 / 255.0)
            if p.normalization is None:
                return (x01 * 2 - 1).to(x.dtype)
            return ((x01 - self.mean.to(x01.dtype)) / self.std.to(x01.dtype)).to(x.dtype)
        x = resize(x, p.size, p.interpolation, p.antialias)
        if p.normalization is None:
            return x
        x01 = (x + 1) / 2
        return (x01 - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return self.preprocessing.describe()


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


# ----------------------------------------------------------------------------------------------------------------
# WRN-28-10 of meliketoy/wide-resnet.pytorch (key names match its Wide_ResNet)
# ----------------------------------------------------------------------------------------------------------------


class WideBasic(nn.Module):
    """Pre-activation wide block; stride on ``conv2``; all convs with bias; 1x1 conv shortcut when shapes change."""

    def __init__(self, in_planes: int, planes: int, dropout_rate: float, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, bias=True)
        self.dropout = nn.Dropout(p=dropout_rate)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=True))

    def forward(self, x: Tensor) -> Tensor:
        out = self.dropout(self.conv1(F.relu(self.bn1(x))))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(x)


class WideResNet(nn.Module):
    """WRN-depth-k for 32x32 CIFAR inputs; state-dict keys equal those of meliketoy's ``Wide_ResNet``.

    ``conv1``; ``layer1..3`` of ``(depth - 4) / 6`` :class:`WideBasic` blocks (16k, 32k, 64k channels, strides
    1, 2, 2); ``bn1``; ReLU; ``avg_pool2d(., 8)`` (i.e. global pooling for 32x32 inputs only); ``linear``.
    """

    def __init__(self, depth: int = 28, widen_factor: int = 10, dropout_rate: float = 0.3, num_classes: int = 10):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ClassifierError(f"Wide-ResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        stages = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self._in_planes = stages[0]
        self.conv1 = nn.Conv2d(3, stages[0], kernel_size=3, stride=1, padding=1, bias=True)
        self.layer1 = self._wide_layer(stages[1], n, dropout_rate, stride=1)
        self.layer2 = self._wide_layer(stages[2], n, dropout_rate, stride=2)
        self.layer3 = self._wide_layer(stages[3], n, dropout_rate, stride=2)
        self.bn1 = nn.BatchNorm2d(stages[3], momentum=0.9)
        self.linear = nn.Linear(stages[3], num_classes)

    def _wide_layer(self, planes: int, num_blocks: int, dropout_rate: float, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(WideBasic(self._in_planes, planes, dropout_rate, s))
            self._in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        return self.linear(out.flatten(1))


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint files
# ----------------------------------------------------------------------------------------------------------------


class _StandIn:
    """Inert replacement for a class found in a pickle (modules, numpy scalars, ...): it only keeps its state."""

    dump_patches = False  # read by torch's legacy loader for pickled nn.Module sources
    _origin = "?"

    def __init__(self, *args, **kwargs):
        self.__dict__["_standin_args"] = args

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_standin_state"] = state

    def __call__(self, *args, **kwargs):
        return None

    def __repr__(self):
        return f"<stand-in for {self._origin}>"


@functools.lru_cache(maxsize=None)
def _standin_class(module: str, name: str) -> type:
    return type(name, (_StandIn,), {"_origin": f"{module}.{name}", "__module__": "densepure.classifiers._standins"})


_SAFE_BUILTINS = {"set", "frozenset", "dict", "list", "tuple", "int", "float", "bool", "str", "bytes",
                  "bytearray", "complex", "slice", "object", "range"}


class _StandInUnpickler(pickle.Unpickler):
    """Resolves only tensor-rebuilding functions, containers, dtypes and storages; everything else is a stand-in."""

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "copyreg" and name == "_reconstructor":
            import copyreg

            return copyreg._reconstructor
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return getattr(__import__("builtins"), name)
        if module == "torch._utils" and name.startswith("_rebuild_"):
            return getattr(torch._utils, name)
        if module == "torch.serialization" and name == "_get_layout":
            return super().find_class(module, name)
        if module == "torch":
            obj = getattr(torch, name, None)
            if isinstance(obj, (torch.dtype, torch.layout)) or obj in (torch.Size, torch.device):
                return obj
            if isinstance(obj, type) and name.endswith("Storage"):
                return obj
        if module == "torch.storage" and name in ("UntypedStorage", "TypedStorage"):
            return super().find_class(module, name)
        return _standin_class(module, name)


_STANDIN_PICKLE = types.ModuleType("densepure_standin_pickle")
_STANDIN_PICKLE.Unpickler = _StandInUnpickler
_STANDIN_PICKLE.load = lambda f, **kw: _StandInUnpickler(f, **kw).load()
_STANDIN_PICKLE.__dict__["UnpicklingError"] = pickle.UnpicklingError


def _standin_state_dict(obj: _StandIn, prefix: str = "", out: dict | None = None) -> dict[str, Tensor]:
    out = {} if out is None else out
    state = obj.__dict__
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for key, value in (state.get("_parameters") or {}).items():
        if value is not None:
            out[prefix + key] = value.detach() if isinstance(value, Tensor) else value
    for key, value in (state.get("_buffers") or {}).items():
        if value is not None and key not in non_persistent:
            out[prefix + key] = value
    for key, child in (state.get("_modules") or {}).items():
        if isinstance(child, _StandIn):
            _standin_state_dict(child, f"{prefix}{key}.", out)
    return out


_NESTING_KEYS = ("state_dict", "model", "net", "module")


def _extract_state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    for _ in range(8):
        if isinstance(obj, nn.Module):
            return dict(obj.state_dict())
        if isinstance(obj, _StandIn):
            if "_parameters" not in obj.__dict__:
                raise ClassifierError(f"{path}: pickled object {obj!r} is not a torch module")
            return _standin_state_dict(obj)
        if isinstance(obj, Mapping):
            nested = next((k for k in _NESTING_KEYS if k in obj and not isinstance(obj[k], Tensor)), None)
            if nested is not None:
                obj = obj[nested]
                continue
            if obj and all(isinstance(v, Tensor) for v in obj.values()):
                return {str(k): v for k, v in obj.items()}
            keys = ", ".join(map(str, list(obj)[:8]))
            raise ClassifierError(f"{path}: no state dict found (top-level keys: {keys})")
        break
    raise ClassifierError(f"{path}: no state dict found (got {type(obj).__name__})")


def _strip_prefix(state_dict: dict[str, Tensor], prefix: str = "module.") -> dict[str, Tensor]:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def checkpoint_file(path: str | Path) -> Path:
    """The file a classifier checkpoint ``path`` names: itself, or a Hugging Face model folder's
    ``model.safetensors`` (else ``pytorch_model.bin``); ClassifierError when there is none."""
    path = Path(path)
    if path.is_dir():
        for candidate in ("model.safetensors", "pytorch_model.bin"):
            if (path / candidate).is_file():
                return path / candidate
        raise ClassifierError(f"checkpoint folder {path} has no model.safetensors or pytorch_model.bin")
    if not path.is_file():
        raise ClassifierError(f"checkpoint file not found: {path}")
    return path


def load_checkpoint_file(path: str | Path) -> dict[str, Tensor]:
    """Read a local checkpoint into a flat ``{key: tensor}`` state dict on CPU.

    Accepts a Hugging Face model folder (``model.safetensors`` or ``pytorch_model.bin``), ``.safetensors``, or a
    torch pickle. Pickles are first read with ``weights_only=True``; if that refuses (a pickled whole model such
    as meliketoy's ``.t7``), they are read again with a restricted unpickler that turns every class except
    tensors/containers into an inert stand-in, and the state dict is read off the stand-in module tree. State
    dicts nested under ``state_dict`` / ``model`` / ``net`` / ``module`` and a ``module.`` prefix are unwrapped.
    """
    path = checkpoint_file(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return _strip_prefix(load_file(str(path), device="cpu"))
        except Exception as exc:
            raise ClassifierError(f"cannot read checkpoint {path}: {exc}") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # source-change warnings of pickled modules
                obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_STANDIN_PICKLE)
        except Exception as exc:
            raise ClassifierError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    return _strip_prefix(_extract_state_dict(obj, path))


def load_state_dict_into(model: nn.Module, state_dict: Mapping[str, Tensor], source: str | Path = "state dict") -> None:
    """Strict ``load_state_dict`` with a one-line :class:`ClassifierError` naming the first bad keys and ``source``.

    Missing BatchNorm ``num_batches_tracked`` counters (old checkpoints) are tolerated.
    """
    expected = model.state_dict()
    state_dict = dict(state_dict)
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state_dict:
            state_dict[key] = expected[key].detach().clone()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:3])})")
        raise ClassifierError(f"{source}: state dict does not fit the model: {'; '.join(parts)}")
    for key, value in expected.items():
        if tuple(state_dict[key].shape) != tuple(value.shape):
            raise ClassifierError(
                f"{source}: shape mismatch for {key}: checkpoint {tuple(state_dict[key].shape)}, "
                f"model {tuple(value.shape)}"
            )
    model.load_state_dict(state_dict, strict=True)


# ----------------------------------------------------------------------------------------------------------------
# State-dict conversions (by checkpoint format)
# ----------------------------------------------------------------------------------------------------------------


_HF_VIT_LAYER = re.compile(r"^(?:encoder\.layer|layers)\.(\d+)\.(.+)$")
_HF_VIT_LAYER_MAP = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",  # transformers < 5 names (what the hub checkpoints hold)
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "attention.o_proj": "attn.proj",  # transformers >= 5 in-memory names
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_HF_VIT_QKV = {
    "attention.attention.query": 0, "attention.attention.key": 1, "attention.attention.value": 2,
    "attention.q_proj": 0, "attention.k_proj": 1, "attention.v_proj": 2,
}
_HF_VIT_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
    "classifier.weight": "head.weight",
    "classifier.bias": "head.bias",
}


def convert_hf_vit_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Hugging Face ``ViTForImageClassification`` keys -> timm ``VisionTransformer`` keys.

    query/key/value are concatenated into ``attn.qkv``; ``vit.pooler.*`` is dropped; keys that are already in
    timm form pass through; anything unrecognised is kept unchanged (so a strict load names it).
    """
    if not any(k.startswith(("vit.", "embeddings.", "encoder.", "layers.")) for k in state_dict):
        return dict(state_dict)
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[int, str], dict[int, Tensor]] = {}
    for key, value in state_dict.items():
        short = key[len("vit."):] if key.startswith("vit.") else key
        if short.startswith("pooler."):
            continue
        if short in _HF_VIT_TOP:
            out[_HF_VIT_TOP[short]] = value
            continue
        match = _HF_VIT_LAYER.match(short)
        if match is None:
            out[key] = value
            continue
        index, rest = int(match.group(1)), match.group(2)
        module, _, leaf = rest.rpartition(".")
        if module in _HF_VIT_QKV:
            qkv.setdefault((index, leaf), {})[_HF_VIT_QKV[module]] = value
        elif module in _HF_VIT_LAYER_MAP:
            out[f"blocks.{index}.{_HF_VIT_LAYER_MAP[module]}.{leaf}"] = value
        else:
            out[key] = value
    for (index, leaf), parts in sorted(qkv.items()):
        if set(parts) == {0, 1, 2}:
            out[f"blocks.{index}.attn.qkv.{leaf}"] = torch.cat([parts[0], parts[1], parts[2]], dim=0)
        else:  # incomplete: keep under a name that the strict load will report
            for i, value in parts.items():
                out[f"blocks.{index}.attn.{'qkv'[i]}.{leaf}"] = value
    return out


def _fits(state_dict: Mapping[str, Tensor], model: nn.Module) -> bool:
    expected = model.state_dict()
    return set(state_dict) == set(expected) and all(
        tuple(state_dict[k].shape) == tuple(v.shape) for k, v in expected.items()
    )


def _convert_timm(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """timm state dict as is; otherwise the model module's own ``checkpoint_filter_fn`` (e.g. BEiT's original
    ``.pth``: drops ``relative_position_index``, resizes position tables)."""
    if _fits(state_dict, model):
        return state_dict
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is None:
        return state_dict
    try:
        return dict(filter_fn(state_dict, model))
    except Exception:  # the strict load reports what does not fit
        return state_dict


def _convert_hf_vit(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    return _convert_timm(convert_hf_vit_state_dict(state_dict), model)


#: checkpoint format -> ``(state_dict, model) -> state_dict`` (after unnesting / unpickling).
CHECKPOINT_FORMATS: dict[str, Callable[[dict[str, Tensor], nn.Module], dict[str, Tensor]]] = {
    "state_dict": lambda sd, model: sd,
    "timm": _convert_timm,
    "hf_vit": _convert_hf_vit,
    "wrn_pickle": lambda sd, model: sd,  # the pickled whole model is turned into a state dict while loading
}


# ----------------------------------------------------------------------------------------------------------------
# Specs and registry
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierSpec:
    """How to build one classifier and what the reference fed it.

    ``architecture``: timm model name (with pretrained tag, used only for its config; never downloaded), or a
    descriptive name when ``factory`` builds the model. ``factory(num_classes=..., **kwargs) -> nn.Module``;
    ``None`` means ``timm.create_model(architecture, pretrained=False, ...)``. ``input_size`` ``None`` = no
    resize. ``reference_norm`` / ``correct_norm``: ``None`` = feed [-1, 1] as is. ``correct_interpolation`` /
    ``correct_antialias`` override the resize for the ``"correct"`` mode (default: same as reference).
    ``checkpoint_format``: a key of :data:`CHECKPOINT_FORMATS`. ``plugin``: built by a user's ``module:function``,
    which may load its own weights (no warning without a checkpoint).
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

    def __post_init__(self):
        if self.checkpoint_format not in CHECKPOINT_FORMATS:
            raise ClassifierError(
                f"{self.name}: unknown checkpoint format {self.checkpoint_format!r}; "
                f"known: {', '.join(CHECKPOINT_FORMATS)}"
            )

    def preprocessing(self, mode: PreprocessingMode = "reference") -> Preprocessing:
        if mode == "reference":
            return Preprocessing(self.input_size, self.interpolation, self.antialias, self.reference_norm)
        if mode == "correct":
            interpolation = self.correct_interpolation or self.interpolation
            antialias = self.antialias if self.correct_antialias is None else self.correct_antialias
            return Preprocessing(self.input_size, interpolation, antialias, self.correct_norm)
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
    """Registered names (sorted). Any timm model is also available as ``timm:<model_name>``, and any network of
    yours as ``module:function`` (see :func:`get_classifier_spec`)."""
    return sorted(CLASSIFIERS)


def _timm_spec(model_name: str) -> ClassifierSpec:
    import timm
    from timm.models import get_pretrained_cfg

    if not model_name or not timm.is_model(model_name):
        raise ClassifierError(f"unknown timm model {model_name!r} (see timm.list_models())")
    try:
        cfg = get_pretrained_cfg(model_name)
    except RuntimeError as exc:
        raise ClassifierError(f"timm:{model_name}: {exc}") from exc
    if cfg is None:
        raise ClassifierError(f"timm:{model_name}: timm has no pretrained config for it")
    norm = Normalization(tuple(cfg.mean), tuple(cfg.std))
    interpolation = cfg.interpolation if cfg.interpolation in ("bicubic", "bilinear", "nearest") else "bicubic"
    return ClassifierSpec(
        name=f"timm:{model_name}",
        dataset="imagenet" if cfg.num_classes == 1000 else "",
        architecture=model_name,
        num_classes=cfg.num_classes or 1000,
        input_size=tuple(cfg.input_size[-2:]),
        interpolation=interpolation,
        antialias=True,
        reference_norm=norm,
        correct_norm=norm,
        checkpoint_format="timm",
        description="timm model with its own pretrained config (no reference: both modes use the config)",
    )


def _plugin_spec(target: str) -> ClassifierSpec:
    """A classifier built by an importable ``module:function``: ``function(num_classes=n)`` returns an
    ``nn.Module`` mapping the purified batch (B x C x H x W in [-1, 1], the dataset's resolution) to logits; any
    resizing or normalisation is its own."""
    from .plugins import import_object

    return ClassifierSpec(name=target, dataset="", architecture=target, num_classes=0, input_size=None,
                          factory=import_object(target, "classifier"), plugin=True,
                          description="your network (module:function), fed the purified [-1,1] images")


def _plugin_model(spec: ClassifierSpec, num_classes: int | None) -> nn.Module:
    """The network of a plug-in spec, with the user's errors as one line."""
    try:
        model = spec.build_model(num_classes)
    except Exception as err:  # whatever the user's function raises
        raise ClassifierError(f"classifier {spec.name}(num_classes={num_classes}) failed: {type(err).__name__}: "
                              f"{err}") from None
    if not isinstance(model, nn.Module):
        raise ClassifierError(f"classifier {spec.name} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def get_classifier_spec(name: str) -> ClassifierSpec:
    """The registered spec; for ``timm:<model_name>`` one made from timm's pretrained config; for
    ``module:function`` your own network (:func:`_plugin_spec`)."""
    from .plugins import is_target

    if name in CLASSIFIERS:
        return CLASSIFIERS[name]
    if isinstance(name, str) and name.startswith("timm:"):
        return _timm_spec(name[len("timm:"):])
    if isinstance(name, str) and is_target(name):
        return _plugin_spec(name)
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
    ``timm.create_model`` (e.g. reduced ``depth`` for tests). Without ``checkpoint`` the weights are random and
    a :class:`RandomWeightsWarning` is issued.
    """
    spec = get_classifier_spec(name)
    prep = spec.preprocessing(preprocessing)
    model = _plugin_model(spec, num_classes) if spec.plugin else spec.build_model(num_classes, **model_kwargs)
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
    from .small_models import DigitsCNN

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
                        "Reference feeds bicubic-224 [-1,1] UN-normalised (bug, SPEC §10.9); correct = ImageNet "
                        "mean/std on x01."),
    _imagenet_timm_spec("resnet-152", "resnet152.a1h_in1k", Normalization(IMAGENET_MEAN, IMAGENET_STD),
                        "Reference feeds bicubic-224 [-1,1] UN-normalised (bug); correct = ImageNet mean/std on x01."),
    _imagenet_timm_spec("mixer-b16-miil", "mixer_b16_224.miil_in21k_ft_in1k",
                        Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
                        "Reference feeds bicubic-224 [-1,1] (bug); its config expects [0,1] (mean 0, std 1)."),
    ClassifierSpec(
        name="digits-cnn",
        dataset="digits",
        architecture="DigitsCNN (densepure.small_models)",
        num_classes=10,
        input_size=None,
        factory=_digits_cnn_factory,
        description="Embedded default: a small CNN on scikit-learn's 8x8 digits, trained by the workflow; fed [-1,1].",
    ),
)

for _spec in _BUILTINS:
    register_classifier(_spec)
del _spec
