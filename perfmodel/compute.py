"""Compute cost of one training iteration on one device, per layer and pass.

Model (roofline with an empirical efficiency)::

    t(layer, pass) = max( FLOP(layer, pass) * b / (peak[precision] * eff(b)),
                          bytes(layer, pass) * b / memory_bw )

with ``b`` the per-device batch in images, FLOP and bytes per image from the workload table
(:mod:`perfmodel.workload`), ``peak`` and the efficiency curve ``eff(b) = eff_max * b / (b + b_half)``
from the device spec (:class:`hardware.specs.DeviceSpec`). Passes: forward, input-gradient and
weight-gradient (backward = the last two).

Assumptions, marked where they are made:

- One efficiency per device and precision, whatever the layer shape (approximation: small convolutions
  and the first/last layers run below the average; the curve is calibrated end to end, so the average
  is right where it was calibrated).
- In fp16 the activations move half the bytes; FLOP run at the fp16 peak (tensor cores on V100).
- Backward memory traffic is ``mem_bytes_bwd`` of the table (about twice forward).
- A calibrated device (``perfmodel calibrate``) may add a fixed cost per layer and pass,
  ``device.layer_overhead_s`` (the eager framework's operator dispatch on a CPU, independent of the batch),
  to every layer's forward and to its backward (counted in the input-gradient pass: one autograd node
  computes both gradients). It is 0 for catalog devices.

Every function is vectorised: ``batch`` may be an array of shape (C,), results are (C, L).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hardware.specs import DeviceSpec, EfficiencyCurve

__all__ = ["LayerTimes", "layer_times", "device_rates", "shared_layer_overhead_s"]

_ACT_BYTES_SCALE = {"fp32": 1.0, "fp16": 0.5, "bf16": 0.5}


@dataclass(frozen=True)
class LayerTimes:
    """Per-layer seconds for one iteration on one device, arrays of shape (C, L) in forward order."""

    fwd_s: np.ndarray
    bwd_input_s: np.ndarray
    bwd_weight_s: np.ndarray

    @property
    def bwd_s(self) -> np.ndarray:
        return self.bwd_input_s + self.bwd_weight_s

    @property
    def forward_total_s(self) -> np.ndarray:
        return self.fwd_s.sum(axis=1)

    @property
    def backward_total_s(self) -> np.ndarray:
        return self.bwd_s.sum(axis=1)


def device_rates(device: DeviceSpec, precision: str, batch, efficiency: EfficiencyCurve | None = None):
    """Achieved FLOP/s and memory bandwidth (B/s) of ``device`` at per-device ``batch`` (array (C,))."""
    curve = efficiency or device.efficiency_for(precision)
    b = np.atleast_1d(np.asarray(batch, dtype=float))
    flops = device.peak_flops_for(precision) * curve.at(b)
    return np.atleast_1d(flops), device.memory_bw_Bps


def shared_layer_overhead_s(device: DeviceSpec, share: float) -> float:
    """``overhead_s`` for :func:`layer_times` when ``share`` ranks share ``device`` (whose times are then
    multiplied by ``share``): the per-layer framework overhead is serial work of each rank, paid in full
    while a rank has a core to itself and time-sliced when ranks outnumber the device's cores, so a rank
    pays ``layer_overhead_s * max(1, share / cores)`` of wall time per layer and pass."""
    share = max(1.0, float(share))
    return device.layer_overhead_s * max(1.0, share / max(1, device.cores)) / share


def layer_times(table, device: DeviceSpec, batch, precision: str = "fp32",
                efficiency: EfficiencyCurve | None = None, overhead_s: float | None = None) -> LayerTimes:
    """Per-layer forward / input-gradient / weight-gradient seconds at per-device ``batch``.

    Parameters
    ----------
    table : perfmodel.workload.WorkloadTable
        Per-image FLOP and bytes per layer.
    device : DeviceSpec
        The device one rank drives.
    batch : int or array (C,)
        Per-device batch in images.
    precision : str
        ``"fp32"`` or ``"fp16"``.
    efficiency : EfficiencyCurve, optional
        Overrides the device's curve (calibration of the ``local`` system uses this).
    overhead_s : float, optional
        Fixed seconds per layer and pass; default ``device.layer_overhead_s`` (0 for catalog devices).
    """
    b = np.atleast_1d(np.asarray(batch, dtype=float))[:, None]
    flops_rate, mem_bw = device_rates(device, precision, b[:, 0], efficiency)
    flops_rate = flops_rate[:, None]
    scale = _ACT_BYTES_SCALE.get(precision, 1.0)
    with np.errstate(divide="ignore"):
        def cost(flops, nbytes):
            return np.maximum(flops[None, :] * b / flops_rate, nbytes[None, :] * scale * b / mem_bw)
        fwd = cost(table.flops_fwd, table.mem_bytes_fwd)
        # Backward traffic is split between the two passes in proportion to their FLOP (approximation).
        fb = table.flops_bwd_input + table.flops_bwd_weight
        share_in = np.divide(table.flops_bwd_input, fb, out=np.full_like(fb, 1.0), where=fb > 0)
        bwd_in = cost(table.flops_bwd_input, table.mem_bytes_bwd * share_in)
        bwd_w = cost(table.flops_bwd_weight, table.mem_bytes_bwd * (1.0 - share_in))
    overhead = float(getattr(device, "layer_overhead_s", 0.0) if overhead_s is None else overhead_s)
    if overhead:  # calibrated per-layer framework cost (see the module docstring)
        fwd = fwd + overhead
        bwd_in = bwd_in + overhead
    return LayerTimes(fwd_s=fwd, bwd_input_s=bwd_in, bwd_weight_s=bwd_w)
