"""HAT's design space as data: the elastic dimensions of a SuperTransformer.

HAT (Wang et al., ACL 2020, "HAT: Hardware-Aware Transformers") samples, per
SubTransformer: the encoder and decoder embedding dims, the encoder and decoder layer
counts, every layer's FFN hidden dim and head count, every decoder layer's
encoder-decoder head count, and every decoder layer's "arbitrary encoder-decoder
attention": attend to the last 1, 2 or 3 encoder layers (not only the last).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from nas._space import Condition, Gene, SearchSpace


@dataclass(frozen=True)
class HATDesignSpace:
    """The choices of one HAT space; :meth:`build` turns it into a :class:`SearchSpace`.

    Gene names: ``encoder.embed_dim``, ``encoder.layers``, ``encoder.{i}.ffn_dim``,
    ``encoder.{i}.heads``, ``decoder.embed_dim``, ``decoder.layers``,
    ``decoder.{i}.ffn_dim``, ``decoder.{i}.heads``, ``decoder.{i}.ende_heads`` and
    ``decoder.{i}.ende_layers`` (the last ``k`` encoder layers attended), ``i`` from 0.
    A layer's genes are active only while the layer count reaches that layer.
    """

    name: str
    encoder_embed_dim: tuple[int, ...]
    encoder_layers: tuple[int, ...]
    encoder_ffn_dim: tuple[int, ...]
    encoder_heads: tuple[int, ...]
    decoder_embed_dim: tuple[int, ...]
    decoder_layers: tuple[int, ...]
    decoder_ffn_dim: tuple[int, ...]
    decoder_heads: tuple[int, ...]
    decoder_ende_heads: tuple[int, ...]
    decoder_ende_layers: tuple[int, ...] = (1, 2, 3)
    head_dim: int = 64
    """Width of one attention head: q/k/v projections are ``heads * head_dim`` wide."""

    def __post_init__(self) -> None:
        if max(self.decoder_ende_layers) > min(self.encoder_layers):
            raise ValueError(
                f"decoder_ende_layers {self.decoder_ende_layers} may attend to more encoder "
                f"layers than the smallest encoder has ({min(self.encoder_layers)})"
            )

    @property
    def max_encoder_layers(self) -> int:
        return max(self.encoder_layers)

    @property
    def max_decoder_layers(self) -> int:
        return max(self.decoder_layers)

    def build(self) -> SearchSpace:
        genes = [
            Gene("encoder.embed_dim", self.encoder_embed_dim),
            Gene("encoder.layers", self.encoder_layers),
        ]
        for i in range(self.max_encoder_layers):
            cond = _layer_condition("encoder.layers", i, self.encoder_layers)
            genes += [
                Gene(f"encoder.{i}.ffn_dim", self.encoder_ffn_dim, cond),
                Gene(f"encoder.{i}.heads", self.encoder_heads, cond),
            ]
        genes += [
            Gene("decoder.embed_dim", self.decoder_embed_dim),
            Gene("decoder.layers", self.decoder_layers),
        ]
        for i in range(self.max_decoder_layers):
            cond = _layer_condition("decoder.layers", i, self.decoder_layers)
            genes += [
                Gene(f"decoder.{i}.ffn_dim", self.decoder_ffn_dim, cond),
                Gene(f"decoder.{i}.heads", self.decoder_heads, cond),
                Gene(f"decoder.{i}.ende_heads", self.decoder_ende_heads, cond),
                Gene(f"decoder.{i}.ende_layers", self.decoder_ende_layers, cond),
            ]
        return SearchSpace(self.name, genes)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HATDesignSpace:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _layer_condition(count_gene: str, index: int, counts: tuple[int, ...]) -> Condition | None:
    """Layer ``index`` exists only while the count reaches ``index + 1``."""
    return Condition(count_gene, index + 1) if index + 1 > min(counts) else None


G2P_SPACE = HATDesignSpace(
    name="hat-g2p",
    encoder_embed_dim=(64, 96, 128),
    encoder_layers=(3, 4),
    encoder_ffn_dim=(128, 256, 512),
    encoder_heads=(2, 4),
    decoder_embed_dim=(64, 96, 128),
    decoder_layers=(1, 2, 3, 4),
    decoder_ffn_dim=(128, 256, 512),
    decoder_heads=(2, 4),
    decoder_ende_heads=(2, 4),
    decoder_ende_layers=(1, 2, 3),
    head_dim=32,
)
"""The built-in space: a small SuperTransformer for grapheme-to-phoneme translation."""

WMT_SPACE = HATDesignSpace(
    name="hat-wmt14-en-de",
    encoder_embed_dim=(512, 640),
    encoder_layers=(6,),
    encoder_ffn_dim=(1024, 2048, 3072),
    encoder_heads=(4, 8),
    decoder_embed_dim=(512, 640),
    decoder_layers=(1, 2, 3, 4, 5, 6),
    decoder_ffn_dim=(1024, 2048, 3072),
    decoder_heads=(4, 8),
    decoder_ende_heads=(4, 8),
    decoder_ende_layers=(1, 2, 3),
    head_dim=64,
)
"""HAT's WMT'14 En-De space (HAT's configs/wmt14.en-de/supertransformer/space0.yml)."""
