"""The weight-shared FlexiBERT supernet: every layer holds each operation type's weights
at the largest width and a subnet runs on their slices.

Sharing, per layer: ``sa-sdp`` and ``sa-wma`` share the query/key/value/output weights
(``wma`` adds its ``d x d`` score matrix, sliced to the head size); ``lt-dft`` and
``lt-dct`` share the output projection; ``dsc-5`` uses the centre 5 taps of ``dsc-9``'s
depthwise kernel and of its kernel generator. Hidden sizes, heads and feed-forward widths
slice the leading rows and columns; the feed-forward stack's first layer and output
projection are shared by both stack depths; one largest projection per layer gives the
projection to the next layer's width when the two differ.

A subnet runs by evaluating the dense model (:class:`FlexiBERTSubnet`, built on the
``meta`` device, so without allocating) on views of the supernet's weights
(``torch.func.functional_call``): the activated supernet and the extracted model run the
same code on the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from nas._space import Config
from nas._supernet import LayerShape, QuantUnit, SubnetShape, Supernet
from nas.supernets.flexibert._dense import FlexiBERTSubnet
from nas.supernets.flexibert._ops import op_kind
from nas.supernets.flexibert._space import OPS, FlexiBERTSpec, LayerChoice, layer_choices
from nas.supernets.training._schemes import SandwichRule

__all__ = ["FAMILY", "FlexiBERTSandwich", "FlexiBERTSupernet"]

FAMILY = "flexibert"
State = dict[str, Tensor]


class FlexiBERTSandwich(SandwichRule):
    """FlexiBERT's scheme for a weight-shared supernet: the sandwich rule.

    The paper trains each sampled architecture separately (weights transferred from
    trained neighbours, then fine-tuned) and fits a surrogate; a weight-shared supernet
    instead trains the largest, the smallest and ``random_subnets`` random heterogeneous
    subnets on every batch (Yu & Huang 2019), the mean of their losses.
    """

    name = "flexibert-sandwich"

    def describe(self) -> dict[str, Any]:
        return super().describe() | {
            "paper": "FlexiBERT trains sampled models one by one; the weight-shared "
            "supernet uses the sandwich rule instead"
        }


class _LayerWeights(nn.Module):
    """One supernet layer: each operation type's largest weights, FFN, norms, projection.

    The modules only hold parameters; the dense skeleton applies them (with its own
    LayerNorm epsilon), so nothing here has a ``forward``.
    """

    def __init__(self, spec: FlexiBERTSpec, *, project: bool) -> None:
        super().__init__()
        hidden, ffn = max(spec.hidden), max(spec.ffn_dims)
        kinds = {op_kind(op)[0] for op in spec.ops}
        if "sa" in kinds:
            self.sa = nn.ModuleDict({n: nn.Linear(hidden, hidden)
                                     for n in ("query", "key", "value", "out")})
            self.wma = nn.Parameter(torch.eye(hidden // min(spec.heads)))
        if "lt" in kinds:
            self.lt_out = nn.Linear(hidden, hidden)
        if "dsc" in kinds:
            kernel = max(int(op_kind(op)[1]) for op in spec.ops if op.startswith("dsc"))
            self.dsc = nn.ModuleDict({n: nn.Linear(hidden, hidden)
                                      for n in ("query", "pointwise", "value", "out")})
            self.depthwise = nn.Parameter(torch.randn(hidden, 1, kernel) * 0.02)
            generator = nn.Linear(hidden, max(spec.heads) * kernel)
            self.gen_weight = nn.Parameter(
                generator.weight.detach().view(max(spec.heads), kernel, hidden).clone()
            )
            self.gen_bias = nn.Parameter(
                generator.bias.detach().view(max(spec.heads), kernel).clone()
            )
        self.norm1 = nn.LayerNorm(hidden)
        widths = [hidden] + [ffn] * max(spec.ffn_stacks)
        self.ffn = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.ffn_out = nn.Linear(ffn, hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.proj = nn.Linear(hidden, hidden) if project else None

    def dense_state(self, layer: LayerChoice, next_hidden: int | None) -> State:
        """Views of this layer's weights named as the dense layer's parameters."""
        h, n = layer.hidden, layer.heads
        kind, param = op_kind(layer.op)
        out: State = {}

        def linear(name: str, module: nn.Linear, rows: int, cols: int) -> None:
            out[f"{name}.weight"] = module.weight[:rows, :cols]
            out[f"{name}.bias"] = module.bias[:rows]

        if kind == "sa":
            for name in ("query", "key", "value", "out"):
                linear(f"op.{name}", self.sa[name], h, h)
            if param == "wma":
                out["op.wma"] = self.wma[: h // n, : h // n]
        elif kind == "lt":
            linear("op.out", self.lt_out, h, h)
        else:
            k = int(param)
            start = (self.depthwise.shape[-1] - k) // 2
            for name in ("query", "pointwise", "value", "out"):
                linear(f"op.{name}", self.dsc[name], h, h)
            out["op.depthwise"] = self.depthwise[:h, :, start : start + k]
            out["op.generator.weight"] = self.gen_weight[:n, start : start + k, :h].reshape(
                n * k, h
            )
            out["op.generator.bias"] = self.gen_bias[:n, start : start + k].reshape(n * k)
        widths = [h, *layer.ffn]
        for j, (a, b) in enumerate(zip(widths, widths[1:])):
            linear(f"ffn.stack.{j}", self.ffn[j], b, a)
        linear("ffn.out", self.ffn_out, h, widths[-1])
        for name in ("norm1", "norm2"):
            norm = getattr(self, name)
            out[f"{name}.weight"], out[f"{name}.bias"] = norm.weight[:h], norm.bias[:h]
        if next_hidden is not None and next_hidden != h:
            assert self.proj is not None, "a width change needs the layer's projection"
            linear("proj", self.proj, next_hidden, h)
        return out


class FlexiBERTSupernet(Supernet):
    """FlexiBERT (Tuli et al. 2022) as a weight-shared supernet over ``spec``'s space.

    ``forward(input_ids (B, T), attention_mask (B, T) or None) -> (B, T, out_dim)``:
    the last hidden states of the active subnet through a linear head of width
    ``out_dim`` (the distillation teacher's embedding size).

    Args:
        spec: the design space's choices.
        vocab_size: token ids are in ``[0, vocab_size)``.
        max_positions: the longest sequence.
        out_dim: the head's width.
        layer_norm_eps: epsilon of every LayerNorm.
    """

    family = FAMILY

    def __init__(
        self,
        spec: FlexiBERTSpec,
        *,
        vocab_size: int,
        max_positions: int,
        out_dim: int,
        layer_norm_eps: float = 1e-12,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("max_positions", max_positions),
                            ("out_dim", out_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.spec = spec
        self.space = spec.space()
        self.vocab_size, self.max_positions, self.out_dim = vocab_size, max_positions, out_dim
        self.layer_norm_eps = layer_norm_eps
        hidden = max(spec.hidden)
        self.word = nn.Embedding(vocab_size, hidden)
        self.position = nn.Embedding(max_positions, hidden)
        nn.init.normal_(self.word.weight, std=0.02)
        nn.init.normal_(self.position.weight, std=0.02)
        self.embed_norm = nn.LayerNorm(hidden)
        varied = len(spec.hidden) > 1
        self.layers = nn.ModuleList(
            _LayerWeights(spec, project=varied and i < spec.max_layers - 1)
            for i in range(spec.max_layers)
        )
        self.head = nn.Linear(hidden, out_dim)
        # A tuple, so the meta-device skeleton is not registered as a submodule.
        self._skeleton: tuple[nn.Module, ...] = ()
        self.activate(self.space.largest())

    # -- the Supernet hooks -------------------------------------------------------------

    def _activate(self, config: Config) -> None:
        with torch.device("meta"):
            self._skeleton = (FlexiBERTSubnet(**self._subnet_config(config)),)

    def _extract(self, config: Config) -> FlexiBERTSubnet:
        model = FlexiBERTSubnet(**self._subnet_config(config))
        with torch.no_grad():
            state = {k: v.detach().clone().contiguous()
                     for k, v in self._dense_state(config).items()}
        model.load_state_dict(state, strict=True)
        return model.to(self.word.weight.dtype).eval()

    def quant_units(self) -> tuple[QuantUnit, ...]:
        """Per layer its operation (attention, convolution or transform weights) and its
        FFN (with the projection to the next layer's width, when it has one)."""
        return tuple(QuantUnit(f"layer.{i}.{part}", self.space.gene(f"layer.{i}.op").active_if)
                     for i in range(self.spec.max_layers) for part in ("op", "ffn"))

    def _quant_modules(self, config: Config) -> dict[str, tuple[str, ...]]:
        return {
            f"layer.{i}.{part}": modules
            for i in range(int(config["layers"]))
            for part, modules in (("op", (f"layers.{i}.op",)),
                                  ("ffn", (f"layers.{i}.ffn", f"layers.{i}.proj")))
        }

    def _describe(self, config: Config) -> SubnetShape:
        choices = layer_choices(config)
        nexts = [c.hidden for c in choices[1:]] + [0]
        layers = []
        for choice, nxt in zip(choices, nexts):
            kind, param = op_kind(choice.op)
            layers.append(LayerShape("encoder", {
                "embed_dim": choice.hidden,
                "heads": choice.heads,
                "head_dim": choice.hidden // choice.heads,
                "op": OPS.index(choice.op),
                "kernel": int(param) if kind == "dsc" else 0,
                "ffn_stacks": len(choice.ffn),
                "ffn_dim": choice.ffn[0],
                **{f"ffn_{j}_dim": d for j, d in enumerate(choice.ffn)},
                "proj_dim": nxt if nxt and nxt != choice.hidden else 0,
            }))
        return SubnetShape(FAMILY, tuple(layers), {
            "vocab_size": self.vocab_size, "max_positions": self.max_positions,
            "out_dim": self.out_dim,
        })

    def _architecture(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(), "vocab_size": self.vocab_size,
            "max_positions": self.max_positions, "out_dim": self.out_dim,
            "layer_norm_eps": self.layer_norm_eps,
        }

    @classmethod
    def from_architecture(cls, architecture: Mapping[str, Any]) -> FlexiBERTSupernet:
        """An untrained supernet from :meth:`architecture`'s dict."""
        args = dict(architecture)
        spec = FlexiBERTSpec.from_dict(args.pop("spec"))
        return cls(spec, **args)

    # -- running ------------------------------------------------------------------------

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        if not self._skeleton:
            raise RuntimeError("no subnet is active; call activate(config) first")
        return functional_call(
            self._skeleton[0], self._dense_state(self.active_config), (input_ids, attention_mask)
        )

    def _subnet_config(self, config: Config) -> dict[str, Any]:
        return {
            "vocab_size": self.vocab_size, "max_positions": self.max_positions,
            "out_dim": self.out_dim, "layer_norm_eps": self.layer_norm_eps,
            "layers": [{"hidden": c.hidden, "op": c.op, "heads": c.heads, "ffn": list(c.ffn)}
                       for c in layer_choices(config)],
        }

    def _dense_state(self, config: Config) -> State:
        """Views of the supernet's weights named as :class:`FlexiBERTSubnet`'s."""
        choices = layer_choices(config)
        h0, last = choices[0].hidden, choices[-1].hidden
        state: State = {
            "word.weight": self.word.weight[:, :h0],
            "position.weight": self.position.weight[:, :h0],
            "embed_norm.weight": self.embed_norm.weight[:h0],
            "embed_norm.bias": self.embed_norm.bias[:h0],
            "head.weight": self.head.weight[:, :last],
            "head.bias": self.head.bias,
        }
        nexts = [c.hidden for c in choices[1:]] + [None]
        for i, (choice, nxt) in enumerate(zip(choices, nexts)):
            for name, tensor in self.layers[i].dense_state(choice, nxt).items():
                state[f"layers.{i}.{name}"] = tensor
        return state

