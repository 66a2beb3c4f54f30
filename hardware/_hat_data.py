"""HAT's published latency measurements (MIT licence), shipped in ``hardware/data/``.

HAT (Wang et al., ACL 2020) measured 2000 random SubTransformers of its WMT'14 En-De
space on each of three devices with ``latency_dataset.py`` (see ``data/PROVENANCE.md``).
Facts of that code that the latency models rely on:

- the encoder is timed alone: one ``model.encoder(...)`` call on one 30-token sentence;
- the decoder is timed over 30 steps, each one ``model.decoder(...)`` call with an
  ``incremental_state`` (one new token per step, cached self-attention keys/values,
  encoder-side keys/values computed at the first step only), for 5 hypotheses (the
  encoder output is reordered to beam 5 first); the output projection over the joined
  32,768-entry vocabulary is part of every step; beam-search bookkeeping (top-k,
  reordering of states) is *not* timed;
- q/k/v projections are 512 wide whatever the head count (``qkv-dim: 512``);
- the encoder always has 6 layers; fairseq loops over all 6 super-layers of the decoder
  at every step (the unused ones return at once).
"""

from __future__ import annotations

import csv
import functools
import logging
from dataclasses import dataclass
from importlib import resources

import numpy as np

from nas._task import Workload
from nas.hardware._macs import DecoderLayerDims, EncoderLayerDims, Seq2SeqShape

logger = logging.getLogger(__name__)

HAT_WORKLOAD = Workload(src_len=30.0, tgt_len=30.0, batch=1, beam=5)
"""What HAT timed on WMT: a 30-token source, 30 decoder steps, beam 5, batch 1."""

HAT_QKV_DIM = 512
"""``qkv-dim`` of HAT's WMT'14 En-De latency configs: q/k/v width for every head count."""

HAT_WMT_VOCAB = 32768
"""Joined En-De dictionary size (``preprocess.sh``: ``--nwordssrc/--nwordstgt 32768
--joined-dictionary``); the output projection is ``decoder_embed_dim x 32768``."""

NOISY_ENCODER_FACTOR = 2.0
"""Rows whose encoder latency exceeds this many times the median are dropped where a
device's data is marked noisy (the Raspberry Pi: about 126 of 2000 rows)."""


@dataclass(frozen=True)
class HATDevice:
    """One device of HAT's latency dataset."""

    key: str
    hardware: str
    filename: str
    noisy: bool = False


HAT_DEVICES: dict[str, HATDevice] = {
    "rpi4": HATDevice("rpi4", "Raspberry Pi 4 (ARM Cortex-A72 CPU)",
                      "wmt14ende_cpu_raspberrypi_all.csv", noisy=True),
    "xeon": HATDevice("xeon", "Intel Xeon E5-2640 CPU", "wmt14ende_cpu_xeon_all.csv"),
    "titanxp": HATDevice("titanxp", "Nvidia TITAN Xp GPU", "wmt14ende_gpu_titanxp_all.csv"),
}
"""HAT's three measured devices: target name -> description and measurement file."""

_FEATURES = (
    "encoder_embed_dim", "encoder_layer_num", "encoder_ffn_embed_dim_avg",
    "encoder_self_attention_heads_avg", "decoder_embed_dim", "decoder_layer_num",
    "decoder_ffn_embed_dim_avg", "decoder_self_attention_heads_avg",
    "decoder_ende_attention_heads_avg", "decoder_arbitrary_ende_attn_avg",
)


@dataclass(frozen=True)
class HATMeasurements:
    """The usable rows of one device's CSV.

    ``features`` maps HAT's feature names to one value per row; ``dropped`` counts
    the noisy rows left out.
    """

    device: HATDevice
    features: dict[str, np.ndarray]
    encoder_ms: np.ndarray
    decoder_ms: np.ndarray
    dropped: int

    def __len__(self) -> int:
        return len(self.encoder_ms)

    @property
    def total_ms(self) -> np.ndarray:
        return self.encoder_ms + self.decoder_ms

    def shapes(self) -> list[Seq2SeqShape]:
        return [shape_from_hat_features({k: float(v[i]) for k, v in self.features.items()})
                for i in range(len(self))]


def shape_from_hat_features(
    row: dict[str, float], *, qkv_dim: float = HAT_QKV_DIM, vocab: float = HAT_WMT_VOCAB
) -> Seq2SeqShape:
    """A SubTransformer as HAT's features describe it: every layer at the mean widths.

    MACs are linear in each layer's widths, so mean widths give exact MAC counts.
    HAT codes its arbitrary encoder-decoder attention -1, 1, 2 as 1, 2, 3 attended
    encoder layers in the feature ``decoder_arbitrary_ende_attn_avg``.
    """
    n_enc = int(round(row["encoder_layer_num"]))
    n_dec = int(round(row["decoder_layer_num"]))
    enc_embed = row["encoder_embed_dim"]
    dec_embed = row["decoder_embed_dim"]
    encoder = EncoderLayerDims(enc_embed, row["encoder_ffn_embed_dim_avg"], qkv_dim)
    decoder = DecoderLayerDims(
        embed_dim=dec_embed,
        ffn_dim=row["decoder_ffn_embed_dim_avg"],
        qkv_dim=qkv_dim,
        cross_qkv_dim=qkv_dim,
        ende_layers=row["decoder_arbitrary_ende_attn_avg"],
        encoder_embed_dim=enc_embed,
    )
    return Seq2SeqShape((encoder,) * n_enc, (decoder,) * n_dec, dec_embed, vocab)


@functools.cache
def load_hat_measurements(device: str) -> HATMeasurements:
    """The rows of ``device``'s CSV (``rpi4``, ``xeon`` or ``titanxp``), noisy rows dropped.

    Raises:
        ValueError: an unknown device.
    """
    try:
        spec = HAT_DEVICES[device]
    except KeyError:
        raise ValueError(
            f"device must be one of {sorted(HAT_DEVICES)}, got {device!r}"
        ) from None
    rows = _read_csv(spec.filename)
    columns = {name: np.array([float(r[name]) for r in rows]) for name in rows[0]}
    keep = np.ones(len(rows), dtype=bool)
    if spec.noisy:
        encoder = columns["latency_mean_encoder"]
        keep = encoder <= NOISY_ENCODER_FACTOR * np.median(encoder)
        logger.debug("%s: dropping %d noisy rows (encoder > %.1fx median)",
                     device, int((~keep).sum()), NOISY_ENCODER_FACTOR)
    return HATMeasurements(
        device=spec,
        features={name: columns[name][keep] for name in _FEATURES},
        encoder_ms=columns["latency_mean_encoder"][keep],
        decoder_ms=columns["latency_mean_decoder"][keep],
        dropped=int((~keep).sum()),
    )


def _read_csv(filename: str) -> list[dict[str, str]]:
    text = resources.files("nas.hardware").joinpath("data", filename).read_text()
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise ValueError(f"HAT latency file {filename} holds no rows")
    return rows
