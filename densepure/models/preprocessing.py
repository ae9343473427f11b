"""What a classifier is fed: resizing (including an exact emulation of the 2022 Hugging Face ViT feature
extractor's uint8 truncation and Pillow bilinear resize) and normalisation, as torch ops on the images' device."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densepure.models.errors import ClassifierError

PreprocessingMode = Literal["reference", "correct"]


#: Interpolation modes: the ``F.interpolate`` ones, plus the emulation of the 2022 HF ViT feature extractor
#: (float -> uint8 truncation, Pillow bilinear resize of the uint8 image).
PIL_BILINEAR_UINT8 = "pil_bilinear_uint8"


_TORCH_MODES = ("bicubic", "bilinear", "nearest", "nearest-exact", "area")


CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)


#: std DensePure's driver uses for the CIFAR WRN-28-10 (docs/reference-behaviour.md#ref-6-2).
CIFAR10_STD_REFERENCE = (0.2471, 0.2435, 0.2616)


#: std of meliketoy/wide-resnet.pytorch's training config (``config.py``); from memory, unverified
# (docs/reference-behaviour.md#ref-10-9).
CIFAR10_STD_TRAINING = (0.2023, 0.1994, 0.2010)


IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def resize(x: Tensor, size: int | tuple[int, int] | None, mode: str = "bicubic", antialias: bool = False) -> Tensor:
    """``F.interpolate`` of a ``B x C x H x W`` batch to ``size`` (``align_corners=False``); no clamping.

    ``size=None`` or a batch already at ``size`` is returned unchanged. Note (docs/reference-behaviour.md#ref-6-2):
    bicubic with
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


#: How :func:`resize_and_crop` fits an image into the crop (timm's ``crop_mode``).
CROP_MODES = ("center", "squash")


def shorter_side_size(height: int, width: int, short: int) -> tuple[int, int]:
    """``(H, W)`` with the shorter side ``short`` and the longer ``int(short * long / short_in)``: torchvision's
    ``Resize(int)`` rule."""
    if width <= height:
        return int(short * height / width), short
    return short, int(short * width / height)


def keep_ratio_size(height: int, width: int, target: tuple[int, int]) -> tuple[int, int]:
    """timm's ``ResizeKeepRatio(target)`` (``longest=0``): scale by the smaller of the two ratios, rounded."""
    ratio = min(height / target[0], width / target[1])
    return round(height / ratio), round(width / ratio)


def center_crop(x: Tensor, size: int | tuple[int, int], fill: float = -1.0) -> Tensor:
    """torchvision's ``CenterCrop``: offsets ``int(round((H - h) / 2))``; a side shorter than the crop is padded
    first (``fill``, -1 = black in [-1, 1]) as torchvision pads with 0 in [0, 1]."""
    crop_h, crop_w = _pair(size)
    height, width = x.shape[-2:]
    if crop_h > height or crop_w > width:
        pad_w, pad_h = max(crop_w - width, 0), max(crop_h - height, 0)
        x = F.pad(x, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2), value=fill)
        height, width = x.shape[-2:]
    top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
    return x[..., top:top + crop_h, left:left + crop_w]


def resize_like_pillow(x: Tensor, size: tuple[int, int], mode: str = "bicubic", antialias: bool = True) -> Tensor:
    """Pillow's two-pass resize on floats in [-1, 1]: the width first, then the height, each pass clipped to
    [-1, 1] as Pillow clips its 8-bit passes (a side that keeps its size is not resampled). Without the clip a
    bicubic resize of a sharp edge overshoots where Pillow saturates."""
    height, width = x.shape[-2:]
    if width != size[1]:
        x = resize(x, (height, size[1]), mode, antialias).clamp(-1.0, 1.0)
    if height != size[0]:
        x = resize(x, (size[0], size[1]), mode, antialias).clamp(-1.0, 1.0)
    return x


def resize_and_crop(x: Tensor, size: int | tuple[int, int], crop_pct: float, crop_mode: str = "center",
                    mode: str = "bicubic", antialias: bool = True) -> Tensor:
    """timm's evaluation transform (``transforms_imagenet_eval``) on a batch: scale ``floor(size / crop_pct)``,
    then the center ``size`` crop.

    ``crop_mode="center"``: the shorter side resized to the scale (torchvision ``Resize(int)``; ``ResizeKeepRatio``
    when the scale is not square), aspect ratio kept. ``"squash"``: both sides resized to the scale. The resize is
    :func:`resize_like_pillow` (``F.interpolate`` per side, with ``antialias=True`` Pillow's filters on floats);
    on images in [-1, 1] it differs from timm's transform of the 8-bit image only by Pillow's rounding.
    """
    if crop_mode not in CROP_MODES:
        raise ClassifierError(f"crop mode {crop_mode!r} is not supported; use one of {', '.join(CROP_MODES)}")
    if not crop_pct > 0:
        raise ClassifierError(f"crop_pct must be > 0, got {crop_pct}")
    crop_h, crop_w = _pair(size)
    scale = (math.floor(crop_h / crop_pct), math.floor(crop_w / crop_pct))
    height, width = x.shape[-2:]
    if crop_mode == "squash":
        target = scale
    elif scale[0] == scale[1]:
        target = shorter_side_size(height, width, scale[0])
    else:
        target = keep_ratio_size(height, width, scale)
    return center_crop(resize_like_pillow(x, target, mode, antialias), (crop_h, crop_w))


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


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x01 - mean) / std`` applied to ``x01 = (x + 1) / 2`` (one value per channel)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class Preprocessing:
    """What the classifier module does to the purified [-1, 1] batch before the network.

    ``size``: target ``H`` (int) or ``(H, W)``; ``None`` keeps the input resolution. ``crop_pct``: ``None``
    resizes the whole image to ``size``; otherwise timm's evaluation transform (:func:`resize_and_crop`: scale to
    ``floor(size / crop_pct)``, center crop ``size``, as ``crop_mode`` says). ``interpolation``: an
    ``F.interpolate`` mode or ``"pil_bilinear_uint8"`` (the 2022 HF ViT feature extractor: ``floor(255 x01)`` as
    uint8, Pillow bilinear, ``* (1/255)``). ``normalization``: ``None`` feeds the resized [-1, 1] tensor as is;
    otherwise ``(x01 - mean) / std``.
    """

    size: int | tuple[int, int] | None
    interpolation: str = "bicubic"
    antialias: bool = False
    normalization: Normalization | None = None
    crop_pct: float | None = None
    crop_mode: str = "center"

    def __post_init__(self):
        if self.interpolation not in _TORCH_MODES + (PIL_BILINEAR_UINT8,):
            raise ClassifierError(f"unknown interpolation {self.interpolation!r}")
        if self.crop_pct is not None and (self.size is None or self.interpolation == PIL_BILINEAR_UINT8):
            raise ClassifierError("crop_pct needs a size and an F.interpolate mode")
        if self.crop_mode not in CROP_MODES:
            raise ClassifierError(f"crop mode {self.crop_mode!r} is not supported; use one of {', '.join(CROP_MODES)}")

    def describe(self) -> str:
        size = "input resolution" if self.size is None else "x".join(map(str, _pair(self.size)))
        if self.interpolation == PIL_BILINEAR_UINT8:
            resize_text = f"uint8 floor(255*x01) + Pillow bilinear to {size}, /255"
        else:
            resize_text = f"{self.interpolation} to {size} (antialias={self.antialias})"
        if self.crop_pct is not None:
            resize_text = (f"{self.interpolation} ({self.crop_mode}, antialias={self.antialias}) to {size}/"
                           f"{self.crop_pct:g}, center crop {size}")
        norm = self.normalization
        norm_text = "fed [-1,1] as is" if norm is None else f"(x01 - {norm.mean}) / {norm.std}"
        return f"{resize_text}; {norm_text}"


#: timm's interpolation names -> the ``F.interpolate`` mode that matches Pillow's filter on floats.
TIMM_INTERPOLATION = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest-exact"}


def timm_preprocessing(data_config: dict, in_chans: int | None = None) -> Preprocessing:
    """The :class:`Preprocessing` equal to ``timm.data.create_transform(**data_config)`` at evaluation on images in
    [0, 1]: resize to ``floor(size / crop_pct)`` with the config's interpolation (antialiased, as Pillow does),
    center crop ``input_size``, ``(x01 - mean) / std``. A network with ``in_chans`` other than the config's
    channels gets the average of the config's mean and std on each channel."""
    interpolation = data_config.get("interpolation", "bicubic")
    if interpolation not in TIMM_INTERPOLATION:
        raise ClassifierError(f"timm interpolation {interpolation!r} is not supported; use one of "
                              f"{', '.join(TIMM_INTERPOLATION)}")
    mode = TIMM_INTERPOLATION[interpolation]
    mean, std = tuple(data_config["mean"]), tuple(data_config["std"])
    if in_chans is not None and in_chans != len(mean):
        mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
    return Preprocessing(tuple(data_config["input_size"][-2:]), mode, mode in ("bilinear", "bicubic"),
                         Normalization(mean, std), data_config.get("crop_pct"), data_config.get("crop_mode", "center"))


class ClassifierInput(nn.Module):
    """Applies a :class:`Preprocessing` with torch ops on the input's device (buffers move with ``.to``)."""

    def __init__(self, preprocessing: Preprocessing):
        super().__init__()
        self.preprocessing = preprocessing
        norm = preprocessing.normalization
        mean = torch.tensor(norm.mean if norm else (0.0, 0.0, 0.0), dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(norm.std if norm else (1.0, 1.0, 1.0), dtype=torch.float32).view(1, -1, 1, 1)
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
        if p.crop_pct is None:
            x = resize(x, p.size, p.interpolation, p.antialias)
        else:
            x = resize_and_crop(x, p.size, p.crop_pct, p.crop_mode, p.interpolation, p.antialias)
        if p.normalization is None:
            return x
        x01 = (x + 1) / 2
        return (x01 - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return self.preprocessing.describe()
