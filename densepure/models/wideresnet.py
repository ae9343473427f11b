"""WRN-28-10 of meliketoy/wide-resnet.pytorch (key names match its ``Wide_ResNet``)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from densepure.models.errors import ClassifierError


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
