"""OFA's MobileNetV3 supernet, its digits task and its shipped checkpoint ``ofa``.

The zoo recipe also trains on a user's image folder (``nas train --supernet ofa --data
ROOT``, :func:`image_folder_task`): the supernet then takes the folder's channels and
classes.

Cai et al., "Once-for-All: Train One Network and Specialize it for Efficient
Deployment", ICLR 2020 (https://arxiv.org/abs/1908.09791). One network holds the largest
kernel (7x7), expand ratio (6) and depth (4 blocks per stage); a subnet runs the first
``d`` blocks of each stage with centre-cropped, matrix-transformed kernels and the
leading middle channels, at its own input resolution. It is trained with progressive
shrinking (:class:`~nas.supernets.ofa._scheme.ProgressiveShrinking`).

BatchNorm statistics: a supernet's running statistics are shared by all subnets and fit
none of them, so OFA recalibrates them per subnet (``set_running_statistics``). Here the
supernet holds a fixed calibration set of training images (:meth:`set_calibration`);
whenever a subnet is activated in eval mode, its BN statistics are recomputed on that set
(200 images; activation plus a full validation pass takes 0.04 to 0.13 s of CPU on
digits), and ``extract`` recalibrates the dense model on the same images. The search's
accuracy and the extracted model therefore both use the subnet's own statistics (equal
within float rounding). In train mode activation never recalibrates (BN uses batch statistics).
The calibration set is not part of the checkpoint: the registered ``ofa`` supernet and
the zoo recipe take it from the task's training split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nas._space import Config
from nas._supernet import (
    SPACES,
    SUPERNETS,
    LayerShape,
    QuantUnit,
    SpaceModel,
    SubnetShape,
    Supernet,
)
from nas._task import TASKS, Task
from nas.supernets.ofa._dense import (
    ACTIVATIONS,
    ConvBN,
    MBConv,
    OFASubnet,
    resize,
    set_running_statistics,
)
from nas.supernets.ofa._layers import BlockSpec, ElasticMBConv
from nas.supernets.ofa._scheme import ProgressiveShrinking
from nas.supernets.ofa._space import DIGITS_SPACE, MOBILENETV3_SPACE, OFADesignSpace
from nas.supernets.tasks._digits import CLASSES as DIGITS_CLASSES
from nas.supernets.tasks._digits import DigitsTask
from nas.supernets.tasks._images import ImageFolderTask
from nas.supernets.training._loop import SUPERNET_FAMILIES
from nas.supernets.training._zoo import ZooRecipe, add_recipe, load_zoo_checkpoint

__all__ = ["FAMILY", "NAME", "TASK_NAME", "OFAMobileNetV3", "digits_task", "image_folder_task",
           "ofa"]

FAMILY = "ofa"
NAME = "ofa"
TASK_NAME = "digits-image"
CALIBRATION_IMAGES = 200
"""Training images of the BN calibration set (OFA uses 2,000 ImageNet images)."""
CALIBRATION_BATCH = 200


@dataclass(frozen=True)
class _Step:
    """One running elastic block: its index in ``blocks`` and its choices."""

    index: int
    kernel: int
    expand: int


class OFAMobileNetV3(Supernet):
    """OFA's MobileNetV3 supernet over an :class:`OFADesignSpace`.

    Args:
        design: the elastic choices; ``self.space = design.build()``.
        widths: output channels of each stage (``design.stages`` entries).
        strides: stride of each stage's first block.
        activations: ``"relu"`` or ``"hswish"`` per stage.
        se: squeeze-and-excitation per stage.
        in_channels: image channels.
        num_classes: classifier outputs.
        stem_width: channels of the 3x3 stride-2 stem (h-swish).
        first_width: channels of the fixed first block (expand 1, 3x3, ReLU).
        final_expand: width of the final 1x1 expand conv.
        feature_mix: width of the 1x1 conv after global pooling.
        dropout: before the classifier.
    """

    family = FAMILY

    def __init__(
        self,
        design: OFADesignSpace = DIGITS_SPACE,
        *,
        widths: Sequence[int] = (16, 24, 32, 40),
        strides: Sequence[int] = (2, 2, 1, 2),
        activations: Sequence[str] = ("relu", "relu", "hswish", "hswish"),
        se: Sequence[bool] = (False, True, False, True),
        in_channels: int = 1,
        num_classes: int = 10,
        stem_width: int = 16,
        first_width: int = 16,
        final_expand: int = 120,
        feature_mix: int = 160,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        _validate(design, widths, strides, activations, se)
        self.design = design
        self.space = design.build()
        self._arch = {
            "design": design.to_dict(), "widths": list(widths), "strides": list(strides),
            "activations": list(activations), "se": [bool(s) for s in se],
            "in_channels": in_channels, "num_classes": num_classes, "stem_width": stem_width,
            "first_width": first_width, "final_expand": final_expand,
            "feature_mix": feature_mix, "dropout": dropout,
        }
        self.stem = ConvBN(in_channels, stem_width, 3, 2, act="hswish")
        self.first = MBConv(cin=stem_width, cout=first_width, kernel=3, stride=1,
                            mid=stem_width, act="relu", expand=False)
        blocks = []
        cin = first_width
        for s in range(design.stages):
            for b in range(design.max_depth):
                spec = BlockSpec(cin, widths[s], strides[s] if b == 0 else 1, activations[s],
                                 bool(se[s]))
                blocks.append(ElasticMBConv(spec, design.kernel_sizes, design.expand_ratios))
                cin = widths[s]
        self.blocks = nn.ModuleList(blocks)
        self.final_expand = ConvBN(widths[-1], final_expand, 1, act="hswish")
        self.feature_mix = nn.Conv2d(final_expand, feature_mix, 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(feature_mix, num_classes)
        self._calibration: tuple[Tensor, ...] = ()
        self._steps: tuple[_Step, ...] = ()
        self._resolution = max(design.resolutions)
        self.to(memory_format=torch.channels_last)  # see OFASubnet: same memory, 4x faster
        self.activate(self.space.largest())

    # -- BN calibration ---------------------------------------------------------------

    def set_calibration(self, images: Tensor | None, *, batch_size: int = CALIBRATION_BATCH
                        ) -> OFAMobileNetV3:
        """Hold ``images`` (N, C, H, W) to recalibrate BN statistics per subnet; ``None``
        turns recalibration off. Returns ``self``."""
        if images is None:
            self._calibration = ()
            return self
        if images.ndim != 4 or len(images) == 0:
            raise ValueError(f"calibration images must be a non-empty (N, C, H, W) tensor, "
                             f"got shape {tuple(images.shape)}")
        self._calibration = tuple(images.detach().split(batch_size))
        if not self.training and self._active is not None:
            self._activate(self._active)
        return self

    @property
    def calibration(self) -> tuple[Tensor, ...]:
        """The calibration batches (empty when recalibration is off)."""
        return self._calibration

    @property
    def recalibrates_batchnorm(self) -> bool:
        """Whether activated and extracted subnets get their own BN statistics (on the
        calibration set): an exporter need not re-estimate them, and must not if the
        exported model is to score what the search recorded."""
        return bool(self._calibration)

    # -- the Supernet hooks -------------------------------------------------------------

    def _steps_of(self, config: Config) -> tuple[_Step, ...]:
        steps = []
        for s in range(self.design.stages):
            for b in range(int(config[f"stage{s}.depth"])):
                steps.append(_Step(s * self.design.max_depth + b,
                                   int(config[f"stage{s}.block{b}.kernel"]),
                                   int(config[f"stage{s}.block{b}.expand"])))
        return tuple(steps)

    def quant_units(self) -> tuple[QuantUnit, ...]:
        """Each searched MBConv block (expand, depthwise, squeeze-excite and project
        convolutions); the stem, the first block and the head stay in float."""
        return tuple(
            QuantUnit(f"stage{s}.block{b}", self.space.gene(f"stage{s}.block{b}.kernel").active_if)
            for s in range(self.design.stages) for b in range(self.design.max_depth)
        )

    def _quant_modules(self, config: Config) -> dict[str, tuple[str, ...]]:
        names = [f"stage{s}.block{b}" for s in range(self.design.stages)
                 for b in range(int(config[f"stage{s}.depth"]))]
        return {name: (f"blocks.{i}",) for i, name in enumerate(names)}

    def _activate(self, config: Config) -> None:
        self._steps = self._steps_of(config)
        self._resolution = int(config["resolution"])
        if self._calibration and not self.training:
            set_running_statistics(self, self._calibration)

    def forward(self, images: Tensor) -> Tensor:  # images (B, C, H, W) -> logits (B, classes)
        x = resize(images, self._resolution).contiguous(memory_format=torch.channels_last)
        x = self.first(self.stem(x))  # channels-last: oneDNN's fast depthwise path
        for step in self._steps:
            x = self.blocks[step.index](x, step.kernel, step.expand)
        x = self.final_expand(x).mean((2, 3), keepdim=True)  # (B, F, 1, 1)
        x = nn.functional.hardswish(self.feature_mix(x)).flatten(1)
        return self.classifier(self.dropout(x))

    def _subnet_config(self, config: Config) -> dict[str, Any]:
        a = self._arch
        return {
            "resolution": int(config["resolution"]), "in_channels": a["in_channels"],
            "num_classes": a["num_classes"],
            "stem": {"cout": a["stem_width"], "act": "hswish"},
            "first": {"cout": a["first_width"], "act": "relu"},
            "blocks": [self.blocks[s.index].dense_kwargs(s.kernel, s.expand)
                       for s in self._steps_of(config)],
            "final_expand": a["final_expand"], "feature_mix": a["feature_mix"],
            "dropout": a["dropout"],
        }

    def _extract(self, config: Config) -> OFASubnet:
        model = OFASubnet(**self._subnet_config(config))
        fixed = ("stem.", "first.", "final_expand.", "feature_mix.", "classifier.")
        state = {k: v for k, v in self.state_dict().items() if k.startswith(fixed)}
        with torch.no_grad():
            for i, step in enumerate(self._steps_of(config)):
                state |= self.blocks[step.index].dense_state(f"blocks.{i}", step.kernel,
                                                              step.expand)
            model.load_state_dict({k: v.detach().clone() for k, v in state.items()})
        model.eval()
        if self._calibration:
            set_running_statistics(model, self._calibration)
        return model

    def _describe(self, config: Config) -> SubnetShape:
        size = int(config["resolution"])
        a = self._arch
        layers = [LayerShape("stem", {"cin": a["in_channels"], "cout": a["stem_width"],
                                      "kernel": 3, "stride": 2, "in_size": size})]
        size = (size + 1) // 2
        layers.append(LayerShape("mbconv", {"cin": a["stem_width"], "cout": a["first_width"],
                                            "kernel": 3, "stride": 1, "mid": a["stem_width"],
                                            "se_mid": 0, "in_size": size}))
        for step in self._steps_of(config):
            kw = self.blocks[step.index].dense_kwargs(step.kernel, step.expand)
            layers.append(LayerShape("mbconv", {k: int(v) for k, v in kw.items() if k != "act"}
                                     | {"in_size": size}))
            size = (size - 1) // int(kw["stride"]) + 1
        layers.append(LayerShape("final_expand", {"cin": a["widths"][-1],
                                                  "cout": a["final_expand"], "in_size": size}))
        layers.append(LayerShape("feature_mix", {"cin": a["final_expand"],
                                                 "cout": a["feature_mix"]}))
        layers.append(LayerShape("classifier", {"cin": a["feature_mix"],
                                                "cout": a["num_classes"]}))
        return SubnetShape(FAMILY, tuple(layers), {"resolution": int(config["resolution"]),
                                                   "num_classes": a["num_classes"]})

    def _architecture(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self._arch.items()}

    @classmethod
    def from_architecture(cls, architecture: Mapping[str, Any]) -> OFAMobileNetV3:
        """Rebuild an untrained supernet from :meth:`architecture`'s dict."""
        args = dict(architecture)
        if "design" not in args:
            raise ValueError("OFA architecture must hold a 'design' dict")
        design = OFADesignSpace.from_dict(args.pop("design"))
        return cls(design, **args)

    # -- progressive shrinking ---------------------------------------------------------

    def sort_channels(self, stage: int = 0) -> None:
        """Sort every block's middle channels by importance (see
        :meth:`ElasticMBConv.sort_channels`); the network's function is unchanged."""
        for block in self.blocks:
            block.sort_channels(stage)
        self.to(memory_format=torch.channels_last)


def _validate(
    design: OFADesignSpace, widths: Sequence[int], strides: Sequence[int],
    activations: Sequence[str], se: Sequence[bool],
) -> None:
    for name, values in (("widths", widths), ("strides", strides),
                         ("activations", activations), ("se", se)):
        if len(values) != design.stages:
            raise ValueError(f"{name} must have one entry per stage ({design.stages}), "
                             f"got {len(values)}")
    bad = [a for a in activations if a not in ACTIVATIONS]
    if bad:
        raise ValueError(f"activations must be among {list(ACTIVATIONS)}, got {bad}")
    if any(s not in (1, 2) for s in strides):
        raise ValueError(f"strides must be 1 or 2, got {list(strides)}")


# -- registrations -----------------------------------------------------------------------


@TASKS.register(TASK_NAME, description="handwritten digits (scikit-learn, offline) as "
                "1x20x20 images, 10 classes")
def digits_task() -> Task:
    """The digits task at the digits space's largest resolution (20)."""
    return DigitsTask(TASK_NAME, layout="image", resolution=max(DIGITS_SPACE.resolutions))


def image_folder_task(root: Path) -> ImageFolderTask:
    """The task on a user's image folder ``ROOT/<class name>/<images>`` (``--data``), at
    the digits space's largest resolution; grey or RGB as the images are."""
    return ImageFolderTask(root, layout="image", resolution=max(DIGITS_SPACE.resolutions))


def calibration_images(task: Task, count: int = CALIBRATION_IMAGES) -> Tensor:
    """The first ``count`` training images of an image task (the BN calibration set)."""
    if isinstance(task, ImageFolderTask) and task.layout == "image":
        return task.train_inputs(count)
    if not isinstance(task, DigitsTask) or task.layout != "image":
        raise TypeError(f"OFA calibrates on an image DigitsTask or ImageFolderTask, "
                        f"got {task!r}")
    return task.split("train")[0][:count]


def _build_digits(task: Task) -> OFAMobileNetV3:
    """An untrained supernet over the digits space holding the task's calibration
    images, its input channels and classes those of the task (digits: 1 and 10)."""
    images = calibration_images(task)
    classes = task.num_classes if isinstance(task, ImageFolderTask) else DIGITS_CLASSES
    return OFAMobileNetV3(DIGITS_SPACE, in_channels=int(images.shape[1]),
                          num_classes=classes).set_calibration(images)


SUPERNET_FAMILIES.register(FAMILY, description="OFA MobileNetV3 supernet")(
    OFAMobileNetV3.from_architecture
)


@SUPERNETS.register(NAME, description="OFA MobileNetV3 supernet (elastic kernel, expand, "
                    "depth, resolution) trained by progressive shrinking on digits "
                    f"(task {TASK_NAME})")
def ofa() -> Supernet:
    """The shipped OFA supernet with trained weights and its BN calibration set."""
    net = load_zoo_checkpoint(NAME)
    assert isinstance(net, OFAMobileNetV3)
    net.set_calibration(calibration_images(digits_task()))
    return net


@SPACES.register(MOBILENETV3_SPACE.name, description="OFA's published MobileNetV3 space "
                 "(5 stages x 4 blocks, kernels 3/5/7, expand 3/4/6, depths 2/3/4, "
                 "resolutions 128..224 step 4), no weights: search it with "
                 "--accuracy-predictor and --hw ofa-lut:FOLDER")
def ofa_mbv3_space() -> SpaceModel:
    """OFA's published MobileNetV3 space, priced by OFA's tables and predictors."""
    return SpaceModel(MOBILENETV3_SPACE.build(), design=MOBILENETV3_SPACE)


add_recipe(ZooRecipe(
    name=NAME, stem="ofa-digits", task=TASK_NAME, build=_build_digits, steps=1000,
    batch_size=32, lr=3e-3, seed=0, warmup=30, scheme=ProgressiveShrinking,
    eval_limit=None, user_task=image_folder_task,
))
