"""Checks of an export's two files before its model is allocated: nothing in them is
trusted (the agent receives both from the network).

:func:`check_sizes` refuses integers in ``subnet_config`` larger than the number of
values the weights file holds; :func:`build_on_meta` builds the model on torch's
``meta`` device (no memory), cut off once it registers far more modules and tensors
than the file holds, so a huge depth cannot hang it, and with every tensor forced onto
``meta`` even where a builder names a device; :func:`check_fits_weights` compares the
state dict, name by name, shape and dtype, with the file's header (read without loading
any tensor, :func:`read_weights_header`) and bounds the buffers the file does not hold.
After these checks the real build needs little more memory than the file's size.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)
from torch.overrides import TorchFunctionMode

from nas._messages import one_line

SIZE_FLOOR = 2**16
"""Integers in ``subnet_config`` up to this are always accepted; larger ones only up to
the number of values the weights file holds."""
REGISTRATION_MARGIN = 16
"""A model's build may register this many modules and tensors per tensor in its file
(containers, parameter-free layers and non-persistent buffers are not in the file)..."""
REGISTRATION_SLACK = 1024
"""... plus this many, before the meta build is cut off (the largest shipped ratio,
NAS-Bench-201 with parameter-free cells, is about 5 per tensor)."""
EXTRA_BUFFER_BYTES = 64 * 2**20
"""Bytes of non-persistent buffers (causal masks and the like, rebuilt rather than
stored) a model may hold beyond its weights file's size."""

_DTYPE_NAMES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
"""safetensors' names of the torch dtypes a model holds."""

Header = dict[str, tuple[str, tuple[int, ...]]]
"""A weights file's tensors: name -> (safetensors dtype name, shape)."""


def read_weights_header(path: Path) -> Header:
    """Every tensor's dtype and shape in a safetensors file, read from its header only
    (nothing is loaded; safetensors checks that the header covers the file exactly)."""
    try:
        with safe_open(str(path), framework="pt") as weights:
            return {key: (weights.get_slice(key).get_dtype(),
                          tuple(weights.get_slice(key).get_shape())) for key in weights.keys()}
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from None


def check_sizes(config: dict[str, Any], header: Header, *, config_path: Path,
                weights: Path) -> None:
    """Refuse an integer in ``config`` larger than the number of values in the weights
    (and :data:`SIZE_FLOOR`): no size of the model they hold can be that large, and a
    builder may loop over a size before it registers anything (a list of the layers)."""
    values = sum(math.prod(shape) for _, shape in header.values())
    limit = max(SIZE_FLOOR, values)
    for key, value in _integers(config):
        if abs(value) > limit:
            raise ValueError(f"{config_path}: subnet_config {key} is {value}, over the "
                             f"limit of {limit} ({weights.name} holds {values} values); it "
                             "does not describe this export")


def _integers(document: Any) -> Iterator[tuple[str, int]]:
    """Every integer in a JSON document, with its place (``layers[2].ffn_dim``); a loop,
    not recursion, so that a deeply nested document cannot exhaust the stack."""
    pending: list[tuple[str, Any]] = [("", document)]
    while pending:
        key, value = pending.pop()
        if isinstance(value, dict):
            pending.extend((f"{key}.{name}" if key else str(name), item)
                           for name, item in value.items())
        elif isinstance(value, list):
            pending.extend((f"{key}[{index}]", item) for index, item in enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            yield key, value


def check_fits_weights(planned: nn.Module, header: Header, *, config_path: Path,
                       weights: Path) -> None:
    """Refuse a (meta) model whose state dict differs from the weights file's tensors
    (names, shapes, dtypes) or whose other buffers would need far more than the file.

    Tied tensors appear under several names in the state dict and once in the file
    (``save_model`` keeps one name), so each group of names needs one in the file.
    """
    state = planned.state_dict(keep_vars=True)
    groups: dict[int, list[str]] = {}
    for key, tensor in state.items():
        groups.setdefault(id(tensor), []).append(key)
    missing = sorted(names[0] for names in groups.values()
                     if not any(name in header for name in names))
    unexpected = sorted(set(header) - set(state))
    if missing or unexpected:
        raise ValueError(f"{weights} does not match {config_path.name}: missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]}")
    for key, (dtype, shape) in header.items():
        tensor = state[key]
        built = (_DTYPE_NAMES.get(tensor.dtype, str(tensor.dtype)), tuple(tensor.shape))
        if built != (dtype, shape):
            raise ValueError(f"{weights} does not match {config_path.name}: {key!r} is {dtype} "
                             f"{list(shape)} in the file, but subnet_config builds "
                             f"{built[0]} {list(built[1])}")
    stored = {id(tensor) for tensor in state.values()}
    extra = sum(b.numel() * b.element_size() for b in planned.buffers() if id(b) not in stored)
    limit = weights.stat().st_size + EXTRA_BUFFER_BYTES
    if extra > limit:
        raise ValueError(f"{config_path}: subnet_config builds {extra} bytes of buffers "
                         f"that {weights.name} does not hold, over the limit of {limit} "
                         f"bytes (the file's size plus {EXTRA_BUFFER_BYTES // 2**20} MiB)")


def build_checked(builder: Any, config: dict[str, Any], path: Path) -> nn.Module:
    """``builder(**config)``, any failure as one line naming ``path``: the config is
    untrusted input, so whatever the builder raises on it is the config's fault."""
    try:
        return builder(**config)
    except _OverBound as err:
        raise ValueError(f"{path}: {err}") from None
    except Exception as err:  # any failure: see the docstring
        raise ValueError(f"{path}: subnet_config does not build a model: "
                         f"{one_line(err)[:300]}") from None


def build_on_meta(builder: Any, config: dict[str, Any], *, config_path: Path, weights: Path,
                  tensors: int) -> nn.Module:
    """The model on the ``meta`` device: shapes and dtypes without memory, cut off once
    it registers far more modules and tensors than a file of ``tensors`` tensors needs."""
    limit = REGISTRATION_SLACK + REGISTRATION_MARGIN * tensors
    bound = _RegistrationBound(
        limit, f"subnet_config builds more than {limit} modules and tensors, far more than "
               f"the {tensors} tensors in {weights.name} need; it does not describe this "
               "export")
    with bound, torch.device("meta"), _AllOnMeta():
        planned = build_checked(builder, config, config_path)
    if bound.exceeded:  # a builder that caught _OverBound and carried on
        raise ValueError(f"{config_path}: {bound.message}")
    return planned


class _OverBound(Exception):
    """Raised inside a builder by :class:`_RegistrationBound`; :func:`build_checked`
    reports it."""


class _RegistrationBound:
    """Count the modules, parameters and buffers this thread registers and raise
    :class:`_OverBound` from the registration after the ``limit``-th.

    torch's global registration hooks do the counting. They are installed on first use
    and left in place, idle outside a bound and on other threads: torch iterates over
    them in every registration, so adding or removing one while another thread builds a
    module would break that build.
    """

    _active = threading.local()
    _install_lock = threading.Lock()
    _installed = False

    def __init__(self, limit: int, message: str) -> None:
        self.limit, self.message = limit, message
        self.count = 0
        self._outer: _RegistrationBound | None = None

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit

    @staticmethod
    def _registered(module: nn.Module, name: str, value: object) -> None:
        bound = getattr(_RegistrationBound._active, "bound", None)
        if bound is not None:
            bound.count += 1
            if bound.exceeded:
                raise _OverBound(bound.message)

    @classmethod
    def _install(cls) -> None:
        with cls._install_lock:
            if not cls._installed:
                for register in (register_module_module_registration_hook,
                                 register_module_parameter_registration_hook,
                                 register_module_buffer_registration_hook):
                    register(cls._registered)
                cls._installed = True

    def __enter__(self) -> _RegistrationBound:
        self._install()
        self._outer = getattr(self._active, "bound", None)
        self._active.bound = self
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._active.bound = self._outer


class _AllOnMeta(TorchFunctionMode):
    """Put every tensor a torch function creates on ``meta``, even where the caller
    names a device: ``torch.device("meta")`` only fills in a missing one, and a builder
    may compute a table on the CPU first (HAT's sinusoidal positions)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = dict(kwargs or {})
        if "device" in kwargs:
            kwargs["device"] = torch.device("meta")
        return func(*args, **kwargs)
