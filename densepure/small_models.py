"""The two small models of the embedded ``digits`` default (scikit-learn's 8 x 8 handwritten digits).

* :class:`DigitsCNN`: a small CNN classifier. Like every classifier in the pipeline it takes the *purified* batch
  in model space [-1, 1] (``2 * pixel - 1``), shape [B, 1, 8, 8], and returns [B, 10] logits.
* :func:`digits_unet_config`: a small ADM UNet (:class:`densepure.unet.UNetConfig`) for 1 x 8 x 8 inputs predicting
  epsilon and the learned-range variance interpolant ``v`` (``out_channels = 2``), sized so that training it takes
  a few minutes on two CPU cores (see :mod:`densepure.train`).
"""

from __future__ import annotations

import torch
from torch import nn

from .unet import UNetConfig


class DigitsCNN(nn.Module):
    """Three 3x3 conv layers (8x8 -> max-pool -> 4x4) and a linear head: [B, 1, 8, 8] in [-1, 1] -> [B, 10] logits.

    No batch norm, so eval and train mode differ only by the dropout before the head.
    """

    def __init__(self, width: int = 32, num_classes: int = 10, dropout: float = 0.2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width * 4 * 4, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def digits_unet_config() -> UNetConfig:
    """The embedded default's diffusion UNet: 8 x 8, one channel in, ``[eps, v]`` out (learned-range variance).

    Two levels (8 x 8 with 32 channels, 4 x 4 with 64), one ResBlock per level, attention at downsample rate 2
    (4 x 4) and in the middle block, scale-shift norm, no dropout: about 0.76 M parameters.
    ``model_channels`` is 32 because :class:`~densepure.unet.GroupNorm32` uses 32 groups.
    """
    return UNetConfig(
        image_size=8,
        model_channels=32,
        num_res_blocks=1,
        attention_resolutions=(2,),
        channel_mult=(1, 2),
        in_channels=1,
        out_channels=2,
        num_heads=1,
        use_scale_shift_norm=True,
        resblock_updown=False,
        dropout=0.0,
    )
