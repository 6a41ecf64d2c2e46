"""Momentum SGD: cost of the parameter update.

Model
-----
Per parameter element the fused update (weight decay folded into the gradient) is::

    v <- mu * v + (g + wd * w)        # 2 FMA = 4 FLOP
    w <- w - lr * v                   # 1 FMA = 2 FLOP

so it **reads 3 arrays** (w, g, v) and **writes 2** (v, w), all fp32: ``5 * param_bytes`` bytes and
:data:`SGD_FLOPS_PER_ELEMENT` = 6 FLOP per element (arithmetic intensity 0.3 FLOP/byte: memory-bound on
every device in the catalog, so ``update_s = 5 * param_bytes / mem_bw_Bps``).

Assumptions
-----------
- Every rank updates all parameters (replicated data parallelism); the gradients were allreduced before
  (the predictor counts that allreduce, not this module): no communication here.
- One kernel per parameterised layer record (approximation: frameworks launch one per tensor, or fuse
  many tensors into one multi-tensor kernel); it matters only when ``launch_overhead_s`` > 0.
- Optimizer state: the momentum buffer, one fp32 array the size of the parameters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .base import ComputeContext, LayerInfo, OptimizerCost, OptimizerModel

__all__ = ["SGD_READ_ARRAYS", "SGD_WRITE_ARRAYS", "SGD_FLOPS_PER_ELEMENT", "MomentumUpdate", "momentum_update",
           "SGDModel"]

#: parameter-sized fp32 arrays read by the momentum update (w, g, v)
SGD_READ_ARRAYS = 3
#: parameter-sized fp32 arrays written by the momentum update (v, w)
SGD_WRITE_ARRAYS = 2
#: FLOP per parameter element of the fused momentum update with weight decay (3 FMA)
SGD_FLOPS_PER_ELEMENT = 6


@dataclass(frozen=True)
class MomentumUpdate:
    """Totals of one momentum update over a layer list (SI units)."""

    elements: int
    param_bytes: int
    nbytes: float
    flops: float
    kernels: int
    time_s: float


def momentum_update(layers: Sequence[LayerInfo], ctx: ComputeContext,
                    flops_per_element: float = SGD_FLOPS_PER_ELEMENT) -> MomentumUpdate:
    """Cost of the momentum update of every parameter (``(3 reads + 2 writes) * param_bytes`` bytes)."""
    elements = sum(l.params for l in layers)
    param_bytes = sum(l.param_bytes for l in layers)
    kernels = sum(1 for l in layers if l.params > 0)
    nbytes = (SGD_READ_ARRAYS + SGD_WRITE_ARRAYS) * param_bytes
    flops = flops_per_element * elements
    return MomentumUpdate(elements, param_bytes, nbytes, flops, kernels,
                          ctx.kernel_s(flops, nbytes, kernels=kernels))


class SGDModel(OptimizerModel):
    """Momentum SGD (Goyal et al. 2017): the update only; options: ``launch_overhead_s``."""

    name = "sgd"
    description = "momentum SGD: memory-bound update streaming params, grads and momentum"

    def cost(self, layers: Sequence[LayerInfo], ctx: ComputeContext, options: Mapping[str, Any]) -> OptimizerCost:
        upd = momentum_update(layers, ctx)
        return OptimizerCost(
            optimizer=self.name,
            update_s=upd.time_s,
            memory_bytes=float(upd.param_bytes),
            details={
                "param_elements": float(upd.elements),
                "param_bytes": float(upd.param_bytes),
                "update_bytes": float(upd.nbytes),
                "update_flops": float(upd.flops),
                "update_kernels": float(upd.kernels),
                "momentum_bytes": float(upd.param_bytes),
            },
        )
