"""A dense HAT subnet as the two graphs a deployment runs: encoder and one decoding step.

Greedy decoding is a loop whose length depends on the output, so one traced forward pass
cannot hold it. Deployed, it is two graphs and a loop outside them (as ONNX Runtime or
TorchScript users write it): the encoder runs once per batch and returns, per decoder
layer, the encoder-decoder keys and values; the step graph takes the last token, those
keys and values and the self-attention cache, and returns the logits and the cache with
one more position. Every tensor the loop carries is a graph input or output, named:

- encoder: ``src_tokens`` (B, S) -> ``src_padding`` (B, S, bool), then
  ``memory_key.{i}``, ``memory_value.{i}`` (B, h_i, k_i * S, hd_i) per decoder layer;
- step: ``token`` (B, 1), ``src_padding``, the memory pairs, ``past_key.{i}``,
  ``past_value.{i}`` (B, h_i, t, hd_i) -> ``logits`` (B, V), ``present_key.{i}``,
  ``present_value.{i}`` (B, h_i, t + 1, hd_i).

Heads and head widths differ per layer as the subnet's genes say (:attr:`cache`). At the
first step the cache has length 0; the position is read from the cache's length, so the
loop passes no counter. Both graphs compute with the dense model's own code
(:meth:`HATSubnet.memories`, :meth:`HATSubnet.decode_step`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nas.supernets.hat._dense import HATSubnet, attend_mask


class EncoderGraph(nn.Module):
    """``src_tokens`` -> ``src_padding`` and each decoder layer's memory keys/values."""

    def __init__(self, subnet: HATSubnet) -> None:
        super().__init__()
        self.subnet = subnet

    def forward(self, src_tokens: Tensor) -> tuple[Tensor, ...]:
        out = [src_tokens.eq(self.subnet.pad_index)]  # (B, S)
        for k, v, _ in self.subnet.memories(src_tokens):
            out += [k, v]  # (B, h_i, k_i * S, hd_i)
        return tuple(out)


class DecoderStepGraph(nn.Module):
    """One greedy step: ``token``, ``src_padding``, memory pairs, cache pairs -> logits
    and the cache one position longer."""

    def __init__(self, subnet: HATSubnet) -> None:
        super().__init__()
        self.subnet = subnet

    def forward(self, token: Tensor, src_padding: Tensor, *pairs: Tensor) -> tuple[Tensor, ...]:
        n = len(self.subnet.decoder)
        if len(pairs) != 4 * n:
            raise ValueError(f"the step takes {2 * n} memory and {2 * n} cache tensors "
                             f"after token and src_padding, got {len(pairs)}")
        memory, past = pairs[: 2 * n], pairs[2 * n :]
        memories = [
            (memory[2 * i], memory[2 * i + 1], attend_mask(src_padding.repeat(1, count)))
            for i, count in enumerate(self.subnet.ende_layers)
        ]
        cache = [(past[2 * i], past[2 * i + 1]) for i in range(n)]
        length = past[0].shape[2]  # traced as the input's size: any cache length
        position = torch.arange(length + 1, length + 2, device=token.device)  # (1,)
        logits, present = self.subnet.decode_step(token, position, memories, cache)
        return (logits, *(t for kv in present for t in kv))


@dataclass(frozen=True)
class DecodingGraphs:
    """The two graphs of a subnet with their input/output names and dynamic axes.

    ``cache`` holds (heads, head width) per decoder layer: the shape of its
    ``past_key.{i}``/``past_value.{i}`` is (batch, heads, length, head width).
    """

    encoder: EncoderGraph
    step: DecoderStepGraph
    cache: tuple[tuple[int, int], ...]
    max_positions: int

    @property
    def encoder_outputs(self) -> list[str]:
        return ["src_padding", *_pairs("memory", len(self.cache))]

    @property
    def step_inputs(self) -> list[str]:
        n = len(self.cache)
        return ["token", "src_padding", *_pairs("memory", n), *_pairs("past", n)]

    @property
    def step_outputs(self) -> list[str]:
        return ["logits", *_pairs("present", len(self.cache))]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Batch, source length and cache length are free in every name that has them."""
        axes: dict[str, dict[int, str]] = {"src_tokens": {0: "batch", 1: "src_len"},
                                           "src_padding": {0: "batch", 1: "src_len"},
                                           "token": {0: "batch"}, "logits": {0: "batch"}}
        for i, name in enumerate(_pairs("memory", len(self.cache))):
            axes[name] = {0: "batch", 2: f"memory_len.{i // 2}"}
        for name in _pairs("past", len(self.cache)):
            axes[name] = {0: "batch", 2: "past_len"}
        for name in _pairs("present", len(self.cache)):
            axes[name] = {0: "batch", 2: "present_len"}
        return axes

    def empty_cache(self, batch: int) -> list[Tensor]:
        """The cache at the first step: length 0 in every layer."""
        return [torch.zeros(batch, heads, 0, size)
                for heads, size in self.cache for _ in range(2)]


def decoding_graphs(subnet: HATSubnet) -> DecodingGraphs:
    """The encoder and decoder-step graphs of ``subnet`` (sharing its weights)."""
    cache = tuple((layer.self_attn.heads, layer.self_attn.out.in_features // layer.self_attn.heads)
                  for layer in subnet.decoder)
    return DecodingGraphs(EncoderGraph(subnet).eval(), DecoderStepGraph(subnet).eval(), cache,
                          subnet.max_positions)


def _pairs(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}_{kind}.{i}" for i in range(layers) for kind in ("key", "value")]
