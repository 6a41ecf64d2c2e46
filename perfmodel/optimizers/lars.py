"""LARS, layer-wise adaptive rate scaling (You, Gitman, Ginsburg 2017; You et al. 2018): cost model.

Model
-----
For every adapted layer ``l`` LARS computes two norms and a trust ratio, then a momentum update with
the layer's local learning rate::

    nw = ||w_l||, ng = ||g_l||                         # 2 reductions: read w and g (2 arrays),
                                                        #   2 FLOP per element per norm (mul + add)
    lr_l = lr * eta * nw / (ng + wd * nw)              # scalar, LARS_SCALAR_FLOPS_PER_LAYER FLOP
    v <- mu * v + lr_l * (g + wd * w);  w <- w - v      # like SGD: read 3 arrays, write 2

- ``extra_compute_s`` (the norms) = roofline of :data:`LARS_NORM_FLOPS_PER_ELEMENT` = 4 FLOP and
  :data:`LARS_NORM_READ_ARRAYS` = 2 parameter-sized fp32 reads per adapted element, i.e. memory-bound:
  ``2 * adapted_param_bytes / mem_bw_Bps`` (plus 2 kernel launches per adapted layer when
  ``launch_overhead_s`` > 0).
- ``update_s``: the same 5-array stream as momentum SGD (:mod:`perfmodel.optimizers.sgd`) with
  :data:`LARS_UPDATE_FLOPS_PER_ELEMENT` = 7 FLOP (one more multiply by ``lr_l``), still memory-bound.
- No communication: the norms are local because every rank holds the allreduced gradient (the
  predictor counts that allreduce) and the same weights.
- Optimizer state: the fp32 momentum buffer plus three fp32 scalars per adapted layer (two norms and the
  local rate).

Options
-------
``exclude_bn_bias`` (bool, default False): adapt only the weights of non-normalisation layers (many
implementations skip batch-norm parameters and biases; You et al. 2017 adapt every layer). The skipped
elements still get the plain momentum update. ``launch_overhead_s`` (float >= 0, default 0).
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping, Sequence

from .base import ComputeContext, LayerInfo, OptimizerCost, OptimizerModel, FP32_BYTES, check_bool
from .sgd import momentum_update

__all__ = ["LARS_NORM_READ_ARRAYS", "LARS_NORM_FLOPS_PER_ELEMENT", "LARS_SCALAR_FLOPS_PER_LAYER",
           "LARS_UPDATE_FLOPS_PER_ELEMENT", "LARS_SCALARS_PER_LAYER", "bias_elements", "LARSModel"]

#: parameter-sized arrays read by the two norms (w and g)
LARS_NORM_READ_ARRAYS = 2
#: FLOP per element of the two squared-norm reductions (mul + add each)
LARS_NORM_FLOPS_PER_ELEMENT = 4
#: FLOP per layer for the trust ratio (2 sqrt, 1 div, 1 mul-add, scaling; counted as 8)
LARS_SCALAR_FLOPS_PER_LAYER = 8
#: FLOP per element of the LARS momentum update (SGD's 6 + the local-rate multiply)
LARS_UPDATE_FLOPS_PER_ELEMENT = 7
#: fp32 scalars of state per adapted layer (||w||, ||g||, local rate)
LARS_SCALARS_PER_LAYER = 3


def _is_norm_layer(layer: LayerInfo) -> bool:
    return "norm" in layer.type.lower()


def bias_elements(layer: LayerInfo) -> int:
    """Bias elements of a Conv2d/Linear record (0 without bias or for other types)."""
    s = layer.shape
    if not s.get("bias", False):
        return 0
    if layer.type == "Conv2d":
        return int(s.get("out_channels", 0))
    if layer.type == "Linear":
        return int(s.get("out_features", 0))
    return 0


class LARSModel(OptimizerModel):
    """LARS on top of momentum SGD; options: ``exclude_bn_bias``, ``launch_overhead_s``."""

    name = "lars"
    description = "LARS: per-layer weight and gradient norms (local) + momentum update"
    DEFAULT_OPTIONS = MappingProxyType({"launch_overhead_s": 0.0, "exclude_bn_bias": False})

    def check_option(self, key: str, value: Any, source: str) -> Any:
        if key == "exclude_bn_bias":
            return check_bool(source, key, value)
        return super().check_option(key, value, source)

    def cost(self, layers: Sequence[LayerInfo], ctx: ComputeContext, options: Mapping[str, Any]) -> OptimizerCost:
        upd = momentum_update(layers, ctx, flops_per_element=LARS_UPDATE_FLOPS_PER_ELEMENT)
        exclude = options["exclude_bn_bias"]
        adapted_elements = 0
        adapted_bytes = 0.0
        adapted_layers = 0
        for l in layers:
            if l.params == 0 or (exclude and _is_norm_layer(l)):
                continue
            n = l.params - (bias_elements(l) if exclude else 0)
            if n <= 0:
                continue
            adapted_layers += 1
            adapted_elements += n
            adapted_bytes += n * l.bytes_per_param
        norm_bytes = LARS_NORM_READ_ARRAYS * adapted_bytes
        norm_flops = LARS_NORM_FLOPS_PER_ELEMENT * adapted_elements + LARS_SCALAR_FLOPS_PER_LAYER * adapted_layers
        norm_s = ctx.kernel_s(norm_flops, norm_bytes, kernels=LARS_NORM_READ_ARRAYS * adapted_layers)
        scalar_bytes = LARS_SCALARS_PER_LAYER * FP32_BYTES * adapted_layers
        return OptimizerCost(
            optimizer=self.name,
            update_s=upd.time_s,
            extra_compute_s=norm_s,
            memory_bytes=float(upd.param_bytes + scalar_bytes),
            details={
                "param_elements": float(upd.elements),
                "param_bytes": float(upd.param_bytes),
                "update_bytes": float(upd.nbytes),
                "update_flops": float(upd.flops),
                "adapted_layers": float(adapted_layers),
                "adapted_elements": float(adapted_elements),
                "norm_bytes": float(norm_bytes),
                "norm_flops": float(norm_flops),
                "norm_s": norm_s,
                "momentum_bytes": float(upd.param_bytes),
                "lars_scalar_bytes": float(scalar_bytes),
            },
        )
