"""Optimizer cost models (perfmodel.optimizers): closed forms, invariants, ResNet-50 K-FAC geometry, errors."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from hardware.errors import ConfigError, SpecError
from perfmodel.optimizers import OPTIMIZERS, OptimizerCost, get_optimizer, optimizer_cost
from perfmodel.optimizers.kfac import (balanced_partition, count_refreshes, greedy_partition, kfac_dims,
                                       refreshes_per_iteration, triangle_elements)

REPO = Path(__file__).resolve().parents[1]
RESNET50_JSON = REPO / "perfmodel" / "data" / "workloads" / "resnet50.json"

# ------------------------------------------------------------------------------------------------ helpers


def conv(name, cin, cout, k, in_hw, out_hw=None, groups=1, bias=False):
    kh, kw = (k, k) if isinstance(k, int) else k
    params = cout * (cin // groups) * kh * kw + (cout if bias else 0)
    out_hw = out_hw or in_hw
    return {"name": name, "type": "Conv2d", "params": params, "param_bytes": 4 * params,
            "shape": {"in_channels": cin, "out_channels": cout, "kernel_size": [kh, kw], "groups": groups,
                      "bias": bias, "in_hw": list(in_hw), "out_hw": list(out_hw)}}


def linear(name, fin, fout, bias=True):
    params = fin * fout + (fout if bias else 0)
    return {"name": name, "type": "Linear", "params": params, "param_bytes": 4 * params,
            "shape": {"in_features": fin, "out_features": fout, "bias": bias}}


def bn(name, c, hw):
    return {"name": name, "type": "BatchNorm2d", "params": 2 * c, "param_bytes": 8 * c,
            "shape": {"num_features": c, "hw": list(hw)}}


def relu(name):
    return {"name": name, "type": "ReLU", "params": 0, "param_bytes": 0, "shape": {}}


def toy_net():
    """Small CNN: 3 convs of distinct sizes with BN, a pool-free head and one Linear with bias."""
    return [
        conv("c1", 3, 16, 3, (32, 32)), bn("bn1", 16, (32, 32)), relu("r1"),
        conv("c2", 16, 32, 3, (32, 32), (16, 16)), bn("bn2", 32, (16, 16)), relu("r2"),
        conv("c3", 32, 64, 1, (16, 16), (8, 8)), bn("bn3", 64, (8, 8)), relu("r3"),
        linear("fc", 64, 10),
    ]


def resnet50_layers():
    """torchvision ResNet-50 (v1.5: stride on the 3x3 conv), 224x224 input: convs without bias, BN after each."""
    layers = [conv("conv1", 3, 64, 7, (224, 224), (112, 112)), bn("bn1", 64, (112, 112))]
    cin, hw = 64, 56
    for stage, (width, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)], 1):
        out = 4 * width
        for b in range(blocks):
            s = stride if b == 0 else 1
            p = f"layer{stage}.{b}"
            ohw = hw // s
            layers += [conv(f"{p}.conv1", cin, width, 1, (hw, hw)), bn(f"{p}.bn1", width, (hw, hw)),
                       conv(f"{p}.conv2", width, width, 3, (hw, hw), (ohw, ohw)), bn(f"{p}.bn2", width, (ohw, ohw)),
                       conv(f"{p}.conv3", width, out, 1, (ohw, ohw)), bn(f"{p}.bn3", out, (ohw, ohw))]
            if b == 0:
                layers += [conv(f"{p}.downsample.0", cin, out, 1, (hw, hw), (ohw, ohw)),
                           bn(f"{p}.downsample.1", out, (ohw, ohw))]
            cin, hw = out, ohw
    layers.append(linear("fc", 2048, 1000))
    return layers


class CommSpy:
    """Alpha-beta ring model that records its calls: (p-1)(alpha + n/p beta) per reduce-scatter/all-gather."""

    def __init__(self, alpha=5e-6, beta=1 / 10e9):
        self.alpha, self.beta, self.calls = alpha, beta, []

    def __call__(self, kind, nbytes, p):
        self.calls.append((kind, nbytes, p))
        one = (p - 1) * (self.alpha + nbytes / p * self.beta)
        return 2 * one if kind == "allreduce" else one


DEV = dict(peak_flops=15.7e12, efficiency=0.5, mem_bw_Bps=900e9)   # V100-like


def cost(name, layers, *, batch=32, ranks=8, options=None, comm=None, **dev):
    d = {**DEV, **dev}
    return optimizer_cost(name, layers, per_device_batch=batch, ranks=ranks, comm=comm or CommSpy(),
                          options=options, **d)


# ------------------------------------------------------------------------------------------------ SGD / LARS


def test_registry_names():
    assert set(OPTIMIZERS) == {"sgd", "lars", "kfac"}
    assert get_optimizer("K-FAC".replace("-", "")) is OPTIMIZERS["kfac"]


def test_sgd_update_is_five_param_streams_over_bandwidth():
    layers = toy_net()
    P = sum(l["params"] for l in layers)
    c = cost("sgd", layers)
    assert c.update_s == (5 * 4 * P) / DEV["mem_bw_Bps"]
    assert c.extra_compute_s == c.extra_comm_s == c.inversion_s == 0.0
    assert c.total_s == c.update_s
    assert c.memory_bytes == 4 * P                 # momentum only
    assert c.details["update_flops"] == 6 * P


def test_sgd_roofline_compute_bound_branch():
    layers = toy_net()
    P = sum(l["params"] for l in layers)
    c = cost("sgd", layers, peak_flops=1e6, efficiency=0.25, mem_bw_Bps=1e12)
    assert c.update_s == pytest.approx(6 * P / (1e6 * 0.25), rel=1e-12)


def test_launch_overhead_adds_one_kernel_per_parameterised_layer():
    layers = toy_net()
    base = cost("sgd", layers).update_s
    with_lo = cost("sgd", layers, options={"launch_overhead_s": 1e-5}).update_s
    n_param_layers = sum(1 for l in layers if l["params"])
    assert with_lo - base == pytest.approx(n_param_layers * 1e-5, rel=1e-9)


def test_lars_norms_are_two_param_reads_and_no_comm():
    layers = toy_net()
    P = sum(l["params"] for l in layers)
    spy = CommSpy()
    c = cost("lars", layers, comm=spy)
    s = cost("sgd", layers)
    assert c.update_s == s.update_s                     # same 5-array stream, still memory-bound
    assert c.extra_compute_s == (2 * 4 * P) / DEV["mem_bw_Bps"]
    assert c.extra_comm_s == 0.0 and spy.calls == []
    adapted = sum(1 for l in layers if l["params"])
    assert c.memory_bytes == 4 * P + 3 * 4 * adapted


def test_lars_exclude_bn_bias_skips_their_bytes():
    layers = toy_net()
    skipped = sum(l["params"] for l in layers if l["type"] == "BatchNorm2d") + 10   # + fc bias
    full = cost("lars", layers).extra_compute_s
    excl = cost("lars", layers, options={"exclude_bn_bias": True}).extra_compute_s
    assert full - excl == pytest.approx(2 * 4 * skipped / DEV["mem_bw_Bps"], rel=1e-9)


# ------------------------------------------------------------------------------------------------ K-FAC closed forms


def test_kfac_single_linear_by_hand():
    layers = [linear("fc", 100, 10, bias=True)]
    N, peak, eff, bw = 32, 1e12, 1.0, 1e12
    c = cost("kfac", layers, batch=N, ranks=1, peak_flops=peak, efficiency=eff, mem_bw_Bps=bw,
             options={"refresh_interval": 1})
    d = c.details
    da, dg = 101, 10                                    # in_features + 1 (bias), out_features
    assert (d["max_factor_dim_a"], d["max_factor_dim_g"]) == (da, dg)
    assert d["factor_flops_per_refresh"] == 2 * N * da ** 2 + 2 * N * dg ** 2
    assert d["factor_triangle_elements"] == da * (da + 1) // 2 + dg * (dg + 1) // 2 == 5151 + 55
    assert d["factor_comm_bytes_per_refresh"] == 4 * (5151 + 55)
    assert d["inversion_flops_per_refresh"] == da ** 3 + dg ** 3
    assert c.inversion_s == pytest.approx((da ** 3 + dg ** 3) / (peak * 0.5), rel=1e-12)
    assert d["precondition_flops"] == 2 * dg ** 2 * da + 2 * dg * da ** 2
    # factor kernels: A reads N x d_a rows, writes d_a^2; G reads N x d_g, writes d_g^2 (fp32)
    t_a = max(2 * N * da ** 2 / peak, (N * da + da ** 2) * 4 / bw)
    t_g = max(2 * N * dg ** 2 / peak, (N * dg + dg ** 2) * 4 / bw)
    assert d["factor_compute_s_per_refresh"] == pytest.approx(t_a + t_g, rel=1e-12)
    assert c.extra_comm_s == 0.0                        # one rank: no collectives


def test_kfac_single_conv_by_hand_and_comm_volumes():
    layers = [conv("c", 16, 32, 3, (8, 8))]
    N, p = 4, 4
    spy = CommSpy()
    c = cost("kfac", layers, batch=N, ranks=p, comm=spy, options={"refresh_interval": 1})
    d = c.details
    da, dg, M = 3 * 3 * 16, 32, N * 8 * 8               # 144, 32, unfolded patch rows
    assert d["factor_flops_per_refresh"] == 2 * M * da ** 2 + 2 * M * dg ** 2
    tri = 144 * 145 // 2 + 32 * 33 // 2
    assert tri == 10968 and d["factor_triangle_elements"] == tri
    assert d["inversion_flops_per_refresh"] == 144 ** 3 + 32 ** 3
    P = 144 * 32
    assert sorted(spy.calls) == [("allgather", 4.0 * P, p), ("reduce_scatter", 4.0 * tri, p)]
    assert c.extra_comm_s == pytest.approx(spy(*("reduce_scatter", 4.0 * tri, p)) + spy("allgather", 4.0 * P, p))
    # FP16 factors halve the factor traffic, not the gradient all-gather
    h = cost("kfac", layers, batch=N, ranks=p, options={"factor_dtype_bytes": 2}).details
    assert h["factor_comm_bytes_per_refresh"] == 2 * tri and h["allgather_bytes"] == 4 * P


def test_kfac_eig_inversion_is_nine_times_cholesky():
    layers = toy_net()
    ch = cost("kfac", layers, ranks=1).details["inversion_flops_per_refresh"]
    eig = cost("kfac", layers, ranks=1, options={"inverse": "eig"}).details["inversion_flops_per_refresh"]
    assert eig == 9 * ch


def test_kfac_grad_allgather_can_be_turned_off():
    layers = toy_net()
    on = cost("kfac", layers, ranks=8)
    off = cost("kfac", layers, ranks=8, options={"grad_allgather": False})
    assert on.details["allgather_s"] > 0 and off.details["allgather_s"] == 0.0
    assert on.extra_comm_s - off.extra_comm_s == pytest.approx(on.details["allgather_s"])


def test_kfac_factor_dims_bias_inference_and_consistency():
    d = kfac_dims(conv("dw", 32, 32, 3, (8, 8), groups=32))
    assert (d.d_a, d.d_g) == (9, 32)
    rec = linear("fc", 64, 10, bias=True)
    del rec["shape"]["bias"]                            # inferred from the parameter count
    assert kfac_dims(rec).d_a == 65
    assert kfac_dims(bn("b", 8, (4, 4))) is None
    bad = conv("c", 16, 32, 3, (8, 8))
    bad["params"] += 1
    with pytest.raises(SpecError, match="d_a \\* d_g"):
        kfac_dims(bad)
    assert triangle_elements(4608) == 4608 * 4609 // 2


# ------------------------------------------------------------------------------------------------ K-FAC invariants


def test_kfac_amortised_cost_falls_with_refresh_interval_towards_per_step():
    layers = toy_net()
    totals = []
    for T in (1, 2, 5, 10, 100, 1000):
        c = cost("kfac", layers, options={"refresh_interval": T})
        d = c.details
        assert c.total_s == pytest.approx(d["per_step_s"] + d["per_refresh_s"] / T, rel=1e-12)
        totals.append(c.total_s)
    assert all(a > b for a, b in zip(totals, totals[1:]))
    far = cost("kfac", layers, options={"refresh_interval": 10 ** 9})
    assert far.total_s == pytest.approx(far.details["per_step_s"], rel=1e-6)
    assert far.details["per_step_s"] > cost("sgd", layers).total_s     # preconditioning + all-gather remain


def test_refresh_counting_closed_forms():
    assert count_refreshes(10, (), 100) == 10
    assert count_refreshes(30, (), 100) == 4                       # 0, 30, 60, 90
    assert count_refreshes(10, [(0, 1), (100, 10)], 1000) == 100 + 90
    # interval 30 until iteration 50 (refreshes 0, 30), then 10 from the refresh at 60: 60, 70, 80, 90
    assert count_refreshes(30, [(50, 10)], 100) == 6
    assert refreshes_per_iteration(10, [(0, 1), (100, 10)], 1000) == pytest.approx(0.19)
    assert refreshes_per_iteration(10, [(0, 1), (300, 50)]) == pytest.approx(1 / 50)   # steady state
    assert refreshes_per_iteration(7) == pytest.approx(1 / 7)
    c = cost("kfac", toy_net(), options={"refresh_schedule": [[0, 1], [100, 10]], "amortise_over_iterations": 1000})
    assert c.details["refreshes_per_iteration"] == pytest.approx(0.19)
    assert c.inversion_s == pytest.approx(0.19 * c.details["inversion_s_per_refresh"])


def test_partition_greedy_and_monotone():
    assert greedy_partition([5, 4, 3, 3], 2) == [0, 1, 1, 0]
    owners, used, span = balanced_partition([5, 4, 3, 3], 10)
    assert used == 4 and span == 5


@pytest.mark.parametrize("layers", [
    [linear(f"fc{i}", 300 + 20 * i, 200 + 10 * i) for i in range(8)],    # comparable sizes: falls step by step
    resnet50_layers(),                                                    # dominated by the 4608-dim layer4 convs
], ids=["eight-linears", "resnet50"])
def test_kfac_inversion_falls_with_ranks_until_one_layer_each_then_flat(layers):
    kf = [kfac_dims(l) for l in layers if kfac_dims(l)]
    n_kf = len(kf)
    costs = [d.d_a ** 3 + d.d_g ** 3 for d in kf]
    rate = DEV["peak_flops"] * 0.5 * 10                 # inversion_efficiency 0.5, refresh_interval 10
    ranks = list(range(1, n_kf + 3)) + [2 * n_kf, 1024]
    times = [cost("kfac", layers, ranks=p).inversion_s for p in ranks]
    assert times[0] == pytest.approx(sum(costs) / rate, rel=1e-12)          # one rank inverts everything
    assert all(a >= b for a, b in zip(times, times[1:]))                     # never grows with ranks
    assert times[1] < times[0]
    assert all(t == times[n_kf - 1] for t in times[n_kf - 1:])                # flat once ranks >= layers
    assert times[-1] == pytest.approx(max(costs) / rate, rel=1e-12)           # the biggest layer alone
    if n_kf == 8:      # comparable sizes: strictly falls until the biggest layer alone sets the pace (p = 6)
        assert all(a > b for a, b in zip(times[:5], times[1:6]))


def test_optimizer_memory_order():
    layers = toy_net()
    sgd, lars, kfac = (cost(n, layers).memory_bytes for n in ("sgd", "lars", "kfac"))
    assert kfac > lars >= sgd
    d = cost("kfac", layers).details
    assert kfac == d["momentum_bytes"] + d["factor_bytes"] + d["bn_fisher_bytes"] + d["inverse_bytes_max_rank"]


def test_kfac_factor_cost_monotone_in_batch():
    layers = resnet50_layers()
    prev_f = prev_t = 0.0
    for b in (1, 2, 4, 8, 16, 32, 64, 128):
        c = cost("kfac", layers, batch=b)
        f = c.details["factor_compute_s_per_refresh"]
        assert f > prev_f and c.total_s > prev_t
        prev_f, prev_t = f, c.total_s


# ------------------------------------------------------------------------------------------------ ResNet-50


def _check_resnet50_kfac(layers):
    c = cost("kfac", layers, batch=32, ranks=1024)
    d = c.details
    # 53 convs: stem + 16 bottlenecks x 3 + 4 downsample projections; + 1 fc = 54 Kronecker-factored layers
    assert sum(1 for l in layers if l["type"] == "Conv2d") == 53
    assert d["kf_layers"] == 54 and d["bn_layers"] == 53
    # largest A factor: the 3x3 convs of layer4, 3*3*512 = 4608 (ResNet convs have no bias); the fc's is
    # 2048 + 1 = 2049 (it has a bias); largest G factor: c_out = 2048 (layer4 conv3 / downsample)
    assert d["max_factor_dim_a"] == 4608 and d["max_factor_dim_g"] == 2048
    fc = next(l for l in layers if l["type"] == "Linear")
    assert (kfac_dims(fc).d_a, kfac_dims(fc).d_g) == (2049, 1000)
    assert d["param_elements"] == 25_557_032
    # upper triangles of all factors, derived independently per stage: sum over 54 (d_a, d_g) pairs
    pairs = [(147, 64)]
    for width, blocks, cin in [(64, 3, 64), (128, 4, 256), (256, 6, 512), (512, 3, 1024)]:
        for b in range(blocks):
            c_in = cin if b == 0 else 4 * width
            pairs += [(c_in, width), (9 * width, width), (width, 4 * width)] + ([(c_in, 4 * width)] if b == 0 else [])
    pairs.append((2049, 1000))
    assert d["factor_triangle_elements"] == sum(triangle_elements(a) + triangle_elements(g) for a, g in pairs) \
        == 76_967_027
    assert d["factor_comm_bytes_per_refresh"] == 4 * (76_967_027 + 53_120)       # + BN diagonal Fisher
    assert d["inversion_flops_per_refresh"] == sum(a ** 3 + g ** 3 for a, g in pairs)
    # 1024 ranks > 54 layers: the slowest rank inverts the 4608 + 512 layer alone
    assert d["inversion_flops_per_refresh_max_rank"] == 4608 ** 3 + 512 ** 3
    return c


def test_resnet50_kfac_geometry_analytic():
    c = _check_resnet50_kfac(resnet50_layers())
    assert c.total_s > cost("lars", resnet50_layers(), ranks=1024).total_s


def test_resnet50_kfac_geometry_from_workload_json():
    if not RESNET50_JSON.exists():
        pytest.skip(f"{RESNET50_JSON} not written yet (workload helper); the analytic test covers the geometry")
    data = json.loads(RESNET50_JSON.read_text())
    from_json = _check_resnet50_kfac(data["layers"])
    # the workload table object (``.layers`` of LayerCost with ``to_dict()``) is accepted as is
    from perfmodel.workload import load_workload
    table = load_workload("resnet50")
    for layers in (table, list(table.layers)):
        same = cost("kfac", layers, batch=32, ranks=1024)
        assert same.total_s == from_json.total_s and dict(same.details) == dict(from_json.details)


# ------------------------------------------------------------------------------------------------ errors


def test_unknown_optimizer_names_field_and_known_ones():
    with pytest.raises(ConfigError) as e:
        cost("adam", toy_net())
    assert e.value.source == "--optimizer" and e.value.field == "optimizer" and e.value.value == "adam"
    assert "kfac" in str(e.value) and "lars" in str(e.value) and "sgd" in str(e.value)


@pytest.mark.parametrize("name,options,field", [
    ("kfac", {"refresh_interval": -1}, "optimizer_options.refresh_interval"),
    ("kfac", {"refresh_interval": 0}, "optimizer_options.refresh_interval"),
    ("kfac", {"refresh_interval": 2.5}, "optimizer_options.refresh_interval"),
    ("kfac", {"refresh_intervall": 5}, "optimizer_options.refresh_intervall"),
    ("kfac", {"factor_dtype_bytes": 3}, "optimizer_options.factor_dtype_bytes"),
    ("kfac", {"inverse": "lu"}, "optimizer_options.inverse"),
    ("kfac", {"inversion_efficiency": 0}, "optimizer_options.inversion_efficiency"),
    ("kfac", {"inversion_efficiency": 1.5}, "optimizer_options.inversion_efficiency"),
    ("kfac", {"amortise_over_iterations": 0}, "optimizer_options.amortise_over_iterations"),
    ("kfac", {"refresh_schedule": [[0, 1], [0, 5]]}, "optimizer_options.refresh_schedule[1].iteration"),
    ("kfac", {"refresh_schedule": [[0, -3]]}, "optimizer_options.refresh_schedule[0].interval"),
    ("kfac", {"refresh_schedule": "often"}, "optimizer_options.refresh_schedule"),
    ("sgd", {"refresh_interval": 10}, "optimizer_options.refresh_interval"),
    ("lars", {"exclude_bn_bias": "yes"}, "optimizer_options.exclude_bn_bias"),
    ("sgd", {"launch_overhead_s": -1e-6}, "optimizer_options.launch_overhead_s"),
])
def test_bad_option_names_the_option(name, options, field):
    with pytest.raises(ConfigError) as e:
        optimizer_cost(name, toy_net(), per_device_batch=32, ranks=4, comm=CommSpy(), options=options,
                       source="run.toml", **DEV)
    assert e.value.field == field and e.value.source == "run.toml"
    assert str(e.value).startswith(f"run.toml: field '{field}'")


@pytest.mark.parametrize("kw,field", [
    ({"efficiency": 1.5}, "efficiency"), ({"efficiency": 0}, "efficiency"), ({"ranks": 0}, "ranks"),
    ({"per_device_batch": 2.5}, "per_device_batch"), ({"mem_bw_Bps": -1.0}, "mem_bw_Bps"),
    ({"peak_flops": float("nan")}, "peak_flops"),
])
def test_bad_device_inputs(kw, field):
    args = dict(per_device_batch=32, ranks=4, comm=CommSpy(), **DEV)
    args.update(kw)
    with pytest.raises(ConfigError) as e:
        optimizer_cost("sgd", toy_net(), **args)
    assert e.value.field == field


def test_malformed_layer_records_raise_spec_error():
    layers = toy_net()
    del layers[0]["params"]
    with pytest.raises(SpecError, match=r"layers\[0\]\.params"):
        cost("sgd", layers)
    layers = toy_net()
    del layers[0]["shape"]["out_hw"]
    with pytest.raises(SpecError, match="out_hw"):
        cost("kfac", layers)


# ------------------------------------------------------------------------------------------------ plumbing


def test_one_rank_never_calls_comm():
    def boom(kind, nbytes, p):
        raise AssertionError("comm called with one rank")
    c = optimizer_cost("kfac", toy_net(), per_device_batch=8, ranks=1, comm=boom, **DEV)
    assert c.extra_comm_s == 0.0


def test_result_is_frozen_and_serialisable():
    c = cost("kfac", toy_net())
    assert isinstance(c, OptimizerCost)
    with pytest.raises(Exception):
        c.update_s = 0.0
    out = json.loads(json.dumps(c.to_dict()))
    assert out["total_s"] == pytest.approx(c.total_s)
    assert set(out) >= {"optimizer", "update_s", "extra_compute_s", "extra_comm_s", "inversion_s", "total_s",
                        "memory_bytes", "details"}
    assert all(isinstance(v, float) for v in c.details.values())
    assert math.isclose(c.total_s, c.update_s + c.extra_compute_s + c.extra_comm_s + c.inversion_s)


def test_optimizers_do_not_import_torch():
    code = "import sys, perfmodel.optimizers; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_executor_option_keys_match_the_cost_models_ignore_lists():
    """The cost models accept (and ignore) exactly the keys the real optimizers and the schedule define."""
    from executor.optim import EXECUTOR_OPTIONS, SCHEDULE_OPTIONS
    from perfmodel.optimizers.base import IMPLEMENTATION_OPTION_KEYS, SCHEDULE_OPTION_KEYS

    assert set(SCHEDULE_OPTIONS) == SCHEDULE_OPTION_KEYS
    assert {k: set(v) for k, v in EXECUTOR_OPTIONS.items()} == {k: set(v) for k, v in IMPLEMENTATION_OPTION_KEYS.items()}


def test_implementation_options_do_not_change_cost_and_are_accepted():
    from perfmodel.optimizers import optimizer_cost

    layers = [{"name": "fc", "type": "Linear", "params": 110, "param_bytes": 440,
               "shape": {"in_features": 10, "out_features": 10, "bias": True}}]
    kw = dict(per_device_batch=8, ranks=2, peak_flops=1e12, efficiency=0.5, mem_bw_Bps=1e11,
              comm=lambda kind, n, p: 1e-6 + n / 1e9)
    base = optimizer_cost("kfac", layers, **kw)
    with_impl = optimizer_cost("kfac", layers, options={"damping": 0.01, "lr_peak": 3.2, "stat_decay": 0.9}, **kw)
    assert with_impl.total_s == base.total_s
