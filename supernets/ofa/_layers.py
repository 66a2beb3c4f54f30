"""OFA's elastic layers: weight slicing, kernel transformation and channel sorting.

- :class:`ElasticBatchNorm`: normalises the first ``C`` channels with the first ``C``
  entries of its parameters and running statistics (OFA's DynamicBatchNorm2d).
- :class:`ElasticDepthwise`: the largest (7x7) kernel is stored; a smaller kernel is the
  centre of the next larger *transformed* kernel passed through a learned
  ``k^2 x k^2`` matrix, one matrix per layer and size pair, shared across channels and
  initialised to the identity (OFA's kernel transformation, Section 3.2).
- :class:`ElasticMBConv`: one MBConv block whose expand ratio and kernel size are set per
  forward; :meth:`ElasticMBConv.sort_channels` reorders its middle channels by importance
  before the expand ratio is made elastic (OFA's ``re_organize_middle_weights``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nas.supernets.ofa._dense import SE_REDUCTION, activation, make_divisible

State = dict[str, Tensor]


class ElasticBatchNorm(nn.BatchNorm2d):
    """A BatchNorm2d over the largest width that normalises any leading slice of it."""

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        track = not self.training or self.track_running_stats
        return F.batch_norm(
            x, self.running_mean[:c] if track else None, self.running_var[:c] if track else None,
            self.weight[:c], self.bias[:c], self.training, self.momentum, self.eps,
        )

    def dense_state(self, prefix: str, c: int) -> State:
        return {f"{prefix}.weight": self.weight[:c], f"{prefix}.bias": self.bias[:c],
                f"{prefix}.running_mean": self.running_mean[:c],
                f"{prefix}.running_var": self.running_var[:c],
                f"{prefix}.num_batches_tracked": self.num_batches_tracked}

    def permute(self, index: Tensor) -> None:
        for tensor in (self.weight, self.bias, self.running_mean, self.running_var):
            tensor.data = tensor.data[index].clone()


class ElasticDepthwise(nn.Module):
    """Depthwise conv with elastic kernel size (kernel transformation) and channels."""

    def __init__(self, channels: int, kernel_sizes: tuple[int, ...], stride: int) -> None:
        super().__init__()
        self.kernel_sizes = tuple(sorted(kernel_sizes))
        self.stride = stride
        k = self.kernel_sizes[-1]
        self.weight = nn.Parameter(torch.empty(channels, 1, k, k))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.matrices = nn.ParameterDict({
            f"{big}to{small}": nn.Parameter(torch.eye(small * small))
            for small, big in zip(self.kernel_sizes, self.kernel_sizes[1:], strict=False)
        })

    def kernel(self, channels: int, size: int) -> Tensor:
        """The (channels, 1, size, size) filter: centre crops through the matrices."""
        filt = self.weight[:channels]
        for big, small in zip(self.kernel_sizes[::-1], self.kernel_sizes[-2::-1], strict=False):
            if big <= size:
                break
            start = (big - small) // 2
            crop = filt[:, :, start:start + small, start:start + small].reshape(channels, -1)
            filt = F.linear(crop, self.matrices[f"{big}to{small}"]).reshape(
                channels, 1, small, small
            )
        return filt.contiguous(memory_format=torch.channels_last)

    def forward(self, x: Tensor, size: int) -> Tensor:
        c = x.shape[1]
        return F.conv2d(x, self.kernel(c, size), None, self.stride, size // 2, 1, c)


@dataclass(frozen=True)
class BlockSpec:
    """The fixed part of one elastic MBConv block."""

    cin: int
    cout: int
    stride: int
    act: str
    se: bool


class ElasticMBConv(nn.Module):
    """One MBConv block at the largest expand ratio and kernel; smaller ones are slices.

    The middle width of expand ratio ``e`` is ``make_divisible(cin * e)`` (OFA's
    ``active_middle_channel``); the SE width is ``make_divisible(mid // 4)``.
    """

    def __init__(
        self, spec: BlockSpec, kernel_sizes: tuple[int, ...], expand_ratios: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.spec = spec
        self.expand_ratios = tuple(sorted(expand_ratios))
        mid = self.mid(self.expand_ratios[-1])
        self.expand_conv = nn.Parameter(torch.empty(mid, spec.cin, 1, 1))
        self.expand_bn = ElasticBatchNorm(mid)
        self.dw = ElasticDepthwise(mid, kernel_sizes, spec.stride)
        self.dw_bn = ElasticBatchNorm(mid)
        self.act = activation(spec.act)
        if spec.se:
            se_mid = make_divisible(mid // SE_REDUCTION)
            self.se_reduce = nn.Conv2d(mid, se_mid, 1)
            self.se_expand = nn.Conv2d(se_mid, mid, 1)
        self.project_conv = nn.Parameter(torch.empty(spec.cout, mid, 1, 1))
        self.project_bn = ElasticBatchNorm(spec.cout)
        for weight in (self.expand_conv, self.project_conv):
            nn.init.kaiming_normal_(weight, mode="fan_out")

    def mid(self, expand: int) -> int:
        return make_divisible(round(self.spec.cin * expand))

    def forward(self, x: Tensor, kernel: int, expand: int) -> Tensor:  # x (B, cin, H, W)
        mid = self.mid(expand)
        y = self.act(self.expand_bn(F.conv2d(x, self.expand_conv[:mid])))  # (B, mid, H, W)
        y = self.act(self.dw_bn(self.dw(y, kernel)))  # (B, mid, H/s, W/s)
        if self.spec.se:
            se_mid = make_divisible(mid // SE_REDUCTION)
            s = y.mean((2, 3), keepdim=True)
            s = F.relu(F.conv2d(s, self.se_reduce.weight[:se_mid, :mid],
                                self.se_reduce.bias[:se_mid]))
            y = y * F.hardsigmoid(F.conv2d(s, self.se_expand.weight[:mid, :se_mid],
                                           self.se_expand.bias[:mid]))
        y = self.project_bn(F.conv2d(y, self.project_conv[:, :mid]))
        return x + y if self.residual else y

    @property
    def residual(self) -> bool:
        return self.spec.stride == 1 and self.spec.cin == self.spec.cout

    def dense_kwargs(self, kernel: int, expand: int) -> dict[str, int | str]:
        """The :class:`~nas.supernets.ofa._dense.MBConv` arguments of one choice."""
        mid = self.mid(expand)
        return {"cin": self.spec.cin, "cout": self.spec.cout, "kernel": kernel,
                "stride": self.spec.stride, "mid": mid, "act": self.spec.act,
                "se_mid": make_divisible(mid // SE_REDUCTION) if self.spec.se else 0}

    def dense_state(self, prefix: str, kernel: int, expand: int) -> State:
        """The dense block's tensors (names of ``MBConv``) for one choice."""
        mid = self.mid(expand)
        state = {f"{prefix}.expand.conv.weight": self.expand_conv[:mid],
                 f"{prefix}.dw.conv.weight": self.dw.kernel(mid, kernel),
                 f"{prefix}.project.conv.weight": self.project_conv[:, :mid]}
        state |= self.expand_bn.dense_state(f"{prefix}.expand.bn", mid)
        state |= self.dw_bn.dense_state(f"{prefix}.dw.bn", mid)
        state |= self.project_bn.dense_state(f"{prefix}.project.bn", self.spec.cout)
        if self.spec.se:
            se_mid = make_divisible(mid // SE_REDUCTION)
            state |= {f"{prefix}.se.reduce.weight": self.se_reduce.weight[:se_mid, :mid],
                      f"{prefix}.se.reduce.bias": self.se_reduce.bias[:se_mid],
                      f"{prefix}.se.expand.weight": self.se_expand.weight[:mid, :se_mid],
                      f"{prefix}.se.expand.bias": self.se_expand.bias[:mid]}
        return state

    def importance(self) -> Tensor:
        """Each middle channel's L1 norm of its projection weights (OFA's criterion)."""
        return self.project_conv.detach().abs().sum((0, 2, 3))

    @torch.no_grad()
    def sort_channels(self, stage: int = 0) -> Tensor:
        """Reorder the middle channels by non-increasing importance; return the order.

        With ``stage`` > 0 the channels of the ``stage + 1`` largest expand ratios keep
        their nesting: those inside the width of a smaller ratio already made elastic
        are ranked within that width only, as OFA's ``expand_ratio_stage`` does.
        The expand conv and BN, the depthwise conv and BN, the SE convs and the project
        conv are permuted together, so the block computes the same function. The SE's
        own hidden channels are sorted too, by the L1 norm of their expand weights.
        """
        importance = self.importance()
        if stage > 0:
            widths = [self.mid(e) for e in sorted(self.expand_ratios, reverse=True)]
            right, penalty = len(importance), -len(widths) * 1e5
            for left in widths[:stage + 1]:
                importance[left:right] += penalty
                penalty += 1e5
                right = left
        order = torch.sort(importance, descending=True, stable=True).indices
        self.project_conv.data = self.project_conv.data[:, order].clone()
        self.expand_conv.data = self.expand_conv.data[order].clone()
        self.dw.weight.data = self.dw.weight.data[order].clone()
        self.expand_bn.permute(order)
        self.dw_bn.permute(order)
        if self.spec.se:
            self.se_reduce.weight.data = self.se_reduce.weight.data[:, order].clone()
            self.se_expand.weight.data = self.se_expand.weight.data[order].clone()
            self.se_expand.bias.data = self.se_expand.bias.data[order].clone()
            se_order = torch.sort(self.se_expand.weight.abs().sum((0, 2, 3)), descending=True,
                                  stable=True).indices
            self.se_expand.weight.data = self.se_expand.weight.data[:, se_order].clone()
            self.se_reduce.weight.data = self.se_reduce.weight.data[se_order].clone()
            self.se_reduce.bias.data = self.se_reduce.bias.data[se_order].clone()
        return order
