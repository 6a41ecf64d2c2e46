"""K-FAC as distributed by Osawa et al. 2018 ("Second-order Optimization Method for Large Mini-batch"):
cost model.

Data flow of one iteration (per rank)
-------------------------------------
1. The gradients are allreduced as for SGD (counted by the predictor, not here).
2. Every ``T`` iterations (a *refresh*) each rank computes, on its local batch of ``N`` images, the
   Kronecker factors of every Kronecker-factored layer (Conv2d, Linear) and the diagonal Fisher of every
   batch-norm layer; one reduce-scatter sends each layer's factors to the rank that owns the layer; the
   owner adds damping and inverts (or eigendecomposes) them.
3. Every iteration each owner preconditions its layers' gradients, ``G^-1 grad_W A^-1``; one all-gather
   returns the preconditioned gradients to every rank; every rank applies the momentum update (same
   5-array stream as :mod:`perfmodel.optimizers.sgd`).

Counts (layer with A-factor dim ``d_a``, G-factor dim ``d_g``, ``M`` factor rows per rank)
--------------------------------------------------------------------------------------------
- Dims: Conv2d ``d_a = kh * kw * c_in / groups (+1 with bias)``, ``d_g = c_out``, ``M = N * Ho * Wo``
  (unfolded patches); Linear ``d_a = in_features (+1 with bias)``, ``d_g = out_features``, ``M = N``.
  ``d_a * d_g`` equals the layer's parameter count (checked: a mismatch raises SpecError).
- Factor computation per refresh: ``2 M d_a^2`` FLOP for A and ``2 M d_g^2`` for G, run at
  ``factor_peak_flops`` (default the device peak) times the device efficiency. Bytes: the patch matrix
  (``M d_a`` elements, written by im2col and read by the GEMM when the conv is not 1x1 stride 1, read
  only otherwise), the output gradients (``M d_g``), and the factors written, all in
  ``factor_dtype_bytes``.
- Factor communication per refresh: one ``reduce_scatter`` of the upper triangles of all factors,
  ``sum(d(d+1)/2) * factor_dtype_bytes`` bytes (plus the batch-norm diagonal Fisher).
- Inversion per refresh: ``INVERSE_FLOP_FACTOR[inverse] * d^3`` FLOP per factor (Cholesky-based inverse
  ``~ d^3``: factorisation ``d^3/3`` + triangular inverse ``d^3/3`` + product ``d^3/3``; symmetric
  eigendecomposition with vectors ``~ 9 d^3``), at ``peak_flops * inversion_efficiency``. Damping adds
  ``O(d)`` work, neglected.
- Preconditioning per step (by the owner): ``2 d_g^2 d_a + 2 d_g d_a^2`` FLOP (two GEMMs), reading both
  inverses and the gradient and writing the result in fp32; with ``inverse = "eig"`` four GEMMs
  (rotate into the eigenbasis, scale, rotate back): twice the FLOP and bytes.
- Preconditioned-gradient all-gather per step: one ``allgather`` of all parameter bytes (fp32).
- Batch-norm layers (diagonal Fisher, Osawa et al.): per refresh, per-example gradients of gamma and
  beta from ``x_hat`` and ``dy`` (read ``2 N C H W`` activations, ``3 N C H W`` FLOP); per step an
  elementwise ``g / (F + damping)`` (read 2, write 1 parameter-sized arrays, 2 FLOP per element).
- Other parameterised layers (neither Kronecker-factored nor batch-norm) get identity preconditioning.

Distribution and amortisation
-----------------------------
- Ownership: Kronecker-factored layers are assigned to ranks by a greedy longest-processing-time
  partition on their inversion cost (``proportional to d_a^3 + d_g^3``); since an idle rank is allowed,
  the partition over ``p' = 1 .. min(p, layers)`` ranks with the smallest makespan is used, so the
  inversion time never grows with ``p`` and is flat once ``p >= layers`` (one layer per busy rank, the
  other ranks idle). The same owners precondition.
- ``inversion_s`` is the slowest rank's inversion time, preconditioning the slowest rank's
  preconditioning time; adding the two maxima is an upper bound of the slowest rank's total
  (approximation).
- Refreshes: a refresh happens at iteration 0 and then every ``T`` iterations, ``T`` read at the
  iteration of the previous refresh from ``refresh_schedule`` (``(iteration, interval)`` pairs:
  ``interval`` holds from ``iteration`` on; before the first pair ``refresh_interval`` holds). With
  ``amortise_over_iterations = K`` the refreshes in ``[0, K)`` are counted exactly and divided by ``K``;
  without it the steady state ``1 / T_last`` is used. Per-iteration cost =
  ``per_refresh_cost * refreshes_per_iteration + per_step_cost``.

Approximations (marked)
-----------------------
- Factor GEMMs counted as full ``2 M d^2`` products (a SYRK on the triangle would halve them).
- The reduce-scatter of unequal per-owner parts (ReduceScatterV) is modelled as one even
  ``reduce_scatter`` of the total triangle bytes.
- Grouped/depthwise convolutions: one ``d_a x d_a`` and one ``c_out x c_out`` factor, as the brief's
  dims say; a per-group block-diagonal factorisation would be cheaper.
- Small inversions run below the dense-linear-algebra efficiency ``inversion_efficiency`` (default
  0.5: LAPACK/cuSOLVER factorisations of the 1k-5k matrices that dominate ResNet-50 reach roughly half of
  peak); ``launch_overhead_s`` can charge a per-kernel latency for the many small ones.
- Double counting with the predictor: in Osawa's fused design the gradient reduce-scatter and this
  all-gather *replace* the gradient allreduce. This module follows the convention that the predictor
  counts a gradient allreduce and the all-gather here is extra; set ``grad_allgather = False`` when the
  gradient exchange is modelled as reduce-scatter + all-gather elsewhere. ``details["allgather_s"]``
  gives the all-gather alone.

Optimizer state per rank (``memory_bytes``)
-------------------------------------------
fp32 momentum (``param_bytes``) + the local factors of every Kronecker-factored layer (dense,
``(d_a^2 + d_g^2) * factor_dtype_bytes``) + the batch-norm diagonal Fisher (fp32) + the inverses of the
owned layers on the most loaded rank (fp32 ``d^2`` per factor; ``d^2 + d`` for eigenvectors and
eigenvalues). Transient im2col workspaces are not counted.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from hardware.errors import ConfigError, SpecError

from .base import (FP32_BYTES, OPTION_FIELD_PREFIX, ComputeContext, LayerInfo, OptimizerCost, OptimizerModel,
                   check_bool, check_choice, check_float, check_int, parse_layers)
from .sgd import momentum_update

__all__ = [
    "KFAC_LAYER_TYPES",
    "INVERSE_FLOP_FACTOR",
    "PRECONDITION_GEMM_FACTOR",
    "BN_FISHER_FLOPS_PER_ACTIVATION",
    "KFDims",
    "kfac_dims",
    "triangle_elements",
    "greedy_partition",
    "balanced_partition",
    "count_refreshes",
    "refreshes_per_iteration",
    "KFACModel",
]

#: layer types that get a Kronecker-factored Fisher block
KFAC_LAYER_TYPES = ("Conv2d", "Linear")
#: FLOP of inverting one d x d factor, in units of d^3
INVERSE_FLOP_FACTOR = MappingProxyType({"cholesky": 1.0, "eig": 9.0})
#: multiplier of the two-GEMM preconditioning FLOP and bytes (eig: rotate in, scale, rotate out)
PRECONDITION_GEMM_FACTOR = MappingProxyType({"cholesky": 1, "eig": 2})
#: FLOP per activation element for the batch-norm diagonal Fisher (dy * x_hat, two reductions)
BN_FISHER_FLOPS_PER_ACTIVATION = 3


@dataclass(frozen=True)
class KFDims:
    """Kronecker-factor geometry of one Conv2d/Linear layer.

    Attributes
    ----------
    d_a, d_g : int
        Dimensions of the A (input) and G (output-gradient) factors.
    rows_per_example : int
        Rows of the factor GEMMs per example (``Ho * Wo`` for a conv, 1 for a Linear).
    unfold : bool
        Whether im2col materialises a patch matrix (conv other than 1x1 stride 1).
    """

    d_a: int
    d_g: int
    rows_per_example: int
    unfold: bool


def triangle_elements(d: int) -> int:
    """Elements of the upper triangle (with diagonal) of a symmetric ``d x d`` matrix: ``d (d + 1) / 2``."""
    return d * (d + 1) // 2


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return int(v), int(v)
    a, b = v
    return int(a), int(b)


def kfac_dims(layer: LayerInfo | Mapping[str, Any], source: str = "workload") -> KFDims | None:
    """Factor dims of a layer record, or None when the layer is not Kronecker-factored.

    Raises SpecError when a Conv2d/Linear record lacks a needed shape key or ``d_a * d_g`` differs from
    its parameter count.
    """
    if not isinstance(layer, LayerInfo):
        layer = parse_layers([layer], source)[0]
    if layer.type not in KFAC_LAYER_TYPES:
        return None
    s = layer.shape
    where = f"layers[{layer.index}] ({layer.name}).shape"

    def need(key: str) -> Any:
        if key not in s:
            raise SpecError(source, f"{where}.{key}", None, f"missing (needed by K-FAC for {layer.type})")
        return s[key]

    try:
        if layer.type == "Conv2d":
            cin, cout = int(need("in_channels")), int(need("out_channels"))
            kh, kw = _pair(need("kernel_size"))
            groups = int(s.get("groups", 1))
            if groups < 1 or cin % groups:
                raise SpecError(source, f"{where}.groups", groups, f"must be >= 1 and divide in_channels = {cin}")
            weight = kh * kw * (cin // groups)
            bias = bool(s["bias"]) if "bias" in s else layer.params == cout * (weight + 1)
            ho, wo = _pair(need("out_hw"))
            in_hw = _pair(s["in_hw"]) if "in_hw" in s else (ho, wo)
            dims = KFDims(d_a=weight + int(bias), d_g=cout, rows_per_example=ho * wo,
                          unfold=kh * kw > 1 or in_hw != (ho, wo))
        else:
            fin, fout = int(need("in_features")), int(need("out_features"))
            bias = bool(s["bias"]) if "bias" in s else layer.params == fout * (fin + 1)
            dims = KFDims(d_a=fin + int(bias), d_g=fout, rows_per_example=1, unfold=False)
    except (TypeError, ValueError) as exc:
        raise SpecError(source, where, dict(s), f"malformed {layer.type} shape ({exc})") from None
    if dims.d_a * dims.d_g != layer.params:
        raise SpecError(source, f"layers[{layer.index}] ({layer.name}).params", layer.params,
                        f"differs from d_a * d_g = {dims.d_a} * {dims.d_g} = {dims.d_a * dims.d_g} of its shape")
    return dims


def greedy_partition(costs: Sequence[float], ranks: int) -> list[int]:
    """Longest-processing-time assignment: owner rank of each item (largest first to the least loaded).

    Ties go to the lowest rank; items of equal cost keep their order.
    """
    heap = [(0.0, r) for r in range(max(1, ranks))]
    owners = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, r = heapq.heappop(heap)
        owners[i] = r
        heapq.heappush(heap, (load + costs[i], r))
    return owners


def balanced_partition(costs: Sequence[float], ranks: int) -> tuple[list[int], int, float]:
    """Best greedy partition using ``p' = 1 .. min(ranks, len(costs))`` ranks (the rest may idle).

    Returns ``(owners, ranks_used, makespan)``; the makespan is non-increasing in ``ranks`` and constant
    once ``ranks >= len(costs)``. Ties prefer more ranks (spreads the per-step preconditioning).
    """
    if not costs:
        return [], 0, 0.0
    best: tuple[list[int], int, float] | None = None
    for p in range(1, min(ranks, len(costs)) + 1):
        owners = greedy_partition(costs, p)
        loads = [0.0] * p
        for i, r in enumerate(owners):
            loads[r] += costs[i]
        span = max(loads)
        if best is None or span <= best[2]:
            best = (owners, p, span)
    assert best is not None
    return best


def count_refreshes(refresh_interval: int, schedule: Sequence[tuple[int, int]], iterations: int) -> int:
    """Refreshes in iterations ``[0, iterations)``: at 0, then every ``T`` with ``T`` taken at the last refresh.

    ``schedule`` holds ``(iteration, interval)`` pairs with increasing iterations; before its first pair
    ``refresh_interval`` holds.
    """
    segments = [(0, refresh_interval)] + [tuple(x) for x in schedule]
    if len(segments) > 1 and segments[1][0] == 0:
        segments = segments[1:]
    count, nxt = 0, 0
    for k, (start, interval) in enumerate(segments):
        end = segments[k + 1][0] if k + 1 < len(segments) else iterations
        end = min(end, iterations)
        if nxt >= end:
            continue
        n = -(-(end - nxt) // interval)  # refreshes at nxt, nxt + T, ... < end
        count += n
        nxt += n * interval
    return count


def refreshes_per_iteration(refresh_interval: int, schedule: Sequence[tuple[int, int]] = (),
                            iterations: int | None = None) -> float:
    """Average refreshes per iteration: exact count over ``iterations`` when given, else ``1 / T_last``."""
    if iterations is None:
        last = schedule[-1][1] if schedule else refresh_interval
        return 1.0 / last
    return count_refreshes(refresh_interval, schedule, iterations) / iterations


class KFACModel(OptimizerModel):
    """Distributed K-FAC (Osawa et al. 2018).

    Options (defaults in :attr:`DEFAULT_OPTIONS`): ``refresh_interval`` (int >= 1, 10),
    ``refresh_schedule`` (list of ``[iteration, interval]``, empty), ``amortise_over_iterations``
    (int >= 1 or None), ``factor_dtype_bytes`` (2 or 4, 4), ``inverse`` (``"cholesky"`` or ``"eig"``),
    ``inversion_efficiency`` (in (0, 1], 0.5), ``factor_peak_flops`` (FLOP/s > 0 or None = device peak;
    e.g. the fp16 tensor-core peak when ``factor_dtype_bytes = 2``), ``grad_allgather`` (bool, True),
    ``launch_overhead_s`` (float >= 0, 0), and three EMPIRICAL multipliers of the per-refresh terms,
    ``factor_scale``, ``exchange_scale`` and ``inversion_scale`` (float > 0, 1): the predictor sets them on a
    system whose calibration measured the executor's K-FAC (measured over modelled on a reference
    configuration, :func:`perfmodel.predict.kfac_scales`); 1 everywhere else.
    """

    name = "kfac"
    description = "K-FAC (Osawa et al. 2018): Kronecker factors, distributed inversion, preconditioning"
    DEFAULT_OPTIONS = MappingProxyType({
        "launch_overhead_s": 0.0,
        "refresh_interval": 10,
        "refresh_schedule": (),
        "amortise_over_iterations": None,
        "factor_dtype_bytes": 4,
        "inverse": "cholesky",
        "inversion_efficiency": 0.5,
        "factor_peak_flops": None,
        "grad_allgather": True,
        "factor_scale": 1.0,
        "exchange_scale": 1.0,
        "inversion_scale": 1.0,
    })

    def check_option(self, key: str, value: Any, source: str) -> Any:
        if key == "refresh_interval":
            return check_int(source, key, value, 1)
        if key == "amortise_over_iterations":
            return None if value is None else check_int(source, key, value, 1)
        if key == "factor_dtype_bytes":
            return int(check_choice(source, key, value, (2, 4)))
        if key == "inverse":
            return check_choice(source, key, value, tuple(INVERSE_FLOP_FACTOR))
        if key == "inversion_efficiency":
            return check_float(source, key, value, minimum=0.0, inclusive_min=False, maximum=1.0)
        if key == "factor_peak_flops":
            return None if value is None else check_float(source, key, value, minimum=0.0, inclusive_min=False)
        if key == "grad_allgather":
            return check_bool(source, key, value)
        if key in ("factor_scale", "exchange_scale", "inversion_scale"):
            return check_float(source, key, value, minimum=0.0, inclusive_min=False, maximum=1e4)
        if key == "refresh_schedule":
            return self._check_schedule(value, source)
        return super().check_option(key, value, source)

    @staticmethod
    def _check_schedule(value: Any, source: str) -> tuple[tuple[int, int], ...]:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
            raise ConfigError(source, f"{OPTION_FIELD_PREFIX}.refresh_schedule", value,
                              "must be a list of [iteration, interval] pairs")
        out: list[tuple[int, int]] = []
        for i, pair in enumerate(value):
            key = f"refresh_schedule[{i}]"
            if isinstance(pair, Mapping) and set(pair) == {"iteration", "interval"}:
                it, interval = pair["iteration"], pair["interval"]
            elif isinstance(pair, Sequence) and not isinstance(pair, (str, bytes)) and len(pair) == 2:
                it, interval = pair
            else:
                raise ConfigError(source, f"{OPTION_FIELD_PREFIX}.{key}", pair, "must be an [iteration, interval] pair")
            it = check_int(source, f"{key}.iteration", it, 0)
            interval = check_int(source, f"{key}.interval", interval, 1)
            if out and it <= out[-1][0]:
                raise ConfigError(source, f"{OPTION_FIELD_PREFIX}.{key}.iteration", it,
                                  f"must be greater than the previous pair's iteration {out[-1][0]}")
            out.append((it, interval))
        return tuple(out)

    # ------------------------------------------------------------------------------------------------
    def cost(self, layers: Sequence[LayerInfo], ctx: ComputeContext, options: Mapping[str, Any]) -> OptimizerCost:
        fb = options["factor_dtype_bytes"]
        inv_kind = options["inverse"]
        inv_c = INVERSE_FLOP_FACTOR[inv_kind]
        prec_c = PRECONDITION_GEMM_FACTOR[inv_kind]
        factor_peak = options["factor_peak_flops"] or ctx.peak_flops
        inv_rate = ctx.peak_flops * options["inversion_efficiency"]
        n = ctx.per_device_batch
        lo = ctx.launch_overhead_s

        upd = momentum_update(layers, ctx)

        kf: list[tuple[LayerInfo, KFDims]] = []
        bn: list[LayerInfo] = []
        identity_params = 0
        for l in layers:
            dims = kfac_dims(l)
            if dims is not None:
                kf.append((l, dims))
            elif l.params and l.type.startswith("BatchNorm"):
                bn.append(l)
            elif l.params:
                identity_params += l.params

        # --- per refresh, every rank: local factors ------------------------------------------------------
        factor_flops = 0.0
        factor_s = 0.0
        tri_elems = 0
        factor_state_bytes = 0.0
        max_da = max_dg = 0
        for l, d in kf:
            m = n * d.rows_per_example
            fa, fg = 2.0 * m * d.d_a ** 2, 2.0 * m * d.d_g ** 2
            ba = ((2 if d.unfold else 1) * m * d.d_a + d.d_a ** 2) * fb
            bg = (m * d.d_g + d.d_g ** 2) * fb
            factor_flops += fa + fg
            factor_s += ctx.kernel_s(fa, ba, peak_flops=factor_peak, kernels=2 if d.unfold else 1)
            factor_s += ctx.kernel_s(fg, bg, peak_flops=factor_peak)
            tri_elems += triangle_elements(d.d_a) + triangle_elements(d.d_g)
            factor_state_bytes += (d.d_a ** 2 + d.d_g ** 2) * fb
            max_da, max_dg = max(max_da, d.d_a), max(max_dg, d.d_g)

        bn_elems = sum(l.params for l in bn)
        bn_bytes = sum(l.param_bytes for l in bn)
        bn_fisher_s = 0.0
        for l in bn:
            c = int(l.shape.get("num_features", l.params // 2))
            h, w = _pair(l.shape.get("hw", (1, 1)))
            acts = n * c * h * w
            bn_fisher_s += ctx.kernel_s(BN_FISHER_FLOPS_PER_ACTIVATION * acts + 2 * l.params,
                                        2 * acts * fb + l.param_bytes)
        factor_s *= options["factor_scale"]
        bn_fisher_s *= options["factor_scale"]
        factor_compute_s_refresh = factor_s + bn_fisher_s

        factor_comm_bytes = tri_elems * fb + bn_elems * fb
        collective_s_refresh = ctx.collective_s("reduce_scatter", factor_comm_bytes)
        reduce_scatter_s_refresh = collective_s_refresh * options["exchange_scale"]

        # --- per refresh, owners: inversion ---------------------------------------------------------------
        inv_flops = [inv_c * (d.d_a ** 3 + d.d_g ** 3) for _, d in kf]
        inv_times = [f / inv_rate + 2 * lo for f in inv_flops]
        owners, ranks_used, inversion_s_refresh = balanced_partition(inv_times, ctx.ranks)
        inversion_s_refresh *= options["inversion_scale"]
        inv_flops_rank = [0.0] * max(ranks_used, 1)
        prec_s_rank = [0.0] * max(ranks_used, 1)
        inv_bytes_rank = [0.0] * max(ranks_used, 1)
        prec_flops_total = 0.0
        for (l, d), r, f in zip(kf, owners, inv_flops):
            inv_flops_rank[r] += f
            pf = prec_c * (2.0 * d.d_g ** 2 * d.d_a + 2.0 * d.d_g * d.d_a ** 2)
            pb = prec_c * (d.d_g ** 2 + d.d_a ** 2 + 2 * d.d_g * d.d_a) * FP32_BYTES
            prec_flops_total += pf
            prec_s_rank[r] += ctx.kernel_s(pf, pb, kernels=2 * prec_c)
            eig_extra = (d.d_a + d.d_g) if inv_kind == "eig" else 0
            inv_bytes_rank[r] += (d.d_a ** 2 + d.d_g ** 2 + eig_extra) * FP32_BYTES

        # --- per step -------------------------------------------------------------------------------------
        precondition_s = max(prec_s_rank) if kf else 0.0
        bn_precondition_s = ctx.kernel_s(2.0 * bn_elems, 3.0 * bn_bytes, kernels=len(bn)) if bn else 0.0
        allgather_bytes = float(upd.param_bytes) if options["grad_allgather"] else 0.0
        allgather_s = ctx.collective_s("allgather", allgather_bytes)

        # --- amortisation -------------------------------------------------------------------------------
        rate = refreshes_per_iteration(options["refresh_interval"], options["refresh_schedule"],
                                       options["amortise_over_iterations"])
        extra_compute_s = rate * factor_compute_s_refresh + precondition_s + bn_precondition_s
        extra_comm_s = rate * reduce_scatter_s_refresh + allgather_s
        inversion_s = rate * inversion_s_refresh

        memory = float(upd.param_bytes) + factor_state_bytes + bn_bytes + max(inv_bytes_rank)
        per_refresh_s = factor_compute_s_refresh + reduce_scatter_s_refresh + inversion_s_refresh
        per_step_s = upd.time_s + precondition_s + bn_precondition_s + allgather_s
        details = {
            "param_elements": float(upd.elements),
            "param_bytes": float(upd.param_bytes),
            "update_bytes": float(upd.nbytes),
            "update_flops": float(upd.flops),
            "kf_layers": float(len(kf)),
            "bn_layers": float(len(bn)),
            "identity_params": float(identity_params),
            "max_factor_dim_a": float(max_da),
            "max_factor_dim_g": float(max_dg),
            "refreshes_per_iteration": rate,
            "factor_flops_per_refresh": factor_flops,
            "factor_compute_s_per_refresh": factor_s,
            "bn_fisher_s_per_refresh": bn_fisher_s,
            "factor_triangle_elements": float(tri_elems),
            "factor_comm_bytes_per_refresh": float(factor_comm_bytes),
            "reduce_scatter_s_per_refresh": collective_s_refresh,
            "exchange_s_per_refresh": reduce_scatter_s_refresh,
            "inversion_flops_per_refresh": float(sum(inv_flops)),
            "inversion_flops_per_refresh_max_rank": max(inv_flops_rank) if kf else 0.0,
            "inversion_s_per_refresh": inversion_s_refresh,
            "inversion_ranks_used": float(ranks_used),
            "precondition_flops": prec_flops_total,
            "precondition_s": precondition_s,
            "bn_precondition_s": bn_precondition_s,
            "allgather_bytes": allgather_bytes,
            "allgather_s": allgather_s,
            "per_refresh_s": per_refresh_s,
            "per_step_s": per_step_s,
            "momentum_bytes": float(upd.param_bytes),
            "factor_bytes": factor_state_bytes,
            "bn_fisher_bytes": float(bn_bytes),
            "inverse_bytes_max_rank": max(inv_bytes_rank),
            "factor_scale": float(options["factor_scale"]),
            "exchange_scale": float(options["exchange_scale"]),
            "inversion_scale": float(options["inversion_scale"]),
        }
        return OptimizerCost(optimizer=self.name, update_s=upd.time_s, extra_compute_s=extra_compute_s,
                             extra_comm_s=extra_comm_s, inversion_s=inversion_s, memory_bytes=memory,
                             details=details)
