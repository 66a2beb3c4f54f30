"""Memory of a subnet from its shapes alone: the model targets without a measurement use.

A supernet family's :class:`~nas.MemoryModel` reads :meth:`Supernet.describe`'s
:class:`~nas.SubnetShape` and the task's :class:`~nas.Workload` and gives what
:func:`nas.hardware._memory.measure_memory` measures, in fp32 (4 bytes an element):

- **weights**: every parameter and buffer of the family's dense model, counted layer
  by layer (exact: a test compares them with the dense models' own);
- **activations**: the peak of live tensors while the batch-1 latency probe runs,
  walked operator by operator the way the dense model allocates them (an operator's
  output lives while its consumer computes; a residual input lives through the block);
- **KV cache** (HAT): :func:`~nas.hardware._memory.kv_cache_bytes`, part of the
  activations.

Its error against measurements of this machine (``benchmarks/bench_memory_model.py``,
``data/memory_model.json``) is each model's :attr:`~nas.MemoryModel.error`, stated by
``nas hw show``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path

from nas._hardware import MEMORY_MODELS, MemoryEstimate, MemoryModel
from nas._supernet import LayerShape, SubnetShape
from nas._task import Workload
from nas.hardware._memory import kv_cache_bytes

FLOAT = 4
"""Bytes of an fp32 element."""
ERRORS_FILE = Path(__file__).parent / "data" / "memory_model.json"
"""Each family's error against measurements, written by ``bench_memory_model.py``."""
HAT_POSITIONS = 64
"""Rows of HAT's sinusoidal position tables where the shape does not say (HAT's default)."""


@functools.cache
def _errors() -> dict[str, dict[str, float]]:
    if not ERRORS_FILE.is_file():
        return {}
    return dict(json.loads(ERRORS_FILE.read_text())["families"])


class _ShapeModel(MemoryModel):
    """A family's formulas; :attr:`error` is read from :data:`ERRORS_FILE`."""

    family = ""

    @property
    def error(self) -> Mapping[str, float]:
        return _errors().get(self.family, {})


def _linear(cin: int, cout: int, bias: bool = True) -> int:
    return cin * cout + (cout if bias else 0)


# -- HAT: an encoder-decoder transformer decoded greedily with a KV cache ------------------


class HATMemory(_ShapeModel):
    """HAT's dense subnet (``supernets/hat/_dense.py``) under greedy decoding of the
    workload's mean target length, source of its mean length."""

    family = "hat"

    def estimate(self, shape: SubnetShape, workload: Workload) -> MemoryEstimate:
        enc = [layer.dims for layer in shape.layers if layer.kind == "encoder"]
        dec = [layer.dims for layer in shape.layers if layer.kind == "decoder"]
        e, d = shape.dims["encoder_embed_dim"], shape.dims["decoder_embed_dim"]
        positions = shape.dims.get("max_positions", HAT_POSITIONS)
        weights = (shape.dims["src_vocab"] * e + shape.dims["tgt_vocab"] * d
                   + positions * (e + d))
        weights += sum(_linear(e, 3 * x["qkv_dim"]) + _linear(x["qkv_dim"], e)
                       + _linear(e, x["ffn_dim"]) + _linear(x["ffn_dim"], e) + 4 * e
                       for x in enc)
        weights += sum(_linear(d, 3 * x["qkv_dim"]) + _linear(x["qkv_dim"], d)
                       + _linear(d, x["ende_qkv_dim"]) + _linear(e, 2 * x["ende_qkv_dim"])
                       + _linear(x["ende_qkv_dim"], d)
                       + _linear(d, x["ffn_dim"]) + _linear(x["ffn_dim"], d) + 6 * d
                       for x in dec)
        src, steps = max(1, round(workload.src_len)), max(1, round(workload.tgt_len))
        kept = max((x["ende_layers"] for x in dec), default=0)
        # Encoding: the states the decoder attends to, plus one layer's working set.
        encoding = src * e * (kept + 3) + max(
            (src * (3 * x["qkv_dim"] + x["ffn_dim"]) + 2 * x["heads"] * src * src
             for x in enc), default=0)
        # Decoding: every layer's encoder keys and values, the cache, one step's work.
        cross = sum(2 * x["ende_qkv_dim"] * x["ende_layers"] * src for x in dec)
        cache = kv_cache_bytes(shape, steps=steps, batch=workload.batch,
                               beam=workload.beam, dtype_bytes=FLOAT)
        step = max((3 * x["qkv_dim"] + x["ffn_dim"] + 4 * d for x in dec), default=0)
        decoding = cross + step + 2 * shape.dims["tgt_vocab"]
        activations = max(encoding + cross, decoding) * FLOAT + cache
        return MemoryEstimate(weights * FLOAT, activations, cache)


# -- OFA: MobileNetV3 blocks at one resolution ---------------------------------------------


def _bn(channels: int) -> int:
    """BatchNorm2d's bytes: weight, bias, running mean and variance, and the int64 count."""
    return 4 * channels * FLOAT + 8


class OFAMemory(_ShapeModel):
    """OFA's dense MobileNetV3 (``supernets/ofa/_dense.py``) classifying one image."""

    family = "ofa"

    def estimate(self, shape: SubnetShape, workload: Workload) -> MemoryEstimate:
        weights, peak = 0, 0
        for i, layer in enumerate(shape.layers):
            w, a = self._layer(layer, first=i == 1)
            weights, peak = weights + w, max(peak, a)
        return MemoryEstimate(weights, peak * FLOAT)

    @staticmethod
    def _layer(layer: LayerShape, *, first: bool) -> tuple[int, int]:
        """Bytes of the layer's weights, and its peak of live elements."""
        x = layer.dims
        if layer.kind == "stem":
            s, out = x["in_size"], (x["in_size"] + 1) // 2
            return (x["cin"] * x["cout"] * 9 * FLOAT + _bn(x["cout"]),
                    x["cin"] * s * s + 2 * x["cout"] * out * out)
        if layer.kind == "mbconv":
            s, mid, k = x["in_size"], x["mid"], x["kernel"]
            out = (s - 1) // x["stride"] + 1
            inp = x["cin"] * s * s
            w = mid * k * k * FLOAT + _bn(mid) + x["cout"] * mid * FLOAT + _bn(x["cout"])
            live = [inp + 2 * mid * out * out + (0 if first else mid * s * s),
                    inp + mid * out * out + 2 * x["cout"] * out * out]
            if not first:
                w += x["cin"] * mid * FLOAT + _bn(mid)
                live.append(inp + 2 * mid * s * s)
            if x["se_mid"]:
                w += (_linear(mid, x["se_mid"]) + _linear(x["se_mid"], mid)) * FLOAT
                live.append(inp + 2 * mid * out * out)
            return w, max(live)
        if layer.kind == "final_expand":
            s = x["in_size"]
            return (x["cin"] * x["cout"] * FLOAT + _bn(x["cout"]),
                    x["cin"] * s * s + 2 * x["cout"] * s * s)
        if layer.kind == "feature_mix":
            return x["cin"] * x["cout"] * FLOAT, x["cin"] + 2 * x["cout"]
        return _linear(x["cin"], x["cout"]) * FLOAT, x["cin"] + x["cout"]  # classifier


# -- SortedNet: an MLP, or an encoder-only transformer --------------------------------------


class SortedMLPMemory(_ShapeModel):
    """SortedNet's dense MLP (linear + ReLU layers, a linear head) on one vector."""

    family = "sortednet"

    def estimate(self, shape: SubnetShape, workload: Workload) -> MemoryEstimate:
        weights = sum(_linear(x.dims["in_features"], x.dims["out_features"])
                      for x in shape.layers) * FLOAT
        peak = max(x.dims["in_features"] + 2 * x.dims["out_features"] for x in shape.layers)
        return MemoryEstimate(weights, peak * FLOAT)


# -- MatFormer: a decoder-only LM over one full window ---------------------------------------


class MatFormerMemory(_ShapeModel):
    """MatFormer's dense LM (``supernets/matformer/_dense.py``): one forward pass of a
    full window (the workload's ``src_len`` tokens), next-token logits at every one."""

    family = "matformer"

    def estimate(self, shape: SubnetShape, workload: Workload) -> MemoryEstimate:
        c, vocab, context = (shape.dims["embed_dim"], shape.dims["vocab_size"],
                             shape.dims["context"])
        tokens = max(1, round(workload.src_len))
        weights = (vocab * c + context * c + 2 * c + _linear(c, vocab)) * FLOAT
        peak = 0
        for layer in shape.layers:
            f, heads = layer.dims["ffn_dim"], layer.dims["heads"]
            weights += (4 * c + _linear(c, 3 * c) + _linear(c, c) + _linear(c, f)
                        + _linear(f, c)) * FLOAT + context * context  # the bool causal mask
            # attention: the residual, its norm, q/k/v, their copies for the product and
            # two (H, T, T) score tensors; the FFN: the residual, its norm, fc1 and gelu;
            # both beside the int64 positions
            attention = 6 * tokens * c + 2 * heads * tokens * tokens + 2 * tokens
            ffn = 3 * tokens * c + 2 * tokens * f + 2 * tokens
            peak = max(peak, attention, ffn)
        peak = max(peak, 2 * tokens * c + tokens * vocab + 2 * tokens)  # norm and logits
        return MemoryEstimate(weights, peak * FLOAT)


# -- NAS-Bench-201: the CIFAR network of one cell ---------------------------------------------


class NB201Memory(_ShapeModel):
    """NAS-Bench-201's dense network (``supernets/nb201/_network.py``) classifying one
    32x32 image. The shape counts a cell's operations but not their edges, so a cell's
    peak is the one of its last node: its three inputs stay alive (``run_cell`` keeps
    every node), beside the running sum and an operation's two working tensors (one
    where every edge is a skip)."""

    family = "nb201"

    def estimate(self, shape: SubnetShape, workload: Workload) -> MemoryEstimate:
        weights, peak = 0, 0
        for layer in shape.layers:
            w, a = self._layer(layer)
            weights, peak = weights + w, max(peak, a)
        return MemoryEstimate(weights, peak * FLOAT)

    @staticmethod
    def _layer(layer: LayerShape) -> tuple[int, int]:
        """Bytes of the layer's weights, and its peak of live elements."""
        x = layer.dims
        if layer.kind == "stem":
            c, area = x["channels"], x["resolution"] ** 2
            return (x["in_channels"] * c * 9 * FLOAT + _bn(c),
                    x["in_channels"] * area + 2 * c * area)
        if layer.kind == "reduction":
            cin, cout, area = x["in_channels"], x["channels"], x["resolution"] ** 2
            out = (x["resolution"] // 2) ** 2
            w = (9 * cin * cout + 9 * cout * cout + cin * cout) * FLOAT + 2 * _bn(cout)
            return w, max(2 * cin * area + 2 * cout * out, cin * area + 3 * cout * out)
        if layer.kind == "cell":
            c, area = x["channels"], x["resolution"] ** 2
            convs = x.get("nor_conv_1x1", 0) + x.get("nor_conv_3x3", 0)
            w = (x.get("nor_conv_1x1", 0) * c * c + x.get("nor_conv_3x3", 0) * 9 * c * c
                 ) * FLOAT + convs * _bn(c)
            all_skips = x.get("skip_connect", 0) == sum(
                x.get(op, 0) for op in ("none", "skip_connect", "nor_conv_1x1",
                                        "nor_conv_3x3", "avg_pool_3x3"))
            return w, (5 if all_skips else 6) * c * area
        c = x["channels"]  # the head: BatchNorm, ReLU, pooling, classifier
        return _bn(c) + _linear(c, x["classes"]) * FLOAT, 3 * c * 64 + c + x["classes"]


MEMORY_MODELS.register("hat", description="HAT encoder-decoder, greedy decoding")(HATMemory)
MEMORY_MODELS.register("ofa", description="OFA MobileNetV3, one image")(OFAMemory)
MEMORY_MODELS.register("sortednet", description="SortedNet MLP, one vector")(SortedMLPMemory)
MEMORY_MODELS.register("matformer", description="MatFormer decoder LM, one window")(
    MatFormerMemory)
MEMORY_MODELS.register("nb201", description="NAS-Bench-201 CIFAR network, one image")(
    NB201Memory)
