"""Quantization policies searched with the architecture (SimQ-NAS), their evaluation on
fake-quantized and real integer kernels, and their costs."""

from nas.quant._calibrate import CALIBRATION_SAMPLES, calibrate, calibration_batches
from nas.quant._fake import ACTIVATION_BITS, fake_quantize
from nas.quant._int8 import int8_kernels
from nas.quant._modules import module_bits
from nas.quant._policy import (
    BITS_PREFIX,
    QUANTIZE_MODES,
    check_mode,
    joint_space,
    split_config,
    uniform_policy,
)
from nas.quant._quantizers import fake_quantize_weight, quantize_weight
from nas.quant._size import size_bytes

__all__ = [
    "ACTIVATION_BITS",
    "BITS_PREFIX",
    "CALIBRATION_SAMPLES",
    "QUANTIZE_MODES",
    "calibrate",
    "calibration_batches",
    "check_mode",
    "fake_quantize",
    "fake_quantize_weight",
    "int8_kernels",
    "joint_space",
    "module_bits",
    "quantize_weight",
    "size_bytes",
    "split_config",
    "uniform_policy",
]
