"""Quantization policies searched with the architecture (SimQ-NAS), their evaluation on
fake-quantized and real integer kernels, and their costs."""

from nas.quant._calibrate import CALIBRATION_SAMPLES, calibrate, calibration_batches
from nas.quant._fake import ACTIVATION_BITS, fake_quantize
from nas.quant._int8 import int8_kernels
from nas.quant._layers import STORED_BITS, QuantizedLayer, quantize_layers
from nas.quant._modules import module_bits
from nas.quant._policy import (
    BITS_PREFIX,
    QUANTIZE_MODES,
    JointSpace,
    check_mode,
    joint_space,
    split_config,
    uniform_policy,
)
from nas.quant._quantizers import fake_quantize_weight, quantize_weight
from nas.quant._size import size_bytes
from nas.quant._stored import quantization_document, read_quantization, with_quantized_layers

__all__ = [
    "ACTIVATION_BITS",
    "STORED_BITS",
    "QuantizedLayer",
    "BITS_PREFIX",
    "CALIBRATION_SAMPLES",
    "QUANTIZE_MODES",
    "calibrate",
    "calibration_batches",
    "check_mode",
    "fake_quantize",
    "fake_quantize_weight",
    "int8_kernels",
    "JointSpace",
    "joint_space",
    "module_bits",
    "read_quantization",
    "quantization_document",
    "quantize_layers",
    "quantize_weight",
    "size_bytes",
    "split_config",
    "uniform_policy",
    "with_quantized_layers",
]
