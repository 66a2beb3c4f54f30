"""Hardware targets: latency of a subnet measured here or predicted for a device.

Registered targets (``nas.get_hardware(name)``):

- ``rpi4``, ``xeon``, ``titanxp``: HAT's three devices, predicted by a structured
  latency model fitted on HAT's 2000 measurements per device and carried over to our
  dense HAT model by an implementation calibration (see ``data/PROVENANCE.md``);
- ``local-cpu``: measured on this machine's CPU;
- ``local-cpu-model``: this CPU predicted by the structured per-layer model calibrated
  on its own measurements (``nas hw calibrate local-cpu-model``);
- ``pixel3``, ``gold6226``: NAS-Bench-201 cells' latencies as HW-NAS-Bench measured them
  (the ``nb201`` supernet only);
- ``cuda``: measured on this machine's CUDA GPU (CUDA events);
- ``remote:HOST:PORT``: measured on a device running ``nas agent`` (``_agent.py``,
  ``_remote.py``);
- a device of the user's own (``nas hw add NAME``, ``_user_targets.py``): a law fitted
  on their measurements, few-shot on the other devices of the space where it has them;
- ``ofa-lut:FOLDER``: OFA's published per-device latency lookup tables, for OFA's
  published MobileNetV3 space at width 1.0 or 1.2 (read from the tables; ``_ofa_lut.py``).

Also here: profilers with a stopping rule on the median's confidence interval
(``_profile.py``), memory (``_memory.py``) and each family's memory model from shapes
(``_memory_model.py``), ONNX Runtime timing (``_onnx.py``), the
latency datasets ``nas profile`` writes (``_latency_dataset.py``) and few-shot
adaptation of latency to a new device (:class:`FewShotLatency`).

Also here: the MAC and parameter counters (fvcore) and the analytic MAC model the
latency models use. Importing this package registers the targets and does no other
work: the device models are fitted on first use and cached.
"""

from nas.hardware._calibration import (
    ImplementationCalibration,
    LocalTiming,
    calibrate_implementation,
    implementation_factors,
    load_implementation_calibration,
    write_calibration,
)
from nas.hardware._counters import count_macs, count_params
from nas.hardware._cuda import CUDATarget
from nas.hardware._fewshot import FewShotLatency
from nas.hardware._hat_data import (
    HAT_DEVICES,
    HAT_QKV_DIM,
    HAT_WMT_VOCAB,
    HAT_WORKLOAD,
    HATMeasurements,
    load_hat_measurements,
    shape_from_hat_features,
)
from nas.hardware._hat_latency import DeviceFit, fit_hat_device
from nas.hardware._hat_targets import Extrapolation, HATLatencyTarget, extrapolation
from nas.hardware._latency_model import (
    LatencyBreakdown,
    LatencyCoefficients,
    fit_split_coefficients,
    fit_total_coefficients,
    heldout_split,
    regression_errors,
)
from nas.hardware._local import LocalCPUTarget
from nas.hardware._local_model import (
    LocalCalibration,
    LocalModelTarget,
    calibrate_local,
    load_calibration,
    roofline_ms,
    save_calibration,
)
from nas.hardware._macs import (
    DENSE_HAT_DECODING,
    FAIRSEQ_INCREMENTAL,
    DecoderLayerDims,
    DecodingScheme,
    EncoderLayerDims,
    MacCount,
    Seq2SeqShape,
    seq2seq_macs,
)
from nas.hardware._memory_model import (
    HATMemory,
    MatFormerMemory,
    NB201Memory,
    OFAMemory,
    SortedMLPMemory,
)
from nas.hardware._nb201_targets import NB201TableTarget
from nas.hardware._ofa_lut import OFAEncoding, OFALatencyTable, OFALookupTarget, OFAWidths
from nas.hardware._remote import RemoteTarget
from nas.hardware._user_targets import UserTarget, UserTargetRecord, fit_law, save_target

__all__ = [
    "HATMemory",
    "MatFormerMemory",
    "NB201Memory",
    "OFAMemory",
    "SortedMLPMemory",
    "CUDATarget",
    "DENSE_HAT_DECODING",
    "DecoderLayerDims",
    "DecodingScheme",
    "DeviceFit",
    "EncoderLayerDims",
    "Extrapolation",
    "FAIRSEQ_INCREMENTAL",
    "FewShotLatency",
    "HATLatencyTarget",
    "HATMeasurements",
    "HAT_DEVICES",
    "HAT_QKV_DIM",
    "HAT_WMT_VOCAB",
    "HAT_WORKLOAD",
    "ImplementationCalibration",
    "LatencyBreakdown",
    "LatencyCoefficients",
    "LocalCPUTarget",
    "LocalCalibration",
    "LocalModelTarget",
    "LocalTiming",
    "MacCount",
    "NB201TableTarget",
    "OFAEncoding",
    "OFALatencyTable",
    "OFALookupTarget",
    "OFAWidths",
    "RemoteTarget",
    "UserTarget",
    "UserTargetRecord",
    "Seq2SeqShape",
    "calibrate_implementation",
    "calibrate_local",
    "count_macs",
    "count_params",
    "extrapolation",
    "fit_law",
    "fit_hat_device",
    "fit_split_coefficients",
    "fit_total_coefficients",
    "heldout_split",
    "implementation_factors",
    "load_calibration",
    "load_hat_measurements",
    "load_implementation_calibration",
    "regression_errors",
    "roofline_ms",
    "save_calibration",
    "save_target",
    "seq2seq_macs",
    "shape_from_hat_features",
    "write_calibration",
]
