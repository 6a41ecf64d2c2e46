"""Shared pieces of the optimizer cost models: the result type, the device/communication context, the
layer records they read, option checking and the base class of the registry.

Conventions (every optimizer module follows them):

- All results are seconds **per training iteration** on one rank, SI units throughout (bytes, FLOP,
  bytes/s, FLOP/s). Work done every ``T`` iterations (K-FAC refreshes) is amortised: its cost is
  multiplied by the average number of refreshes per iteration.
- A kernel costs ``max(flops / (peak_flops * efficiency), nbytes / mem_bw_Bps) + launch_overhead_s``
  (roofline; ``launch_overhead_s`` is an option, default 0). The optimizer models count FLOP and bytes
  of each kernel explicitly; their module docstrings state the counts.
- Parameters, gradients and optimizer state are fp32 unless stated otherwise; the bytes of one
  parameter-sized array of a layer are the layer's ``param_bytes``.
- Communication goes through an injected ``comm(kind, nbytes, p) -> seconds`` with ``kind`` one of
  :data:`COLLECTIVE_KINDS`. ``nbytes`` is always the size of the **whole** buffer of the collective (for
  ``reduce_scatter`` the input of one rank, i.e. the sum of all parts; for ``allgather`` the output of
  one rank, i.e. the sum of all parts), the nccl-tests convention. With one rank no collective is called
  and communication costs 0.
- These models are pure functions of sizes; this package never imports torch.
"""
from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping, Sequence

from hardware.errors import ConfigError, SpecError

__all__ = [
    "SCHEDULE_OPTION_KEYS", "IMPLEMENTATION_OPTION_KEYS", "COMMON_OPTION_KEYS",
    "CommFn",
    "COLLECTIVE_KINDS",
    "OPTION_FIELD_PREFIX",
    "OptimizerCost",
    "ComputeContext",
    "LayerInfo",
    "parse_layers",
    "OptimizerModel",
    "check_int",
    "check_float",
    "check_bool",
    "check_choice",
    "FP32_BYTES",
]

#: signature of the injected collective model: ``comm(kind, nbytes, p) -> seconds``
CommFn = Callable[[str, float, int], float]

#: collective kinds an optimizer model may ask the injected ``comm`` for
COLLECTIVE_KINDS = ("allreduce", "reduce_scatter", "allgather", "broadcast")

#: options are reported as ``<prefix>.<key>`` in :class:`~hardware.errors.ConfigError`
OPTION_FIELD_PREFIX = "optimizer_options"

#: option keys of the learning-rate schedule (``executor.optim.build_schedule``): accepted in a run config's
#: ``optimizer_options`` and ignored by the cost models (the schedule does not change per-iteration cost)
SCHEDULE_OPTION_KEYS: frozenset[str] = frozenset({
    "lr_base", "lr_base_batch", "lr_peak", "lr_warmup_start", "lr_decay", "lr_milestones", "lr_gamma",
    "lr_power", "lr_end"})

#: hyper-parameters every real optimizer takes from ``optimizer_options`` (the executor's training loop reads
#: them: momentum default 0.9, weight decay 1e-4, 5e-5 for LARS); no effect on the modelled cost
COMMON_OPTION_KEYS: frozenset[str] = frozenset({"momentum", "weight_decay"})

#: option keys of the real optimizers only (``executor.optim``), per optimizer: numerical settings with no
#: effect on the modelled cost, accepted and ignored by the cost models
IMPLEMENTATION_OPTION_KEYS: Mapping[str, frozenset[str]] = MappingProxyType({
    "sgd": frozenset({"nesterov"}),
    "lars": frozenset({"eta"}),
    "kfac": frozenset({"nesterov", "damping", "stat_decay", "damping_split", "kl_clip", "bn_fisher",
                       "batch_averaged"}),
})

#: bytes of one fp32 element (parameters, gradients, momentum, inverses)
FP32_BYTES = 4


@dataclass(frozen=True)
class OptimizerCost:
    """Per-iteration cost of one optimizer step on one rank (seconds, SI).

    Attributes
    ----------
    optimizer : str
        Registry name of the optimizer (``"sgd"``, ``"lars"``, ``"kfac"``).
    update_s : float
        The parameter update itself (memory-bound streaming of parameters, gradients and momentum).
    extra_compute_s : float
        Computation beyond the update: LARS norms; K-FAC factor computation (amortised over the refresh
        interval), preconditioning (every step) and the batch-norm diagonal Fisher.
    extra_comm_s : float
        Communication beyond the gradient allreduce (which the predictor counts): K-FAC factor
        reduce-scatter (amortised) and all-gather of the preconditioned gradients (every step).
    inversion_s : float
        K-FAC inversion / eigendecomposition, amortised over the refresh interval and distributed over
        the ranks (the slowest rank counts).
    memory_bytes : float
        Optimizer state per rank (momentum, LARS norms, K-FAC factors and inverses), bytes. Parameters
        and gradients themselves are not included (the workload accounts for them).
    details : Mapping[str, float]
        Named intermediate quantities for reports (bytes, FLOP, seconds, counts), read-only.
    """

    optimizer: str
    update_s: float
    extra_compute_s: float = 0.0
    extra_comm_s: float = 0.0
    inversion_s: float = 0.0
    memory_bytes: float = 0.0
    details: Mapping[str, float] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    @property
    def total_s(self) -> float:
        """``update_s + extra_compute_s + extra_comm_s + inversion_s`` (no overlap assumed)."""
        return self.update_s + self.extra_compute_s + self.extra_comm_s + self.inversion_s

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (used by ``perfmodel.cli.output.print_json``)."""
        return {
            "optimizer": self.optimizer,
            "update_s": self.update_s,
            "extra_compute_s": self.extra_compute_s,
            "extra_comm_s": self.extra_comm_s,
            "inversion_s": self.inversion_s,
            "total_s": self.total_s,
            "memory_bytes": self.memory_bytes,
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class ComputeContext:
    """Device rates, data-parallel geometry and the collective model one optimizer step runs against.

    Attributes
    ----------
    per_device_batch : int
        Images (rows) per rank and iteration.
    ranks : int
        Data-parallel ranks ``p``.
    peak_flops : float
        Peak FLOP/s of one device in the working precision.
    efficiency : float
        Fraction of peak that dense kernels reach, in (0, 1].
    mem_bw_Bps : float
        Device memory bandwidth, bytes/s.
    comm : CommFn
        ``comm(kind, nbytes, p) -> seconds``.
    launch_overhead_s : float
        Fixed cost added to every kernel (0 by default; an option of every optimizer).
    """

    per_device_batch: int
    ranks: int
    peak_flops: float
    efficiency: float
    mem_bw_Bps: float
    comm: CommFn
    launch_overhead_s: float = 0.0

    def kernel_s(self, flops: float, nbytes: float, *, peak_flops: float | None = None,
                 efficiency: float | None = None, kernels: int = 1) -> float:
        """Roofline time of ``kernels`` kernels doing ``flops`` FLOP and moving ``nbytes`` bytes in total."""
        peak = self.peak_flops if peak_flops is None else peak_flops
        eff = self.efficiency if efficiency is None else efficiency
        return max(flops / (peak * eff), nbytes / self.mem_bw_Bps) + kernels * self.launch_overhead_s

    def collective_s(self, kind: str, nbytes: float) -> float:
        """Seconds of one collective of ``nbytes`` (whole buffer) over all ranks; 0 with one rank or 0 bytes."""
        if kind not in COLLECTIVE_KINDS:  # programming error inside this package, not user input
            raise ValueError(f"unknown collective kind {kind!r}")
        if self.ranks <= 1 or nbytes <= 0:
            return 0.0
        t = float(self.comm(kind, float(nbytes), self.ranks))
        if not math.isfinite(t) or t < 0:
            raise ConfigError("comm", kind, t, "collective model returned a negative or non-finite time")
        return t


@dataclass(frozen=True)
class LayerInfo:
    """One row of the workload's layer table, as the optimizer models read it.

    ``shape`` keeps the workload JSON's layout: Conv2d ``{"in_channels", "out_channels", "kernel_size":
    [kh, kw], "groups", "bias", "in_hw": [H, W], "out_hw": [Ho, Wo]}``; Linear ``{"in_features",
    "out_features", "bias"}``; BatchNorm2d ``{"num_features", "hw": [H, W]}``.
    """

    index: int
    name: str
    type: str
    params: int
    param_bytes: int
    shape: Mapping[str, Any]

    @property
    def bytes_per_param(self) -> float:
        """Bytes of one parameter element (4 for fp32); 4 when the layer has no parameters."""
        return self.param_bytes / self.params if self.params else float(FP32_BYTES)


def _to_mapping(item: Any) -> Mapping[str, Any] | None:
    if isinstance(item, Mapping):
        return item
    if hasattr(item, "to_dict") and callable(item.to_dict):
        out = item.to_dict()
        return out if isinstance(out, Mapping) else None
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    return None


def parse_layers(layers: Any, source: str = "workload") -> tuple[LayerInfo, ...]:
    """Validate a sequence of layer records and return them as :class:`LayerInfo`.

    Parameters
    ----------
    layers : Sequence[Mapping] or object with ``.layers``
        Records with at least ``name``, ``type``, ``params`` (int) and ``param_bytes`` (int, fp32 bytes);
        ``shape`` (mapping) is needed by K-FAC for Conv2d, Linear and BatchNorm2d. Items may also be
        objects with ``to_dict()`` or dataclasses. An object with a ``layers`` attribute (a workload
        table) is unwrapped.
    source : str
        Named in the :class:`~hardware.errors.SpecError` raised on a malformed record.
    """
    if not isinstance(layers, Sequence) and hasattr(layers, "layers"):
        layers = layers.layers
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise SpecError(source, "layers", type(layers).__name__, "must be a sequence of layer records")
    out = []
    for i, item in enumerate(layers):
        rec = _to_mapping(item)
        if rec is None:
            raise SpecError(source, f"layers[{i}]", type(item).__name__, "must be a mapping (layer record)")
        for key in ("name", "type", "params", "param_bytes"):
            if key not in rec:
                raise SpecError(source, f"layers[{i}].{key}", None, "missing")
        for key in ("params", "param_bytes"):
            v = rec[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or v != int(v):
                raise SpecError(source, f"layers[{i}].{key}", v, "must be an integer >= 0")
        if (rec["params"] == 0) != (rec["param_bytes"] == 0):
            raise SpecError(source, f"layers[{i}].param_bytes", rec["param_bytes"],
                            f"inconsistent with params = {rec['params']}")
        shape = rec.get("shape") or {}
        if not isinstance(shape, Mapping):
            raise SpecError(source, f"layers[{i}].shape", shape, "must be a mapping")
        out.append(LayerInfo(index=i, name=str(rec["name"]), type=str(rec["type"]), params=int(rec["params"]),
                             param_bytes=int(rec["param_bytes"]), shape=MappingProxyType(dict(shape))))
    return tuple(out)


# ----------------------------------------------------------------------------------------------------------
# option checks: every one raises ConfigError(source, "optimizer_options.<key>", value, reason)

def _field(key: str) -> str:
    return f"{OPTION_FIELD_PREFIX}.{key}"


def check_int(source: str, key: str, value: Any, minimum: int) -> int:
    """Return ``value`` as int, or raise ConfigError unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value) or value < minimum:
        raise ConfigError(source, _field(key), value, f"must be an integer >= {minimum}")
    return int(value)


def check_float(source: str, key: str, value: Any, *, minimum: float = 0.0, inclusive_min: bool = True,
                maximum: float | None = None) -> float:
    """Return ``value`` as float, or raise ConfigError unless it is finite and within the stated range."""
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if not bad:
        bad = value < minimum or (not inclusive_min and value == minimum) \
            or (maximum is not None and value > maximum)
    if bad:
        lo = f"{'>=' if inclusive_min else '>'} {minimum:g}"
        hi = f" and <= {maximum:g}" if maximum is not None else ""
        raise ConfigError(source, _field(key), value, f"must be a number {lo}{hi}")
    return float(value)


def check_bool(source: str, key: str, value: Any) -> bool:
    """Return ``value`` or raise ConfigError unless it is a bool."""
    if not isinstance(value, bool):
        raise ConfigError(source, _field(key), value, "must be true or false")
    return value


def check_choice(source: str, key: str, value: Any, choices: Sequence[Any]) -> Any:
    """Return ``value`` or raise ConfigError unless it is one of ``choices``."""
    if isinstance(value, bool) or value not in choices:
        raise ConfigError(source, _field(key), value, f"must be one of {', '.join(map(repr, choices))}")
    return value


class OptimizerModel(ABC):
    """Base class of the optimizer cost models in :data:`perfmodel.optimizers.OPTIMIZERS`.

    Subclasses set :attr:`name`, :attr:`description` and :attr:`DEFAULT_OPTIONS` (every accepted option
    key with its default), extend :meth:`check_option` for their own keys and implement :meth:`cost`.
    Every model accepts ``launch_overhead_s`` (float >= 0, default 0: seconds added per kernel launch).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    DEFAULT_OPTIONS: ClassVar[Mapping[str, Any]] = MappingProxyType({"launch_overhead_s": 0.0})

    def resolve_options(self, options: Mapping[str, Any] | None, source: str = "--optimizer") -> dict[str, Any]:
        """Merge ``options`` over the defaults, rejecting unknown keys and bad values (ConfigError)."""
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise ConfigError(source, OPTION_FIELD_PREFIX, options, "must be a table of option = value")
        out = dict(self.DEFAULT_OPTIONS)
        ignored = SCHEDULE_OPTION_KEYS | COMMON_OPTION_KEYS | IMPLEMENTATION_OPTION_KEYS.get(self.name, frozenset())
        for key, value in options.items():
            if key in ignored and key not in self.DEFAULT_OPTIONS:
                continue  # validated by the executor; no effect on cost
            if key not in self.DEFAULT_OPTIONS:
                known = ", ".join(sorted(self.DEFAULT_OPTIONS))
                raise ConfigError(source, _field(str(key)), value,
                                  f"unknown option for optimizer '{self.name}' (known: {known})")
            out[key] = self.check_option(key, value, source)
        return out

    def check_option(self, key: str, value: Any, source: str) -> Any:
        """Validate one option value and return it normalised; subclasses handle their own keys first."""
        if key == "launch_overhead_s":
            return check_float(source, key, value, minimum=0.0)
        return value  # pragma: no cover - every key in DEFAULT_OPTIONS is checked by a subclass

    @abstractmethod
    def cost(self, layers: Sequence[LayerInfo], ctx: ComputeContext, options: Mapping[str, Any]) -> OptimizerCost:
        """Per-iteration cost on one rank. ``options`` are already resolved (all keys present)."""
