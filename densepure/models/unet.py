"""The ADM diffusion UNet (docs/reference-behaviour.md#ref-9), written so that the official checkpoints load unchanged.

Two pretrained networks are used by DensePure:

* ImageNet: guided-diffusion ``256x256_diffusion_uncond.pt`` (:func:`imagenet256_config`), whose down/up-sampling
  steps are ResBlocks (``resblock_updown``) and whose attention width is fixed per head (``num_head_channels=64``);
* CIFAR-10: improved-diffusion ``cifar10_uncond_50M_500K.pt`` (:func:`cifar10_config`), which down-samples with a
  stride-2 3x3 conv (``op``) and up-samples with nearest 2x followed by a 3x3 conv (``conv``), with a fixed number
  of heads.

Both share every other block, so a single :class:`UNetModel` driven by a :class:`UNetConfig` builds either one; the
module tree reproduces the reference state-dict keys exactly (``time_embed``, ``input_blocks``, ``middle_block``,
``output_blocks``, ``out``; ResBlocks hold ``in_layers`` / ``emb_layers`` / ``out_layers`` / ``skip_connection``;
attention holds ``norm`` / ``qkv`` / ``proj_out`` where ``qkv`` and ``proj_out`` are 1x1 ``Conv1d``).

Precision follows the reference ``convert_to_fp16()``: :meth:`UNetModel.set_torso_dtype` casts only the convs of the
input/middle/output blocks; the time embedding MLP, the ResBlocks' embedding projections, all GroupNorm affine
parameters and the final ``out`` head stay float32, and GroupNorm always computes in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import nn

Attention = Literal["sdpa", "einsum"]
Precision = Literal["fp32", "fp16", "bf16"]

GROUPS = 32
MAX_PERIOD = 10000

_PRECISION_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# guided-diffusion create_model: channel multipliers used when the channel_mult string is empty.
_GUIDED_DEFAULT_CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}


@dataclass(frozen=True)
class UNetConfig:
    """Architecture hyper-parameters of an ADM UNet.

    ``attention_resolutions`` are *downsample rates* (1 = full resolution, 2 = half, ...), not pixel sizes.
    ``num_head_channels = -1`` means "use ``num_heads`` heads"; otherwise every attention layer has
    ``width // num_head_channels`` heads. ``num_heads_upsample = -1`` means "same as ``num_heads``" (used by the
    attention layers of the output blocks; the middle block uses ``num_heads``). ``resblock_updown`` selects
    guided-diffusion's ResBlock down/up-sampling instead of improved-diffusion's strided / nearest+conv resampling.
    ``image_size`` is the resolution the network was trained at; the forward pass accepts any size divisible by
    ``2 ** (len(channel_mult) - 1)``.
    """

    image_size: int
    model_channels: int
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]
    channel_mult: tuple[int, ...]
    in_channels: int = 3
    out_channels: int = 6
    num_heads: int = 1
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.num_head_channels == -1 and self.num_heads < 1:
            raise ValueError("num_heads must be >= 1 when num_head_channels == -1")
        if self.num_head_channels == 0 or self.num_head_channels < -1:
            raise ValueError(f"num_head_channels must be -1 or positive, got {self.num_head_channels}")
        if not self.channel_mult or self.num_res_blocks < 1:
            raise ValueError("channel_mult must be non-empty and num_res_blocks >= 1")

    @property
    def time_embed_dim(self) -> int:
        """Width of the timestep embedding after the MLP (4 x ``model_channels``)."""
        return 4 * self.model_channels

    def heads_for(self, channels: int, upsample: bool = False) -> int:
        """Number of attention heads of an attention layer of width ``channels``."""
        if self.num_head_channels != -1:
            if channels % self.num_head_channels:
                raise ValueError(f"width {channels} not divisible by num_head_channels={self.num_head_channels}")
            return channels // self.num_head_channels
        heads = self.num_heads_upsample if upsample and self.num_heads_upsample != -1 else self.num_heads
        if channels % heads:
            raise ValueError(f"width {channels} not divisible by {heads} heads")
        return heads


def imagenet256_config() -> UNetConfig:
    """guided-diffusion ``256x256_diffusion_uncond.pt`` as configured by DensePure's ``configs/imagenet.yml``."""
    return UNetConfig(
        image_size=256,
        model_channels=256,
        num_res_blocks=2,
        attention_resolutions=(8, 16, 32),
        channel_mult=(1, 1, 2, 2, 4, 4),
        num_heads=4,
        num_head_channels=64,
        use_scale_shift_norm=True,
        resblock_updown=True,
        dropout=0.0,
    )


def cifar10_config() -> UNetConfig:
    """improved-diffusion ``cifar10_uncond_50M_500K.pt`` (``model_and_diffusion_defaults`` with learn_sigma)."""
    return UNetConfig(
        image_size=32,
        model_channels=128,
        num_res_blocks=3,
        attention_resolutions=(2, 4),
        channel_mult=(1, 2, 2, 2),
        num_heads=4,
        use_scale_shift_norm=True,
        resblock_updown=False,
        dropout=0.3,
    )


def guided_config(
    *,
    image_size: int,
    num_channels: int,
    num_res_blocks: int,
    channel_mult: str = "",
    learn_sigma: bool = False,
    class_cond: bool = False,
    use_checkpoint: bool = False,
    attention_resolutions: str = "16",
    num_heads: int = 1,
    num_head_channels: int = -1,
    num_heads_upsample: int = -1,
    use_scale_shift_norm: bool = False,
    dropout: float = 0.0,
    resblock_updown: bool = False,
    use_fp16: bool = False,
    use_new_attention_order: bool = False,
) -> UNetConfig:
    """Translate guided-diffusion ``create_model`` keyword arguments into a :class:`UNetConfig`.

    ``attention_resolutions`` is the reference's comma-separated list of *pixel sizes*, converted to downsample
    rates ``image_size // size``. ``use_checkpoint`` (gradient checkpointing) does not change the network and
    ``use_fp16`` is a precision choice (see :meth:`UNetModel.set_torso_dtype`), so both are accepted and ignored.
    """
    if class_cond:
        raise ValueError("class-conditional UNets are not supported")
    if use_new_attention_order:
        raise ValueError("use_new_attention_order=True is not supported (DensePure uses the legacy order)")
    if channel_mult:
        mult = tuple(int(m) for m in channel_mult.split(","))
    elif image_size in _GUIDED_DEFAULT_CHANNEL_MULT:
        mult = _GUIDED_DEFAULT_CHANNEL_MULT[image_size]
    else:
        raise ValueError(f"no default channel_mult for image_size={image_size}")
    return UNetConfig(
        image_size=image_size,
        model_channels=num_channels,
        num_res_blocks=num_res_blocks,
        attention_resolutions=tuple(sorted(image_size // int(r) for r in attention_resolutions.split(","))),
        channel_mult=mult,
        out_channels=6 if learn_sigma else 3,
        num_heads=num_heads,
        num_head_channels=num_head_channels,
        num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=use_scale_shift_norm,
        resblock_updown=resblock_updown,
        dropout=dropout,
    )


def improved_config(
    *,
    image_size: int,
    in_channels: int,
    model_channels: int,
    out_channels: int,
    num_res_blocks: int,
    attention_resolutions: tuple[int, ...] | list[int],
    dropout: float = 0.0,
    channel_mult: tuple[int, ...] | list[int] = (1, 2, 4, 8),
    num_classes: int | None = None,
    use_checkpoint: bool = False,
    num_heads: int = 1,
    num_heads_upsample: int = -1,
    use_scale_shift_norm: bool = False,
) -> UNetConfig:
    """Translate improved-diffusion ``UNetModel`` keyword arguments (rates, not pixel sizes) into a config.

    improved-diffusion's constructor has no ``image_size``; pass the resolution the network is used at.
    """
    if num_classes is not None:
        raise ValueError("class-conditional UNets are not supported")
    return UNetConfig(
        image_size=image_size,
        model_channels=model_channels,
        num_res_blocks=num_res_blocks,
        attention_resolutions=tuple(sorted(attention_resolutions)),
        channel_mult=tuple(channel_mult),
        in_channels=in_channels,
        out_channels=out_channels,
        num_heads=num_heads,
        num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=use_scale_shift_norm,
        resblock_updown=False,
        dropout=dropout,
    )


def config_from_fixture_meta(
    kind: Literal["guided", "improved"], constructor: Mapping[str, Any], image_size: int | None = None
) -> UNetConfig:
    """Build the config of a tiny fixture UNet from ``tiny_oracles_meta.json[f"{kind}_tiny"]["constructor"]``.

    ``guided`` constructors are guided ``create_model`` kwargs; ``improved`` ones are improved ``UNetModel`` kwargs
    and need ``image_size`` (the fixtures use 16).
    """
    if kind == "guided":
        return guided_config(**constructor)
    if kind == "improved":
        if image_size is None:
            raise ValueError("improved-diffusion constructors carry no image_size; pass image_size=")
        return improved_config(image_size=image_size, **constructor)
    raise ValueError(f"kind must be 'guided' or 'improved', got {kind!r}")


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t f_k), sin(t f_k)]`` (cos first), ``f_k = 10000^(-k / (dim // 2))``.

    ``timesteps`` is a 1-D tensor of (possibly fractional) timesteps; they are cast to float32 as in the reference.
    An odd ``dim`` gets a trailing zero column. Returns ``[len(timesteps), dim]`` float32.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(MAX_PERIOD) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups computed in float32, returned in the input's dtype."""

    def __init__(self, channels: int) -> None:
        super().__init__(GROUPS, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


def _upsample_nearest(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x spatial up-sampling."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


def _downsample_avg(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling with stride 2."""
    return F.avg_pool2d(x, kernel_size=2, stride=2)


class ResBlock(nn.Module):
    """Residual block conditioned on the timestep embedding.

    ``h = conv3x3(SiLU(GN(x)))``; with scale-shift norm ``scale, shift = chunk(Linear(SiLU(emb)), 2)`` and
    ``h = conv3x3(Dropout(SiLU(GN(h) * (1 + scale) + shift)))`` (otherwise the projection is added to ``h`` before
    the second GN). Returns ``skip(x) + h`` with ``skip`` the identity or a 1x1 conv when the width changes.
    With ``resample`` ("up" / "down") both ``x`` and the GN+SiLU'd ``h`` are nearest-upsampled / 2x2 avg-pooled
    before the first conv (guided-diffusion ``resblock_updown``).
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int,
        dropout: float,
        use_scale_shift_norm: bool,
        resample: Literal["up", "down"] | None = None,
    ) -> None:
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.resample = {"up": _upsample_nearest, "down": _downsample_avg, None: None}[resample]
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        norm_act, in_conv = self.in_layers[:-1], self.in_layers[-1]
        h = norm_act(x)
        if self.resample is not None:
            h, x = self.resample(h), self.resample(x)
        h = in_conv(h)
        emb_out = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        out_norm, out_rest = self.out_layers[0], self.out_layers[1:]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = out_rest(out_norm(h) * (1 + scale) + shift)
        else:
            h = out_rest(out_norm(h + emb_out))
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Spatial self-attention with a residual connection: ``x + proj_out(attn(qkv(GN(x))))``.

    ``qkv`` is a 1x1 ``Conv1d`` whose ``3C`` output channels are laid out head-major ("legacy" order): channel
    block ``[head][q|k|v][C/heads]``. Softmax over the key positions; logits scaled by ``(C/heads)^(-1/2)``.
    ``attention="einsum"`` reproduces the reference arithmetic (q and k each scaled by ``(C/heads)^(-1/4)``,
    softmax in float32); ``"sdpa"`` uses :func:`torch.nn.functional.scaled_dot_product_attention`.
    """

    def __init__(self, channels: int, num_heads: int, attention: Attention = "sdpa") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attention = attention
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        attend = _attend_einsum if self.attention == "einsum" else _attend_sdpa
        h = self.proj_out(attend(qkv, self.num_heads))
        return (x + h).reshape(b, c, *spatial)


def _attend_einsum(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """Reference (legacy-order) attention on ``qkv`` ``[B, 3C, L]`` -> ``[B, C, L]``."""
    b, width, length = qkv.shape
    ch = width // (3 * heads)
    q, k, v = qkv.reshape(b * heads, 3 * ch, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
    return torch.einsum("bts,bcs->bct", weight, v).reshape(b, -1, length)


def _attend_sdpa(qkv: torch.Tensor, heads: int) -> torch.Tensor:
    """Same attention as :func:`_attend_einsum` via ``scaled_dot_product_attention``."""
    b, width, length = qkv.shape
    ch = width // (3 * heads)
    q, k, v = qkv.reshape(b, heads, 3, ch, length).transpose(-1, -2).unbind(dim=2)  # each [B, heads, L, ch]
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(-1, -2).reshape(b, heads * ch, length)


class Downsample(nn.Module):
    """improved-diffusion down-sampling: 3x3 conv with stride 2 (``op``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """improved-diffusion up-sampling: nearest 2x then 3x3 conv (``conv``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_upsample_nearest(x))


class TimestepSequential(nn.Sequential):
    """``nn.Sequential`` that also passes the timestep embedding to its :class:`ResBlock` children."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNetModel(nn.Module):
    """ADM UNet: ``forward(x [B, in, H, W], timesteps [B]) -> [B, out_channels, H, W]``.

    Encoder (``input_blocks``): a 3x3 stem conv, then per level ``num_res_blocks`` ResBlocks (each followed by
    attention if the level's downsample rate is in ``attention_resolutions``) and, except at the last level, a
    down-sampling step. ``middle_block`` = ResBlock, attention, ResBlock. Decoder (``output_blocks``): per level
    (deepest first) ``num_res_blocks + 1`` ResBlocks, each fed ``cat([h, skip])`` with the skip popped from the
    encoder outputs (LIFO), optionally followed by attention, and an up-sampling step closing every level but the
    top one. Head (``out``): GN, SiLU, 3x3 conv. The timestep embedding is ``time_embed(timestep_embedding(t))``,
    ``time_embed = Linear(C, 4C), SiLU, Linear(4C, 4C)``.

    ``attention`` selects the attention kernel of every attention layer (``"sdpa"`` default, ``"einsum"`` = the
    reference's arithmetic); it can be changed later with :meth:`set_attention`.
    """

    def __init__(self, config: UNetConfig, attention: Attention = "sdpa") -> None:
        super().__init__()
        self.config = config
        ch = config.model_channels * config.channel_mult[0]
        emb_dim = config.time_embed_dim
        self.time_embed = nn.Sequential(
            nn.Linear(config.model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )

        def res_block(c_in: int, c_out: int, resample: Literal["up", "down"] | None = None) -> ResBlock:
            return ResBlock(c_in, emb_dim, c_out, config.dropout, config.use_scale_shift_norm, resample)

        def attn_block(c: int, upsample: bool = False) -> AttentionBlock:
            return AttentionBlock(c, config.heads_for(c, upsample), attention)

        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(config.in_channels, ch, 3, padding=1))])
        skip_channels = [ch]
        rate = 1
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [res_block(ch, config.model_channels * mult)]
                ch = config.model_channels * mult
                if rate in config.attention_resolutions:
                    layers.append(attn_block(ch))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_channels.append(ch)
            if level != len(config.channel_mult) - 1:
                down = res_block(ch, ch, "down") if config.resblock_updown else Downsample(ch)
                self.input_blocks.append(TimestepSequential(down))
                skip_channels.append(ch)
                rate *= 2

        self.middle_block = TimestepSequential(res_block(ch, ch), attn_block(ch), res_block(ch, ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for i in range(config.num_res_blocks + 1):
                layers = [res_block(ch + skip_channels.pop(), config.model_channels * mult)]
                ch = config.model_channels * mult
                if rate in config.attention_resolutions:
                    layers.append(attn_block(ch, upsample=True))
                if level and i == config.num_res_blocks:
                    layers.append(res_block(ch, ch, "up") if config.resblock_updown else Upsample(ch))
                    rate //= 2
                self.output_blocks.append(TimestepSequential(*layers))

        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(ch, config.out_channels, 3, padding=1))

    @property
    def torso_dtype(self) -> torch.dtype:
        """dtype the input/middle/output blocks run in (that of their conv weights)."""
        return self.input_blocks[0][0].weight.dtype

    def torso_convs(self) -> list[nn.Module]:
        """All Conv1d/Conv2d layers inside ``input_blocks``, ``middle_block`` and ``output_blocks``."""
        torso = (self.input_blocks, self.middle_block, self.output_blocks)
        return [m for part in torso for m in part.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]

    def set_torso_dtype(self, dtype: torch.dtype) -> "UNetModel":
        """Cast the torso convs' weights and biases to ``dtype`` (the reference ``convert_to_fp16`` for fp16).

        Everything else (time embedding, ResBlock embedding projections, GroupNorm parameters, ``out``) is left as
        is; the forward pass casts activations accordingly. Returns ``self``.
        """
        for conv in self.torso_convs():
            conv.to(dtype)
        return self

    def convert_to_fp16(self) -> "UNetModel":
        """Reference ``convert_to_fp16()``: the torso runs in float16."""
        return self.set_torso_dtype(torch.float16)

    def convert_to_bf16(self) -> "UNetModel":
        """bfloat16 analogue of :meth:`convert_to_fp16`."""
        return self.set_torso_dtype(torch.bfloat16)

    def set_attention(self, attention: Attention) -> "UNetModel":
        """Switch every attention layer to ``"sdpa"`` or ``"einsum"``. Returns ``self``."""
        if attention not in ("sdpa", "einsum"):
            raise ValueError(f"attention must be 'sdpa' or 'einsum', got {attention!r}")
        for module in self.modules():
            if isinstance(module, AttentionBlock):
                module.attention = attention
        return self

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | float) -> torch.Tensor:
        """Predict ``[eps, variance interpolant]`` for ``x`` at ``timesteps`` (``[B]`` or a scalar, may be float).

        The torso runs in :attr:`torso_dtype`; the output has ``x``'s dtype.
        """
        timesteps = torch.as_tensor(timesteps, device=x.device).reshape(-1).expand(x.shape[0])
        emb_in = timestep_embedding(timesteps, self.config.model_channels)
        emb = self.time_embed(emb_in.to(self.time_embed[0].weight.dtype))
        h = x.to(self.torso_dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.to(x.dtype))


class CheckpointMismatchError(ValueError):
    """A checkpoint that cannot be read, or whose keys or shapes do not match the UNet built from the given config."""


def read_checkpoint(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU; :class:`CheckpointMismatchError` naming the file when it
    is empty, truncated or not a PyTorch weights file (garbage, another format, a pickle of arbitrary objects)."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise CheckpointMismatchError(f"checkpoint {path} is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch's weights-only unpickler fails on foreign bytes in many ways (KeyError, ...)
        raise CheckpointMismatchError(f"cannot read checkpoint {path}: not a PyTorch weights file, or truncated "
                                      f"({type(err).__name__})") from None


def _mismatch_report(expected: Mapping[str, torch.Size], found: Mapping[str, Any], source: str) -> str | None:
    """Human-readable summary of missing / unexpected / wrong-shape keys, or ``None`` if all match."""
    missing = [k for k in expected if k not in found]
    unexpected = [str(k) for k in found if k not in expected]
    found_shapes = {k: tuple(getattr(found[k], "shape", ())) for k in expected if k in found}
    wrong_shape = [
        f"{k}: checkpoint {shape} vs model {tuple(expected[k])}"
        for k, shape in found_shapes.items()
        if shape != tuple(expected[k])
    ]
    problems = [
        f"{len(items)} {label} (first: {', '.join(items[:5])})"
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong_shape))
        if items
    ]
    if not problems:
        return None
    return f"checkpoint {source} does not match the UNet config: " + "; ".join(problems)


def load_unet(
    source: str | Path | Mapping[str, torch.Tensor],
    config: UNetConfig,
    *,
    device: str | torch.device = "cpu",
    precision: Precision = "fp32",
    attention: Attention = "sdpa",
    channels_last: bool = False,
) -> UNetModel:
    """Build a :class:`UNetModel` for ``config`` and load a checkpoint (file path or state dict) into it.

    Files are read with ``torch.load(weights_only=True)``. Keys and shapes must match exactly, otherwise a
    :class:`CheckpointMismatchError` naming the first offending keys and the source is raised. The network is
    built on the meta device and takes the checkpoint's tensors (cast to float32), so no second copy of the
    weights is allocated. ``precision`` "fp16"/"bf16" converts the torso as :meth:`UNetModel.set_torso_dtype`.
    Returns the model in eval mode on ``device``.
    """
    if precision not in _PRECISION_DTYPES:
        raise ValueError(f"precision must be one of {sorted(_PRECISION_DTYPES)}, got {precision!r}")
    if isinstance(source, Mapping):
        state_dict, name = source, "<state dict>"
    else:
        state_dict, name = read_checkpoint(source), str(source)
        if not isinstance(state_dict, Mapping):
            raise CheckpointMismatchError(f"checkpoint {name} is a {type(state_dict).__name__}, not a state dict")
    with torch.device("meta"):
        model = UNetModel(config, attention=attention)
    report = _mismatch_report({k: v.shape for k, v in model.state_dict().items()}, state_dict, name)
    if report:
        raise CheckpointMismatchError(report)
    model.load_state_dict({k: v.float() for k, v in state_dict.items()}, assign=True)
    model = model.to(device).eval()
    model.set_torso_dtype(_PRECISION_DTYPES[precision])
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
