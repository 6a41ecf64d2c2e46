"""Tests of perfmodel.compute (the roofline with an efficiency curve, against hand computations on a
synthetic two-layer table and a synthetic device) and perfmodel.overlap (gradient bucketing and the
bucket-allreduce / backward timeline, against hand-computed timelines and invariants).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.specs import DeviceSpec, EfficiencyCurve, FrozenMap, MemorySpec
from perfmodel.compute import LayerTimes, device_rates, layer_times
from perfmodel.overlap import assign_buckets, overlap_schedule
from perfmodel.workload import parse_workload

# ---------------------------------------------------------------------------------------------------------
# synthetic table and device
# ---------------------------------------------------------------------------------------------------------
PEAK32, PEAK16 = 10e12, 80e12           # FLOP/s
EFF32 = EfficiencyCurve(0.5, 8.0)       # eff(b) = 0.5 b / (b + 8)
EFF16 = EfficiencyCurve(0.25, 4.0)
MEM_BW = 1e12                           # B/s

# layer "conv": compute-bound at every batch; layer "bn": memory-bound at every batch
LAYERS = [
    dict(name="conv", type="Conv2d", params=1000, param_bytes=4000, flops_fwd=2e9, flops_bwd_input=2e9,
         flops_bwd_weight=3e9, act_out_bytes=5e5, mem_bytes_fwd=1e6, mem_bytes_bwd=2e6, grad_ready_index=1,
         shape={}),
    dict(name="bn", type="BatchNorm2d", params=10, param_bytes=40, flops_fwd=1e6, flops_bwd_input=3e6,
         flops_bwd_weight=1e6, act_out_bytes=5e5, mem_bytes_fwd=4e8, mem_bytes_bwd=8e8, grad_ready_index=0,
         shape={}),
]


def make_table(layers=LAYERS):
    keys = ["params", "param_bytes", "flops_fwd", "flops_bwd_input", "flops_bwd_weight", "mem_bytes_fwd",
            "mem_bytes_bwd"]
    totals = {k: sum(layer[k] for layer in layers) for k in keys}
    totals["act_bytes"] = sum(layer["act_out_bytes"] for layer in layers)
    totals["flops_bwd"] = totals["flops_bwd_input"] + totals["flops_bwd_weight"]
    return parse_workload({"schema": "ttt-workload/1", "model": "synthetic", "dataset": "imagenet",
                           "input_shape": [3, 8, 8], "num_classes": 10, "per": "image", "totals": totals,
                           "layers": layers}, "<test>")


def make_device(eff16=EFF16):
    eff = {"fp32": EFF32}
    if eff16 is not None:
        eff["fp16"] = eff16
    return DeviceSpec(id="synthetic-gpu", name="synthetic", kind="gpu", cores=1, clock_hz=1e9,
                      peak_flops=FrozenMap(fp32=PEAK32, fp16=PEAK16),
                      memories=FrozenMap(hbm=MemorySpec("hbm", 16 * 2**30, MEM_BW)), memory_mode=None,
                      efficiency=FrozenMap(eff), sources=FrozenMap(), source_file="<test>")


TABLE = make_table()
DEV = make_device()


def eff(curve, b):
    return curve.eff_max * b / (b + curve.batch_half)


def roofline(flops, nbytes, b, peak, curve, act_scale=1.0):
    """Hand formula: max(FLOP b / (peak eff(b)), bytes * scale * b / bw)."""
    return max(flops * b / (peak * eff(curve, b)), nbytes * act_scale * b / MEM_BW)


# ---------------------------------------------------------------------------------------------------------
# compute
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("b", [1, 2, 7, 32, 256])
def test_layer_times_equal_hand_roofline_fp32(b):
    lt = layer_times(TABLE, DEV, b)
    assert isinstance(lt, LayerTimes) and lt.fwd_s.shape == (1, 2)
    conv, bn = LAYERS
    # conv: compute-bound; backward memory split in proportion to FLOP (2 : 3)
    exp_fwd = [roofline(conv["flops_fwd"], conv["mem_bytes_fwd"], b, PEAK32, EFF32),
               roofline(bn["flops_fwd"], bn["mem_bytes_fwd"], b, PEAK32, EFF32)]
    exp_in = [roofline(conv["flops_bwd_input"], conv["mem_bytes_bwd"] * 2 / 5, b, PEAK32, EFF32),
              roofline(bn["flops_bwd_input"], bn["mem_bytes_bwd"] * 3 / 4, b, PEAK32, EFF32)]
    exp_w = [roofline(conv["flops_bwd_weight"], conv["mem_bytes_bwd"] * 3 / 5, b, PEAK32, EFF32),
             roofline(bn["flops_bwd_weight"], bn["mem_bytes_bwd"] * 1 / 4, b, PEAK32, EFF32)]
    np.testing.assert_allclose(lt.fwd_s[0], exp_fwd, rtol=1e-12)
    np.testing.assert_allclose(lt.bwd_input_s[0], exp_in, rtol=1e-12)
    np.testing.assert_allclose(lt.bwd_weight_s[0], exp_w, rtol=1e-12)
    np.testing.assert_allclose(lt.bwd_s, lt.bwd_input_s + lt.bwd_weight_s, rtol=0)
    assert lt.forward_total_s[0] == pytest.approx(sum(exp_fwd), rel=1e-12)
    assert lt.backward_total_s[0] == pytest.approx(sum(exp_in) + sum(exp_w), rel=1e-12)
    # which side of the roofline each layer is on
    assert lt.fwd_s[0, 0] == pytest.approx(conv["flops_fwd"] * b / (PEAK32 * eff(EFF32, b)), rel=1e-12)
    assert lt.fwd_s[0, 1] == pytest.approx(bn["mem_bytes_fwd"] * b / MEM_BW, rel=1e-12)


def test_compute_bound_to_memory_bound_switch():
    """A layer with F = 1e9 FLOP and M = 4e8 B per image: compute time per image 2e-4 (b+8)/b s, memory
    time 4e-4 s; the two meet at b = 8: compute-bound below, memory-bound above."""
    layer = dict(LAYERS[0], name="x", flops_fwd=1e9, mem_bytes_fwd=4e8, grad_ready_index=0)
    table = make_table([layer])
    for b in [1, 2, 4, 7]:
        t = layer_times(table, DEV, b).fwd_s[0, 0]
        assert t == pytest.approx(1e9 * b / (PEAK32 * eff(EFF32, b)), rel=1e-12)
        assert t > 4e8 * b / MEM_BW
    for b in [9, 16, 64, 1024]:
        t = layer_times(table, DEV, b).fwd_s[0, 0]
        assert t == pytest.approx(4e8 * b / MEM_BW, rel=1e-12)
        assert t > 1e9 * b / (PEAK32 * eff(EFF32, b))
    assert layer_times(table, DEV, 8).fwd_s[0, 0] == pytest.approx(4e8 * 8 / MEM_BW, rel=1e-12)


@pytest.mark.parametrize("b", [1, 16, 128])
def test_fp16_uses_fp16_peak_curve_and_half_activation_bytes(b):
    lt = layer_times(TABLE, DEV, b, precision="fp16")
    conv, bn = LAYERS
    assert lt.fwd_s[0, 0] == pytest.approx(conv["flops_fwd"] * b / (PEAK16 * eff(EFF16, b)), rel=1e-12)
    assert lt.fwd_s[0, 1] == pytest.approx(bn["mem_bytes_fwd"] * 0.5 * b / MEM_BW, rel=1e-12)
    exp_in_bn = roofline(bn["flops_bwd_input"], bn["mem_bytes_bwd"] * 3 / 4, b, PEAK16, EFF16, 0.5)
    assert lt.bwd_input_s[0, 1] == pytest.approx(exp_in_bn, rel=1e-12)
    # fp16 is faster than fp32 on both sides of the roofline here
    lt32 = layer_times(TABLE, DEV, b)
    assert np.all(lt.fwd_s < lt32.fwd_s)


def test_fp16_without_curve_is_a_spec_error():
    from hardware.errors import SpecError
    with pytest.raises(SpecError) as ei:
        layer_times(TABLE, make_device(eff16=None), 32, precision="fp16")
    assert ei.value.field == "efficiency.fp16"


def test_efficiency_override():
    curve = EfficiencyCurve(1.0, 0.0)  # full peak at every batch
    lt = layer_times(TABLE, DEV, 4, efficiency=curve)
    assert lt.fwd_s[0, 0] == pytest.approx(LAYERS[0]["flops_fwd"] * 4 / PEAK32, rel=1e-12)


def test_vectorised_over_batch_equals_scalar_calls():
    batches = np.array([1, 3, 8, 32, 100, 4096])
    vec = layer_times(TABLE, DEV, batches)
    assert vec.fwd_s.shape == (len(batches), 2)
    for i, b in enumerate(batches):
        one = layer_times(TABLE, DEV, int(b))
        for name in ("fwd_s", "bwd_input_s", "bwd_weight_s"):
            np.testing.assert_allclose(getattr(vec, name)[i], getattr(one, name)[0], rtol=1e-15)
    flops, bw = device_rates(DEV, "fp32", batches)
    np.testing.assert_allclose(flops, PEAK32 * eff(EFF32, batches.astype(float)), rtol=1e-15)
    assert bw == MEM_BW


def test_time_per_image_falls_with_batch_and_total_rises():
    batches = np.array([1, 2, 4, 8, 16, 32, 64, 128])
    lt = layer_times(TABLE, DEV, batches)
    total = lt.forward_total_s + lt.backward_total_s
    assert np.all(np.diff(total) > 0)
    assert np.all(np.diff(total / batches) <= 1e-18)


def test_real_table_runs_on_catalog_device():
    from hardware.catalog import load_device
    from perfmodel.workload import load_workload
    table = load_workload("resnet50")
    dev = load_device("v100-sxm2")
    lt = layer_times(table, dev, [32])
    fwd = lt.forward_total_s[0]
    # no layer runs faster than its FLOP at peak
    assert fwd >= table.totals.flops_fwd * 32 / dev.peak_flops_for("fp32")
    assert np.all(np.isfinite(lt.fwd_s)) and np.all(lt.fwd_s >= 0)


# ---------------------------------------------------------------------------------------------------------
# bucketing
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sizes, cap, expect", [
    ([10, 10, 10, 10], 20, [0, 0, 1, 1]),           # exact fill closes the bucket
    ([10, 10, 10], 20, [0, 0, 1]),                  # last bucket takes what is left
    ([50, 5, 5], 20, [0, 1, 1]),                    # oversize gradient: a bucket of its own
    ([5, 50, 5, 5], 20, [0, 0, 1, 1]),              # ... or it closes the current one
    ([5, 5, 50], 20, [0, 0, 0]),
    ([1, 2, 3, 4], 100, [0, 0, 0, 0]),              # one bucket when the cap exceeds the total
    ([1, 2, 3, 4], 10, [0, 0, 0, 0]),               # exactly the total: one bucket
    ([1, 2, 3, 4], float("inf"), [0, 0, 0, 0]),
    ([1, 2, 3, 4], 0.5, [0, 1, 2, 3]),              # tiny cap: one gradient per bucket
    ([], 10, []),
])
def test_assign_buckets_closed_cases(sizes, cap, expect):
    out = assign_buckets(np.array(sizes, dtype=float), cap)
    assert out.dtype.kind == "i"
    assert out.tolist() == expect


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1e8), min_size=1, max_size=60), st.floats(1.0, 2e8))
def test_assign_buckets_rule(sizes, cap):
    sizes = np.array(sizes)
    out = assign_buckets(sizes, cap)
    assert out[0] == 0 and set(np.diff(out).tolist()) <= {0, 1}
    K = out[-1] + 1
    held = np.bincount(out, weights=sizes, minlength=K)
    assert np.all(held[:-1] >= cap)                  # every bucket but the last is full
    for k in range(K):                               # ... and closed as soon as it was
        members = sizes[out == k]
        assert members[:-1].sum() < cap


# ---------------------------------------------------------------------------------------------------------
# overlap schedule
# ---------------------------------------------------------------------------------------------------------
def test_hand_computed_timeline():
    # backward order: layer times 1, 2 (no gradient), 0.5, 3; buckets 0, -, 0, 1
    bwd = [1.0, 2.0, 0.5, 3.0]
    lb = [0, -1, 0, 1]
    comm = [4.0, 1.0]
    r = overlap_schedule(bwd, lb, comm)
    # bucket 0 ready at 3.5, runs 3.5 -> 7.5; bucket 1 ready at 6.5, waits for bucket 0, runs 7.5 -> 8.5
    np.testing.assert_allclose(r.bucket_ready_s, [[3.5, 6.5]])
    np.testing.assert_allclose(r.bucket_start_s, [[3.5, 7.5]])
    np.testing.assert_allclose(r.comm_end_s, [8.5])
    np.testing.assert_allclose(r.backward_s, [6.5])
    np.testing.assert_allclose(r.comm_total_s, [5.0])
    np.testing.assert_allclose(r.comm_exposed_s, [2.0])
    off = overlap_schedule(bwd, lb, comm, overlap=False)
    np.testing.assert_allclose(off.bucket_start_s, [[6.5, 10.5]])
    np.testing.assert_allclose(off.comm_exposed_s, [5.0])


def test_hidden_communication_and_last_bucket_exposed():
    # bucket 1 is ready at 6.5 = end of backward, so its 0.5 s are always exposed
    r = overlap_schedule([1.0, 2.0, 0.5, 3.0], [0, -1, 0, 1], [1.0, 0.5])
    np.testing.assert_allclose(r.bucket_start_s, [[3.5, 6.5]])
    np.testing.assert_allclose(r.comm_exposed_s, [0.5])
    # parameter-free layers at the end of backward hide everything that fits before them
    r = overlap_schedule([1.0, 1.0, 5.0], [0, 1, -1], [1.0, 1.0])
    np.testing.assert_allclose(r.bucket_start_s, [[1.0, 2.0]])
    np.testing.assert_allclose(r.comm_end_s, [3.0])
    np.testing.assert_allclose(r.comm_exposed_s, [0.0])


def test_vectorised_configurations():
    bwd = np.array([[1.0, 2.0, 0.5, 3.0], [2.0, 4.0, 1.0, 6.0]])
    comm = np.array([[4.0, 1.0], [4.0, 1.0]])
    r = overlap_schedule(bwd, [0, -1, 0, 1], comm)
    np.testing.assert_allclose(r.comm_exposed_s, [2.0, 1.0])   # second: ready 7, 13; runs 7-11, 13-14
    np.testing.assert_allclose(r.backward_s, [6.5, 13.0])
    # one comm row broadcast over several backward rows
    r2 = overlap_schedule(bwd, [0, -1, 0, 1], comm[0])
    np.testing.assert_allclose(r2.comm_exposed_s, r.comm_exposed_s)


def test_zero_comm_zero_exposed():
    r = overlap_schedule([1.0, 2.0, 3.0], [0, 1, 2], [0.0, 0.0, 0.0])
    assert r.comm_exposed_s[0] == 0.0 and r.comm_total_s[0] == 0.0
    r = overlap_schedule([1.0, 2.0, 3.0], [0, 1, 2], [0.0, 0.0, 0.0], overlap=False)
    assert r.comm_exposed_s[0] == 0.0


def test_bad_layer_bucket():
    with pytest.raises(ValueError):
        overlap_schedule([1.0, 2.0], [0, 0, 1], [1.0, 1.0])
    with pytest.raises(ValueError):
        overlap_schedule([1.0, 2.0], [0, 2], [1.0, 1.0, 1.0])  # bucket 1 holds no layer


@st.composite
def schedules(draw):
    L = draw(st.integers(1, 12))
    bwd = draw(st.lists(st.floats(0.0, 10.0), min_size=L, max_size=L))
    has = draw(st.lists(st.booleans(), min_size=L, max_size=L))
    has[draw(st.integers(0, L - 1))] = True
    lb, k = [], -1
    for h in has:
        if h:
            k += draw(st.integers(0, 1)) if k >= 0 else 1
            lb.append(k)
        else:
            lb.append(-1)
    comm = draw(st.lists(st.floats(0.0, 10.0), min_size=k + 1, max_size=k + 1))
    return np.array(bwd), np.array(lb), np.array(comm)


@settings(max_examples=200, deadline=None)
@given(schedules(), st.floats(1.0, 10.0))
def test_overlap_invariants(sched, slow):
    bwd, lb, comm = sched
    on = overlap_schedule(bwd, lb, comm)
    off = overlap_schedule(bwd, lb, comm, overlap=False)
    total = comm.sum()
    assert on.comm_total_s[0] == pytest.approx(total)
    assert 0.0 <= on.comm_exposed_s[0] <= total + 1e-9
    assert off.comm_exposed_s[0] == pytest.approx(total)
    assert on.comm_exposed_s[0] <= off.comm_exposed_s[0] + 1e-9
    assert on.comm_exposed_s[0] == pytest.approx(max(on.comm_end_s[0] - on.backward_s[0], 0.0))
    # starts respect readiness and the one-collective-at-a-time rule
    assert np.all(on.bucket_start_s[0] >= on.bucket_ready_s[0] - 1e-12)
    assert np.all(on.bucket_start_s[0, 1:] >= on.bucket_start_s[0, :-1] + comm[:-1] - 1e-9)
    # a slower backward with the same comm never exposes more
    slower = overlap_schedule(bwd * slow, lb, comm)
    assert slower.comm_exposed_s[0] <= on.comm_exposed_s[0] + 1e-9


def test_exposed_non_increasing_along_slowdown_path():
    bwd = np.array([0.3, 0.1, 0.2, 0.4, 0.25, 0.05])
    lb = np.array([0, 0, 1, -1, 2, 2])
    comm = np.array([0.5, 0.3, 0.2])
    scales = np.linspace(0.1, 20.0, 60)
    r = overlap_schedule(bwd[None, :] * scales[:, None], lb, comm)
    assert np.all(np.diff(r.comm_exposed_s) <= 1e-12)
    # fast backward (x0.1): buckets ready at 0.04, 0.06, 0.13; back to back from 0.04 to 1.04
    assert r.comm_exposed_s[0] == pytest.approx(1.04 - 0.13, rel=1e-12)
    # very slow backward: only the last bucket (ready at the end) is exposed
    assert r.comm_exposed_s[-1] == pytest.approx(comm[-1])
