"""The learned correction of the structured latency model, applied only where it was fitted."""

from __future__ import annotations

import numpy as np
import pytest

from nas.hardware import HAT_DEVICES, fit_hat_device, load_implementation_calibration
from nas.hardware._hat_data import shape_from_hat_features
from nas.hardware._macs import Seq2SeqShape
from nas.hardware._shape_correction import ShapeCorrection, shape_features


def hat_shape(enc_dim: float, dec_dim: float, dec_layers: int, ffn: float) -> Seq2SeqShape:
    return shape_from_hat_features({
        "encoder_embed_dim": enc_dim, "encoder_layer_num": 6, "encoder_ffn_embed_dim_avg": ffn,
        "encoder_self_attention_heads_avg": 4, "decoder_embed_dim": dec_dim,
        "decoder_layer_num": dec_layers, "decoder_ffn_embed_dim_avg": ffn,
        "decoder_self_attention_heads_avg": 4, "decoder_ende_attention_heads_avg": 4,
        "decoder_arbitrary_ende_attn_avg": 1,
    })


def grid() -> list[Seq2SeqShape]:
    return [hat_shape(e, d, n, f) for e in (512, 640) for d in (512, 640)
            for n in (1, 2, 3, 4, 5, 6) for f in (1024, 2048, 3072)]


def test_features_of_a_shape_by_hand() -> None:
    np.testing.assert_array_equal(shape_features(hat_shape(512, 640, 3, 2048)),
                                  [512, 6, 2048, 640, 3, 2048, 1])


def test_a_quadratic_misfit_is_learned_inside_the_box() -> None:
    shapes = grid()
    # the "measured" latency is the structured figure times exp(0.01 * layers^2 - 0.05)
    truth = [np.exp(0.01 * s.decoder_layers ** 2 - 0.05) for s in shapes]
    structured = np.linspace(50.0, 150.0, len(shapes))
    correction = ShapeCorrection.fit(shapes, structured * truth, structured)
    factors = [correction.factor(s) for s in shapes]
    np.testing.assert_allclose(factors, truth, rtol=2e-3)


def test_outside_the_box_the_correction_is_one() -> None:
    shapes = grid()
    correction = ShapeCorrection.fit(shapes, np.full(len(shapes), 120.0),
                                     np.full(len(shapes), 100.0))  # 20% misfit everywhere
    assert correction.factor(shapes[0]) == pytest.approx(1.2)
    narrow = hat_shape(256, 512, 3, 2048)  # encoder narrower than any fitted shape
    assert not correction.inside(narrow) and correction.factor(narrow) == 1.0


@pytest.mark.parametrize("device", sorted(HAT_DEVICES))
def test_the_g2p_subnets_get_the_structured_model_alone(device: str) -> None:
    """The shipped G2P space lies far below HAT's measured shapes: the main job's
    predictions never see the correction."""
    g2p = load_implementation_calibration().g2p
    correction = fit_hat_device(device).correction
    for end in ("smallest", "largest"):
        assert correction.factor(Seq2SeqShape.from_dict(g2p[end]["shape"])) == 1.0


@pytest.mark.parametrize("device", sorted(HAT_DEVICES))
def test_the_correction_lowers_the_held_out_error(device: str) -> None:
    fit = fit_hat_device(device)
    assert fit.heldout["mape"] < fit.heldout_structured_mape
