"""Optimizer cost models: momentum SGD, LARS and K-FAC, one module each, in the :data:`OPTIMIZERS` registry.

Entry point::

    optimizer_cost(name, layers, *, per_device_batch, ranks, peak_flops, efficiency, mem_bw_Bps, comm,
                   options=None, source="--optimizer") -> OptimizerCost

``layers`` is the workload's layer table (``[{"name", "type", "params", "param_bytes", "shape"}, ...]``, the
``layers`` list of ``perfmodel/data/workloads/<model>.json``, or an object with ``.layers``). ``comm(kind,
nbytes, p) -> seconds`` is the collective model (kinds ``allreduce``, ``reduce_scatter``, ``allgather``,
``broadcast``; ``nbytes`` the whole buffer). Conventions and units: :mod:`perfmodel.optimizers.base`;
each model's assumptions: its module docstring.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from hardware.errors import ConfigError

from .base import (COLLECTIVE_KINDS, OPTION_FIELD_PREFIX, CommFn, ComputeContext, LayerInfo, OptimizerCost,
                   OptimizerModel, parse_layers)
from .kfac import KFACModel
from .lars import LARSModel
from .sgd import SGDModel

__all__ = [
    "OPTIMIZERS",
    "get_optimizer",
    "optimizer_cost",
    "OptimizerCost",
    "OptimizerModel",
    "ComputeContext",
    "LayerInfo",
    "CommFn",
    "COLLECTIVE_KINDS",
    "OPTION_FIELD_PREFIX",
    "parse_layers",
    "SGDModel",
    "LARSModel",
    "KFACModel",
]

#: registry: name -> model instance
OPTIMIZERS: dict[str, OptimizerModel] = {m.name: m for m in (SGDModel(), LARSModel(), KFACModel())}


def get_optimizer(name: str, source: str = "--optimizer") -> OptimizerModel:
    """Registry lookup (case-insensitive); unknown names raise ConfigError(source, "optimizer", name, ...)."""
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in OPTIMIZERS:
        raise ConfigError(source, "optimizer", name, f"unknown optimizer (known: {', '.join(sorted(OPTIMIZERS))})")
    return OPTIMIZERS[key]


def _positive(source: str, field: str, value: Any, *, integer: bool = False, at_most: float | None = None) -> None:
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0
    if not bad and integer:
        bad = value != int(value)
    if not bad and at_most is not None:
        bad = value > at_most
    if bad:
        what = "an integer >= 1" if integer else "a number > 0"
        raise ConfigError(source, field, value, f"must be {what}" + (f" and <= {at_most:g}" if at_most else ""))


def optimizer_cost(name: str, layers: Any, *, per_device_batch: int, ranks: int, peak_flops: float,
                   efficiency: float, mem_bw_Bps: float, comm: CommFn, options: Mapping[str, Any] | None = None,
                   source: str = "--optimizer") -> OptimizerCost:
    """Per-iteration cost of optimizer ``name`` on one of ``ranks`` data-parallel ranks.

    Parameters
    ----------
    name : str
        ``"sgd"``, ``"lars"`` or ``"kfac"`` (case-insensitive).
    layers : Sequence[Mapping] or object with ``.layers``
        Workload layer records (see :func:`perfmodel.optimizers.base.parse_layers`).
    per_device_batch : int
        Images per rank and iteration (>= 1).
    ranks : int
        Data-parallel ranks (>= 1).
    peak_flops : float
        Device peak FLOP/s (> 0).
    efficiency : float
        Fraction of peak of dense kernels, in (0, 1].
    mem_bw_Bps : float
        Device memory bandwidth, bytes/s (> 0).
    comm : callable
        ``comm(kind, nbytes, p) -> seconds``.
    options : Mapping, optional
        Optimizer options; unknown keys and bad values raise ConfigError with field
        ``optimizer_options.<key>``. Every optimizer accepts ``launch_overhead_s``.
    source : str
        Named in every ConfigError (the flag or the config file path).

    Returns
    -------
    OptimizerCost
    """
    model = get_optimizer(name, source)
    _positive(source, "per_device_batch", per_device_batch, integer=True)
    _positive(source, "ranks", ranks, integer=True)
    _positive(source, "peak_flops", peak_flops)
    _positive(source, "efficiency", efficiency, at_most=1.0)
    _positive(source, "mem_bw_Bps", mem_bw_Bps)
    if not callable(comm):
        raise ConfigError(source, "comm", type(comm).__name__, "must be callable comm(kind, nbytes, p) -> seconds")
    opts = model.resolve_options(options, source)
    recs = parse_layers(layers)
    ctx = ComputeContext(per_device_batch=int(per_device_batch), ranks=int(ranks), peak_flops=float(peak_flops),
                         efficiency=float(efficiency), mem_bw_Bps=float(mem_bw_Bps), comm=comm,
                         launch_overhead_s=opts["launch_overhead_s"])
    return model.cost(recs, ctx, opts)
