"""The dense OFA MobileNetV3 subnet and BatchNorm recalibration (no supernet code).

:class:`OFASubnet` is what ``OFAMobileNetV3.extract`` returns and what
``nas.load_subnet`` rebuilds from ``config.json``: a stem conv, a fixed first MBConv
(expand 1, 3x3), the chosen MBConv blocks (1x1 expand, depthwise KxK, optional
squeeze-and-excitation, 1x1 project; residual when stride 1 and widths equal), a final
1x1 expand, global pooling, a 1x1 feature-mix layer and the classifier, as in OFA's
MobileNetV3 (Cai et al., ICLR 2020; Howard et al., ICCV 2019).

:func:`set_running_statistics` is OFA's BatchNorm recalibration: a subnet's BN running
statistics are recomputed on training batches, because the statistics a supernet shares
between all its subnets are wrong for any one of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas._limits import check_count
from nas._supernet import SUBNET_BUILDERS

ACTIVATIONS = ("relu", "hswish")
CHANNEL_DIVISIBLE = 8
SE_REDUCTION = 4


def make_divisible(value: float, divisor: int = CHANNEL_DIVISIBLE) -> int:
    """MobileNet's channel rounding: the nearest multiple of ``divisor`` not below 90 %
    of ``value`` (OFA uses it for every middle and SE width)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def activation(name: str) -> nn.Module:
    """``relu`` or ``hswish`` (h-swish: ``x * relu6(x + 3) / 6``)."""
    if name == "relu":
        return nn.ReLU()
    if name == "hswish":
        return nn.Hardswish()
    raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {name!r}")


def resize(x: Tensor, resolution: int) -> Tensor:
    """Bilinearly resize ``x`` (B, C, H, W) to the model's resolution (no-op when equal)."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


class ConvBN(nn.Module):
    """Conv, BatchNorm, optional activation (OFA's ConvLayer)."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int = 1, *, groups: int = 1,
        act: str | None = None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = activation(act) if act is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """OFA's SE module: mean pool, 1x1 reduce + ReLU, 1x1 expand + h-sigmoid, rescale."""

    def __init__(self, channels: int, mid: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, mid, 1)
        self.expand = nn.Conv2d(mid, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        return x * F.hardsigmoid(self.expand(F.relu(self.reduce(y))))


class MBConv(nn.Module):
    """One dense MBConv block; ``mid == cin`` with no expand layer when ``expand`` is
    false (the fixed first block)."""

    def __init__(
        self, *, cin: int, cout: int, kernel: int, stride: int, mid: int, act: str,
        se_mid: int = 0, expand: bool = True,
    ) -> None:
        super().__init__()
        self.expand = ConvBN(cin, mid, 1, act=act) if expand else None
        self.dw = ConvBN(mid, mid, kernel, stride, groups=mid, act=act)
        self.se = SqueezeExcite(mid, se_mid) if se_mid else None
        self.project = ConvBN(mid, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.dw(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


BLOCK_KEYS = ("cin", "cout", "kernel", "stride", "mid", "act", "se_mid")


MAX_RESOLUTION = 1024
"""Largest input side a subnet may run at (OFA's published space ends at 224)."""


@SUBNET_BUILDERS.register("ofa", description="OFA MobileNetV3 subnet (dense CNN)")
class OFASubnet(nn.Module):
    """A dense OFA MobileNetV3 subnet built from plain, JSON-able arguments.

    Args:
        resolution: the input side the subnet runs at; inputs of another size are
            bilinearly resized first, so one task can feed every subnet.
        in_channels: image channels.
        num_classes: classifier outputs.
        stem: ``{"cout", "act"}`` of the 3x3 stride-2 stem conv.
        first: ``{"cout", "act"}`` of the fixed first block (expand 1, 3x3, stride 1).
        blocks: one dict per running block with the keys of :data:`BLOCK_KEYS`
            (``se_mid`` 0 for no SE).
        final_expand: width of the final 1x1 expand conv (h-swish).
        feature_mix: width of the 1x1 conv after pooling (h-swish, no BN).
        dropout: before the classifier (training only).
    """

    def __init__(
        self,
        *,
        resolution: int,
        in_channels: int,
        num_classes: int,
        stem: Mapping[str, Any],
        first: Mapping[str, Any],
        blocks: Sequence[Mapping[str, Any]],
        final_expand: int,
        feature_mix: int,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        # Not a weight size, so loading cannot bound it by the file: a tampered export
        # must not make every forward pass allocate gigapixel images.
        check_count(resolution, name="resolution", low=8, high=MAX_RESOLUTION)
        for i, block in enumerate(blocks):
            if set(block) != set(BLOCK_KEYS):
                raise ValueError(
                    f"blocks[{i}] must have the keys {list(BLOCK_KEYS)}, got {sorted(block)}"
                )
        self._config = {
            "resolution": int(resolution), "in_channels": int(in_channels),
            "num_classes": int(num_classes), "stem": dict(stem), "first": dict(first),
            "blocks": [dict(b) for b in blocks], "final_expand": int(final_expand),
            "feature_mix": int(feature_mix), "dropout": float(dropout),
        }
        self.resolution = int(resolution)
        self.stem = ConvBN(in_channels, stem["cout"], 3, 2, act=stem["act"])
        self.first = MBConv(cin=stem["cout"], cout=first["cout"], kernel=3, stride=1,
                            mid=stem["cout"], act=first["act"], expand=False)
        self.blocks = nn.ModuleList(MBConv(**b) for b in blocks)
        last = blocks[-1]["cout"] if blocks else first["cout"]
        self.final_expand = ConvBN(last, final_expand, 1, act="hswish")
        self.feature_mix = nn.Conv2d(final_expand, feature_mix, 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(feature_mix, num_classes)
        # Every conv here is depthwise, 1x1 or single-input-channel, so channels-last
        # weights hold the same memory (safetensors stores them as is); oneDNN then takes
        # its channels-last depthwise path, about 4x faster on CPU.
        self.to(memory_format=torch.channels_last)

    def subnet_config(self) -> dict[str, Any]:
        """The constructor's keyword arguments (JSON-able): ``OFASubnet(**cfg)`` rebuilds it."""
        return {k: ([dict(b) for b in v] if k == "blocks" else v) for k, v in self._config.items()}

    def forward(self, images: Tensor) -> Tensor:  # images (B, C, H, W) -> logits (B, classes)
        x = resize(images, self.resolution).contiguous(memory_format=torch.channels_last)
        x = self.first(self.stem(x))  # channels-last: oneDNN's fast depthwise path
        for block in self.blocks:
            x = block(x)
        x = self.final_expand(x).mean((2, 3), keepdim=True)  # (B, F, 1, 1)
        x = F.hardswish(self.feature_mix(x)).flatten(1)
        return self.classifier(self.dropout(x))


def set_running_statistics(model: nn.Module, batches: Iterable[Tensor]) -> None:
    """Recompute every BatchNorm's running statistics on ``batches`` (OFA's recalibration).

    Each BN's statistics are reset to the cumulative average, weighted by batch size, of
    the per-batch mean and (biased) variance it sees, while it normalises with those
    batch statistics; BNs of which only the first ``C`` channels run (a supernet's
    elastic BN) get their first ``C`` entries set. BNs no batch reaches are left alone.
    The model's weights and training mode are unchanged.

    Args:
        model: any module holding ``nn.BatchNorm2d`` layers (dense or supernet).
        batches: input tensors for ``model(batch)``; a few hundred images suffice.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    sums: dict[nn.BatchNorm2d, list[Any]] = {bn: [0.0, 0.0, 0] for bn in norms}

    def recording(bn: nn.BatchNorm2d) -> Any:
        def forward(x: Tensor) -> Tensor:
            c = x.shape[1]
            mean = x.mean((0, 2, 3))
            var = (x - mean.view(1, c, 1, 1)).pow(2).mean((0, 2, 3))
            record = sums[bn]
            record[0] = record[0] + mean * x.shape[0]
            record[1] = record[1] + var * x.shape[0]
            record[2] += x.shape[0]
            return F.batch_norm(x, mean, var, bn.weight[:c], bn.bias[:c], False, 0.0, bn.eps)

        return forward

    was_training = model.training
    model.eval()
    try:
        for bn in norms:
            bn.forward = recording(bn)  # instance attribute shadows the class method
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for bn in norms:
            del bn.forward
        model.train(was_training)
    with torch.no_grad():
        for bn, (mean_sum, var_sum, count) in sums.items():
            if count:
                c = mean_sum.shape[0]
                bn.running_mean[:c].copy_(mean_sum / count)
                bn.running_var[:c].copy_(var_sum / count)
