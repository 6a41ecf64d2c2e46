"""Tests of perfmodel.collectives: closed forms against the textbook formulas (PAPERS.md section 6),
invariants, step patterns priced on a uniform fake fabric, auto selection, bandwidth metrics, bad input.
"""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

import perfmodel.collectives as C
from hardware.errors import ConfigError
from perfmodel.collectives import (ALGORITHMS, AUTO_CANDIDATES, BinaryTree, DoubleBinaryTree, Fabric,
                                   HalvingDoubling, Hierarchical, NetParams, ParameterServer, Ring,
                                   Torus2D, per_rank_send_frac)
from perfmodel.collectives.tree import _depth_height, dbt_loads, nccl_double_tree

A, B, G = 5e-6, 1e-10, 2e-11  # 5 us, 10 GB/s, 50 GB/s reduction
NET = NetParams(A, B, G)
P_ALL = [2, 3, 4, 5, 6, 7, 8, 12, 16, 31, 32, 64, 100, 127, 128, 1000, 1023, 1024]
SIZES = np.logspace(3, 9, 13)  # 1 KB .. 1 GB
P_FABRIC = [2, 3, 4, 5, 7, 8, 16, 64, 1000, 1024]
REL = 1e-9


# ---------------------------------------------------------------------------------------------------------
# independent textbook references (scalar, plain math)
# ---------------------------------------------------------------------------------------------------------
def lg_floor(p):
    return p.bit_length() - 1


def lg_ceil(p):
    return (p - 1).bit_length()


def ref_ring(p, n, a=A, b=B, g=G):
    return 2 * (p - 1) * a + 2 * (p - 1) / p * n * b + (p - 1) / p * n * g


def ref_rd(p, n, a=A, b=B, g=G):
    if p & (p - 1) == 0:
        return math.log2(p) * (a + n * b + n * g)
    q = 2 ** lg_floor(p)  # MPICH: fold to q, recursive doubling, unfold
    return (a + n * b + n * g) + math.log2(q) * (a + n * b + n * g) + (a + n * b)


def ref_hd(p, n, a=A, b=B, g=G):
    q = 2 ** lg_floor(p)
    t = 2 * math.log2(q) * a + 2 * (q - 1) / q * n * b + (q - 1) / q * n * g
    return t if q == p else t + 2 * a + 2 * n * b + n * g


def ref_tree(p, n, a=A, b=B, g=G):
    L = lg_ceil(p)
    return 2 * L * (a + n * b) + L * n * g


def dbt_m(p):
    return {1: (0, 0, 0), 2: (2, 1, 1), 3: (3, 2, 2)}.get(p, (4, 2, 2))


def ref_dbt(p, n, a=A, b=B, g=G, kmax=1 << 16):
    """Brute-force minimum over the segment count of the pipelined up-down schedule's upper bound."""
    m, _, mg = dbt_m(p)
    H = lg_ceil(p)
    k = np.arange(1, kmax + 1, dtype=float)
    return float(np.min((k + 2 * H - 1) * (a + n / (2 * k) * (m * b + mg * g))))


def ref_hier(p, n, rpn, intra, inter, nics=1, inter_ref=ref_ring):
    L = min(p, rpn)
    N = -(-p // L)
    share = L / min(L, nics)
    ia, ib, ig = intra
    ea, eb, eg = inter
    rs = (L - 1) * ia + (L - 1) / L * n * (ib + ig)
    ag = (L - 1) * ia + (L - 1) / L * n * ib
    return rs + ag + (inter_ref(N, n / L, ea, eb * share, eg) if N > 1 else 0.0)


def ref_torus(p, n, px, a=A, b=B, g=G):
    py = p // px
    x = (px - 1) * (2 * a + 2 * n / px * b + n / px * g)
    return x + (ref_ring(py, n / px, a, b, g) if py > 1 else 0.0)


def ref_ps(p, n, S, a=A, b=B, g=G):
    load = max(n, p * n / S)
    return 2 * a + 2 * load * b + (p - 1) * n / S * g


def ref_square(p):
    d = max(c for c in range(1, int(math.isqrt(p)) + 1) if p % c == 0)
    return p // d


REFERENCES = {
    "ring": ref_ring,
    "recursive_doubling": ref_rd,
    "halving_doubling": ref_hd,
    "binary_tree": ref_tree,
    "double_binary_tree": ref_dbt,
    "hierarchical": lambda p, n: ref_ring(p, n),  # flat network: ranks_per_node = 1 -> inter ring on p nodes
    "torus2d": lambda p, n: ref_torus(p, n, ref_square(p)),
    "parameter_server": lambda p, n: ref_ps(p, n, p),
}


def uniform_flow_time(alpha, beta):
    """Fake fabric: alpha + bytes * beta * (most flows sharing one sender or one receiver)."""
    def flow_time(pairs, nbytes):
        pairs = np.asarray(pairs)
        if len(pairs) == 0:
            return 0.0
        load = max(np.bincount(pairs[:, 0]).max(), np.bincount(pairs[:, 1]).max())
        return alpha + nbytes * beta * load
    return flow_time


def close(x, y, rel=REL):
    return np.allclose(x, y, rtol=rel, atol=0.0)


# ---------------------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------------------
def test_registry_names():
    assert set(ALGORITHMS) == {"ring", "recursive_doubling", "halving_doubling", "binary_tree",
                               "double_binary_tree", "hierarchical", "torus2d", "parameter_server"}
    for name, alg in ALGORITHMS.items():
        assert alg.name == name and C.get_algorithm(name) is alg
    assert C.get_algorithm("auto") is C.AUTO
    assert "parameter_server" not in AUTO_CANDIDATES and len(AUTO_CANDIDATES) == 7


def test_no_torch_or_mpi4py_import():
    code = ("import sys, perfmodel.collectives as C; C.allreduce_time('auto', 8, 1e6, C.NetParams(1e-6, 1e-9));"
            "bad = [m for m in ('torch', 'mpi4py') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------------------
# closed forms == textbook formulas
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(REFERENCES))
def test_closed_form_matches_textbook(name):
    p = np.array(P_ALL)[:, None]
    got = C.allreduce_time(name, p, SIZES[None, :], NET)
    assert got.shape == (len(P_ALL), len(SIZES))
    want = np.array([[REFERENCES[name](int(pp), float(n)) for n in SIZES] for pp in P_ALL])
    assert close(got, want), name
    # scalar inputs give a scalar
    t = ALGORITHMS[name].allreduce_time(6, 1e6, NET)
    assert np.ndim(t) == 0 and math.isclose(float(t), REFERENCES[name](6, 1e6), rel_tol=REL)


def test_p_equal_one_costs_nothing():
    for name in [*ALGORITHMS, "auto"]:
        assert C.allreduce_time(name, 1, 1e9, NET) == 0.0


def test_other_collectives_match_textbook():
    p = np.array(P_ALL)[:, None]
    n = SIZES[None, :]
    pf, q = p.astype(float), 2.0 ** np.floor(np.log2(p))
    lq = np.log2(q)
    r = (q != p)
    # ring
    assert close(C.reduce_scatter_time("ring", p, n, NET), (pf - 1) * A + (pf - 1) / pf * n * (B + G))
    assert close(C.allgather_time("ring", p, n, NET), (pf - 1) * A + (pf - 1) / pf * n * B)
    # halving/doubling (powers of two: textbook; others: documented pre/post step)
    rs = lq * A + (q - 1) / q * n * (B + G) + r * (2 * A + n * (B + G) + n / pf * B)
    ag = lq * A + (q - 1) / q * n * B + r * (2 * A + n * B + n / pf * B)
    assert close(C.reduce_scatter_time("halving_doubling", p, n, NET), rs)
    assert close(C.allgather_time("halving_doubling", p, n, NET), ag)
    assert close(C.reduce_time("halving_doubling", p, n, NET), 2 * lq * A + (q - 1) / q * n * (2 * B + G)
                 + r * (A + n * (B + G)))
    assert close(C.broadcast_time("halving_doubling", p, n, NET), 2 * lq * A + 2 * (q - 1) / q * n * B
                 + r * (A + n * B))
    # binomial tree
    L = np.array([lg_ceil(int(x)) for x in P_ALL])[:, None]
    assert close(C.reduce_time("binary_tree", p, n, NET), L * (A + n * (B + G)))
    assert close(C.broadcast_time("binary_tree", p, n, NET), L * (A + n * B))
    # RS + AG == allreduce for ring and (powers of two) halving/doubling
    for name in ("ring", "halving_doubling"):
        pw = np.array([2, 4, 64, 1024])[:, None]
        assert close(C.reduce_scatter_time(name, pw, n, NET) + C.allgather_time(name, pw, n, NET),
                     C.allreduce_time(name, pw, n, NET))


def test_flat_algorithms_pick_intra_or_inter_link():
    intra, inter = NetParams(1e-6, 1e-11, G), NetParams(A, B, G)
    fab = Fabric(intra, inter, ranks_per_node=8)
    for name in ("ring", "recursive_doubling", "halving_doubling", "binary_tree", "double_binary_tree"):
        assert C.allreduce_time(name, 8, 1e6, fab) == C.allreduce_time(name, 8, 1e6, intra)
        assert C.allreduce_time(name, 9, 1e6, fab) == C.allreduce_time(name, 9, 1e6, inter)


# ---------------------------------------------------------------------------------------------------------
# invariants
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [*ALGORITHMS, "auto"])
def test_monotone_in_size_and_parameters(name):
    fab = Fabric(NetParams(1e-6, 1 / 150e9, G), NetParams(A, B, G), ranks_per_node=8)
    p = np.array(P_ALL)[:, None]
    n = np.logspace(0, 9.5, 300)[None, :]
    for net in (NET, fab):
        t = C.allreduce_time(name, p, n, net)
        assert np.all(np.diff(t, axis=1) >= -1e-15 * t[:, 1:]), name
        assert np.all(t > 0)
    base = C.allreduce_time(name, p, n, NET)
    for bigger in (NetParams(2 * A, B, G), NetParams(A, 2 * B, G), NetParams(A, B, 2 * G)):
        assert np.all(C.allreduce_time(name, p, n, bigger) >= base * (1 - 1e-12))
    assert np.all(C.allreduce_time(name, p, n, NetParams(2 * A, 2 * B, 2 * G)) > base)


@pytest.mark.parametrize("name", ["ring", "halving_doubling"])
def test_bandwidth_term_tends_to_2nbeta(name):
    net = NetParams(0.0, B, 0.0)
    n = 1e8
    ps = np.array([2, 4, 16, 64, 256, 1024])
    ratio = C.allreduce_time(name, ps, n, net) / (2 * n * B)
    assert close(ratio, (ps - 1) / ps)
    assert np.all(np.diff(ratio) > 0) and abs(ratio[-1] - 1) < 1e-3


def test_recursive_doubling_vs_ring_crossover():
    p = 1024
    small = C.allreduce_time("recursive_doubling", p, 1e3, NET), C.allreduce_time("ring", p, 1e3, NET)
    large = C.allreduce_time("recursive_doubling", p, 1e9, NET), C.allreduce_time("ring", p, 1e9, NET)
    assert small[0] < small[1] / 10   # ~10 latencies vs ~2000
    assert large[0] > large[1] * 4    # log2(p) n beta vs 2 n beta


def test_halving_doubling_beats_ring_at_32_servers():
    """Goyal et al.: halving/doubling ~3x faster than ring between 32 servers (latency-bound buckets)."""
    net = NetParams(20e-6, 8 / 50e9, 0.0)  # 50 Gbit/s Ethernet
    for n in (1e4, 1e5):
        assert C.allreduce_time("ring", 32, n, net) / C.allreduce_time("halving_doubling", 32, n, net) > 2.5


def test_double_binary_tree_limits():
    net = NetParams(1e-6, B, 0.0)
    for p in (64, 1000, 1024):
        H = lg_ceil(p)
        # tiny message: one segment, ~2 H alpha
        assert math.isclose(C.allreduce_time("double_binary_tree", p, 1.0, net), 2 * H * (1e-6 + 2 * B),
                            rel_tol=1e-9)
        # huge message: bandwidth term -> 2 n beta (within a few %), far below the binomial tree's 2 H n beta
        n = 1e10
        t = C.allreduce_time("double_binary_tree", p, n, net)
        assert 2 * n * B < t < 1.05 * 2 * n * B
    # gamma: -> n gamma on top
    t = C.allreduce_time("double_binary_tree", 64, 1e10, NetParams(1e-6, B, G))
    assert 2e10 * B + 1e10 * G < t < 1.05 * (2e10 * B + 1e10 * G)


def test_double_binary_tree_fixed_segments():
    alg = DoubleBinaryTree(segment_bytes=1 << 20)
    m, _, mg = dbt_loads(64)
    for n in (1e3, 3e6, 1e9):
        k = max(1, math.ceil(n / (2 << 20)))
        want = (k + 2 * 6 - 1) * (A + n / (2 * k) * (m * B + mg * G))
        assert math.isclose(alg.allreduce_time(64, n, NET), want, rel_tol=REL)
    # the optimal segment count is never worse than a fixed one
    n = np.logspace(3, 9, 50)
    assert np.all(C.allreduce_time("double_binary_tree", 64, n, NET) <= alg.allreduce_time(64, n, NET) * (1 + 1e-12))


def test_auto_is_elementwise_minimum():
    fab = Fabric(NetParams(1e-6, 1 / 150e9, G), NetParams(A, B, G), ranks_per_node=8)
    p = np.array(P_ALL)[:, None]
    n = np.logspace(2, 9.5, 40)[None, :]
    for net in (NET, fab):
        all_t = np.stack([C.allreduce_time(k, p, n, net) for k in AUTO_CANDIDATES])
        t, idx = C.auto_allreduce(p, n, net)
        assert close(t, all_t.min(axis=0), rel=0) and np.array_equal(idx, all_t.argmin(axis=0))
        assert close(C.allreduce_time("auto", p, n, net), all_t.min(axis=0), rel=0)
        names = C.choose(p, n, net)
        assert np.array_equal(names, np.array(AUTO_CANDIDATES)[idx])
    # like MPI libraries: latency-optimal for small messages, bandwidth-optimal for large ones
    assert C.choose(1024, 1e2, NET) == "recursive_doubling"
    assert C.choose(1024, 1e9, NET) in ("ring", "halving_doubling", "torus2d", "double_binary_tree")
    # restricted candidates
    t, idx = C.auto_allreduce(64, [1e3, 1e9], NET, candidates=["ring", "recursive_doubling"])
    assert list(idx) == [1, 0]
    assert close(t, [C.allreduce_time("recursive_doubling", 64, 1e3, NET), C.allreduce_time("ring", 64, 1e9, NET)])


def test_hierarchical_beats_flat_ring_on_nvlink_nodes():
    """8 P100 per node on NVLink (~150 GB/s), 50 Gbit/s Ethernet between nodes (Goyal et al.)."""
    intra, inter = (1e-6, 1 / 150e9, 0.0), (20e-6, 8 / 50e9, 0.0)
    fab = Fabric(NetParams(*intra), NetParams(*inter), ranks_per_node=8)
    for p in (16, 64, 256):
        for n in (1e5, 1e7, 1e8):
            flat = C.allreduce_time("ring", p, n, fab)
            hier = C.allreduce_time("hierarchical", p, n, fab)
            assert math.isclose(flat, ref_ring(p, n, *inter), rel_tol=REL)
            assert math.isclose(hier, ref_hier(p, n, 8, intra, inter), rel_tol=REL)
            assert flat / hier > 1.0
    # the formula's ratio at 256 ranks and 100 KB: 510 inter latencies vs 62 + 14 intra
    p, n = 256, 1e5
    ratio = C.allreduce_time("ring", p, n, fab) / C.allreduce_time("hierarchical", p, n, fab)
    want = ref_ring(p, n, *inter) / (2 * 7 * 1e-6 + 2 * 7 / 8 * n / 150e9 + ref_ring(32, n, *inter))
    assert math.isclose(ratio, want, rel_tol=REL) and ratio > 5
    # with one NIC per GPU the inter-node volume falls by 8 as well
    fab8 = Fabric(NetParams(*intra), NetParams(*inter), ranks_per_node=8, nics_per_node=8)
    assert math.isclose(C.allreduce_time("hierarchical", 256, 1e8, fab8),
                        ref_hier(256, 1e8, 8, intra, inter, nics=8), rel_tol=REL)


def test_hierarchical_variants_and_inter_algorithm():
    intra, inter = (1e-6, 1 / 150e9, G), (A, B, G)
    fab = Fabric(NetParams(*intra), NetParams(*inter), ranks_per_node=8)
    p, n = 64, 1e7
    hd = Hierarchical(inter_algorithm="halving_doubling")
    assert math.isclose(hd.allreduce_time(p, n, fab), ref_hier(p, n, 8, intra, inter, inter_ref=ref_hd),
                        rel_tol=REL)
    goyal = Hierarchical(variant="reduce_broadcast")
    L, N = 8, 8
    ia, ib, ig = intra
    want = (2 * (L - 1) * ia + (L - 1) / L * n * (2 * ib + ig) + 2 * (ia + (L - 1) / L * n * ib)
            + ref_ring(N, n, *inter))
    assert math.isclose(goyal.allreduce_time(p, n, fab), want, rel_tol=REL)
    # single node: a ring on the intra-node link
    assert math.isclose(C.allreduce_time("hierarchical", 8, n, fab), ref_ring(8, n, *intra), rel_tol=REL)


def test_torus2d_grid_and_equivalences():
    px, py = C.most_square_grid(np.array([1, 2, 12, 64, 97, 1000, 1024, 2176]))
    assert list(px) == [1, 2, 4, 8, 97, 40, 32, 64] and list(px * py) == [1, 2, 12, 64, 97, 1000, 1024, 2176]
    # bandwidth term equals the ring's, latency 2(px-1) + 2(py-1) messages
    net = NetParams(A, B, 0.0)
    for p in (64, 1000, 1024):
        px = ref_square(p)
        py = p // px
        assert math.isclose(C.allreduce_time("torus2d", p, 1e9, NetParams(0.0, B, 0.0)), 2 * (p - 1) / p * 1e9 * B,
                            rel_tol=REL)
        assert math.isclose(C.allreduce_time("torus2d", p, 0.0, net), (2 * (px - 1) + 2 * (py - 1)) * A,
                            rel_tol=REL)
    # px = ranks_per_node is the hierarchical reduce-scatter variant
    fab = Fabric(NetParams(1e-6, 1 / 150e9, G), NetParams(A, B, G), ranks_per_node=4, nics_per_node=2)
    p, n = np.array([8, 64, 1024]), np.logspace(3, 9, 7)[:, None]
    assert close(Torus2D(px=4).allreduce_time(p, n, fab), C.allreduce_time("hierarchical", p, n, fab))
    with pytest.raises(ConfigError):
        Torus2D(px=3).allreduce_time(64, 1e6, NET)


def test_torus2d_on_two_level_fabric():
    intra, inter = (1e-6, 1 / 150e9, G), (A, B, G)
    fab = Fabric(NetParams(*intra), NetParams(*inter), ranks_per_node=8, nics_per_node=1)
    n = 1e8

    def ref(p, px, x_link, y_link, share):
        py = p // px
        xa, xb, xg = x_link
        ya, yb, yg = y_link
        return (px - 1) * (2 * xa + n / px * (2 * xb + xg)) + ref_ring(py, n / px, ya, yb * share, yg)

    # rows of 2 inside 8-rank nodes: X on NVLink, 2 columns cross each node's single NIC at once
    assert math.isclose(Torus2D(px=2).allreduce_time(64, n, fab), ref(64, 2, intra, inter, 2.0), rel_tol=REL)
    # rows of 16 span two nodes: X on the network; all 8 ranks of a node cross at once in Y
    assert math.isclose(Torus2D(px=16).allreduce_time(64, n, fab), ref(64, 16, inter, inter, 8.0), rel_tol=REL)
    # rows of 6 straddle 8-rank nodes: X on the network
    assert math.isclose(Torus2D(px=6).allreduce_time(48, n, fab), ref(48, 6, inter, inter, 6.0), rel_tol=REL)
    # everything inside one node
    assert math.isclose(Torus2D(px=4).allreduce_time(8, n, fab), ref(8, 4, intra, intra, 1.0), rel_tol=REL)


def test_parameter_server_bounds():
    n = 1e8
    # S = p: each worker's NIC bound, 2 (a + n b) + (p-1)/p n g
    assert math.isclose(C.allreduce_time("parameter_server", 64, n, NET), ref_ps(64, n, 64), rel_tol=REL)
    # one server: server NIC carries p n each way
    one = ParameterServer(servers=1)
    assert math.isclose(one.allreduce_time(64, n, NET), 2 * A + 2 * 64 * n * B + 63 * n * G, rel_tol=REL)
    # more servers never hurt
    t = [ParameterServer(servers=s).allreduce_time(64, n, NET) for s in (1, 2, 8, 64, 128)]
    assert all(x >= y for x, y in zip(t, t[1:]))
    # workers sharing one NIC per node
    fab = Fabric(NET, NET, ranks_per_node=4, nics_per_node=1)
    assert math.isclose(C.allreduce_time("parameter_server", 64, n, fab), 2 * A + 2 * 4 * n * B + 63 / 64 * n * G,
                        rel_tol=REL)


# ---------------------------------------------------------------------------------------------------------
# step patterns
# ---------------------------------------------------------------------------------------------------------
def _cases():
    """(label, algorithm, p, fabric for the closed form, ranks_per_node for the steps)."""
    out = []
    for p in P_FABRIC:
        for name in ("ring", "recursive_doubling", "halving_doubling", "binary_tree", "torus2d",
                     "parameter_server"):
            out.append((f"{name}-{p}", ALGORITHMS[name], p, NET, None))
        if p % 2 == 0:
            out.append((f"torus2d-px2-hd-{p}", Torus2D(px=2, y_algorithm="halving_doubling"), p, NET, None))
        divisors = sorted({1, p} | ({4} if p % 4 == 0 else set()) | ({8} if p % 8 == 0 else set()))
        for rpn in divisors:
            fab = Fabric(NET, NET, ranks_per_node=rpn, nics_per_node=rpn)
            for alg in (Hierarchical(), Hierarchical("recursive_doubling"), Hierarchical(variant="reduce_broadcast"),
                        Hierarchical("halving_doubling", "reduce_broadcast")):
                out.append((f"{alg!r}-{p}-{rpn}", alg, p, fab, rpn))
    out.append(("ps-S3-7", ParameterServer(servers=3), 7, NET, None))
    out.append(("ps-S3-64", ParameterServer(servers=3), 64, NET, None))
    return out


CASES = _cases()


@pytest.mark.parametrize("label,alg,p,net,rpn", CASES, ids=[c[0] for c in CASES])
def test_steps_valid_and_priced_like_closed_form(label, alg, p, net, rpn):
    steps = alg.steps(p, ranks_per_node=rpn)
    ne = alg.n_endpoints(p)
    for st in steps:
        assert st.pairs.ndim == 2 and st.pairs.shape[1] == 2 and len(st.pairs) > 0
        assert st.pairs.min() >= 0 and st.pairs.max() < ne
        assert not np.any(st.pairs[:, 0] == st.pairs[:, 1])
        assert 0 < st.send_frac <= 1 and st.reduce_frac >= 0 and st.repeat >= 1
    ft = uniform_flow_time(A, B)
    for n in (1e3, 1e6, 1e9):
        got = C.time_on_fabric(alg, p, n, ft, G, ranks_per_node=rpn)
        assert math.isclose(got, float(alg.allreduce_time(p, n, net)), rel_tol=REL), (label, n)


@pytest.mark.parametrize("p", P_FABRIC)
def test_step_volumes(p):
    q = 1 << lg_floor(p)
    vol = per_rank_send_frac(Ring().steps(p), p)
    assert close(vol, np.full(p, 2 * (p - 1) / p))
    vol = per_rank_send_frac(HalvingDoubling().steps(p), p)
    if p == q:
        assert close(vol, np.full(p, 2 * (p - 1) / p))
    else:  # the folded ranks send n once; their partners carry the rest plus the result
        assert math.isclose(vol.max(), 2 * (q - 1) / q + 1, rel_tol=REL) and vol.min() == 1.0
    assert math.isclose(ALGORITHMS["recursive_doubling"].send_volume_frac(p), lg_ceil(p), rel_tol=REL)
    assert math.isclose(BinaryTree().send_volume_frac(p), lg_ceil(p), rel_tol=REL)
    ps = ParameterServer(servers=4)
    vol = per_rank_send_frac(ps.steps(p), p + 4)
    assert close(vol[:p], np.ones(p)) and close(vol[p:], np.full(4, p / 4))
    # ring-in-ring layouts move the ring's volume: 2(L-1)/L + 2(N-1)/(N L)
    if p % 8 == 0 and p > 8:
        L, N = 8, p // 8
        want = 2 * (L - 1) / L + 2 * (N - 1) / (N * L)
        assert close(per_rank_send_frac(Hierarchical().steps(p, ranks_per_node=8), p), np.full(p, want))
        assert close(per_rank_send_frac(Torus2D(px=8).steps(p), p), np.full(p, want))
        assert math.isclose(want, 2 * (p - 1) / p, rel_tol=REL)  # same volume as the flat ring


@pytest.mark.parametrize("p", P_FABRIC)
@pytest.mark.parametrize("alg", [ALGORITHMS["recursive_doubling"], BinaryTree(), ParameterServer(servers=3)],
                         ids=lambda a: a.name)
def test_whole_vector_steps_implement_an_allreduce(alg, p):
    """Replay the flows of whole-vector algorithms: afterwards every rank holds every rank's contribution."""
    ne = alg.n_endpoints(p)
    know = np.zeros((ne, p), dtype=bool)
    know[np.arange(p), np.arange(p)] = True
    for st in alg.steps(p):
        assert st.repeat == 1 and (st.send_frac == 1.0 or isinstance(alg, ParameterServer))
        new = know.copy()
        np.logical_or.at(new, st.pairs[:, 1], know[st.pairs[:, 0]])
        know = new
    assert know[:p].all()


@pytest.mark.parametrize("p", P_FABRIC + [6, 13, 100, 127, 129, 1025])
def test_nccl_double_tree_structure(p):
    trees = nccl_double_tree(p)
    for parent in trees:
        assert (parent == -1).sum() == 1 and set(parent[parent != -1]) <= set(range(p))
        depth, height = _depth_height(parent)
        assert (depth >= 0).all() and depth.max() == lg_ceil(p)  # H = ceil(log2 p), as the closed form uses
        assert np.bincount(parent[parent != -1], minlength=p).max() <= 2  # binary
    # steady-state loads used by the closed form
    up = np.concatenate([np.stack([np.flatnonzero(t != -1), t[t != -1]], 1) for t in trees])
    full = np.vstack([up, up[:, ::-1]])
    load = lambda pr: max(np.bincount(pr[:, 0]).max(), np.bincount(pr[:, 1]).max())
    m, mu, mg = (int(x) for x in dbt_loads(p))
    assert (load(full), load(up), np.bincount(up[:, 1]).max()) == (m, mu, mg)
    # every rank sends at most 2 n over a whole allreduce (m/2), as a bandwidth-optimal tree should
    vol = per_rank_send_frac(DoubleBinaryTree().steps(p, segments=5), p)
    assert math.isclose(vol.max(), m / 2, rel_tol=REL)


@pytest.mark.parametrize("p", P_FABRIC)
@pytest.mark.parametrize("op", ["allreduce", "reduce", "broadcast"])
@pytest.mark.parametrize("seg", [None, 1 << 18])
def test_double_binary_tree_on_fabric_within_documented_bounds(p, op, seg):
    alg = DoubleBinaryTree(segment_bytes=seg)
    ft = uniform_flow_time(A, B)
    for n in (1e3, 1e6, 1e8):
        got = C.time_on_fabric(alg, p, n, ft, G, op=op)
        lo, hi = alg.bounds(op, p, n, NET)
        assert math.isclose(hi, float(alg.time(op, p, n, NET)), rel_tol=REL)
        assert lo * (1 - 1e-12) <= got <= hi * (1 + 1e-12), (p, op, n, lo, got, hi)
    # many segments: the fill/drain share vanishes and the schedule approaches the closed form
    if seg is None and p >= 4:
        n = 1e10
        got = C.time_on_fabric(alg, p, n, ft, G, op=op)
        assert got > 0.97 * float(alg.time(op, p, n, NET))


@pytest.mark.parametrize("p", [2, 3, 5, 8, 64, 1000])
def test_other_collectives_on_fabric(p):
    ft = uniform_flow_time(A, B)
    for alg, ops in ((Ring(), ("reduce_scatter", "allgather")),
                     (HalvingDoubling(), ("reduce_scatter", "allgather", "reduce", "broadcast")),
                     (BinaryTree(), ("reduce", "broadcast"))):
        for op in ops:
            for n in (1e3, 1e8):
                got = C.time_on_fabric(alg, p, n, ft, G, op=op)
                assert math.isclose(got, float(alg.time(op, p, n, NET)), rel_tol=REL), (alg.name, op, n)


def test_auto_on_fabric_is_min_over_candidates():
    ft = uniform_flow_time(A, B)
    for p, n in ((64, 1e3), (64, 1e9), (12, 1e6)):
        each = []
        for name in AUTO_CANDIDATES:
            try:
                each.append(C.time_on_fabric(name, p, n, ft, G, ranks_per_node=4))
            except ConfigError:
                pass
        assert math.isclose(C.time_on_fabric("auto", p, n, ft, G, ranks_per_node=4), min(each), rel_tol=REL)


def test_double_binary_tree_on_hierarchical_inter_phase():
    """A pipelined inter algorithm inside the hierarchical one picks its segments from flow_time too."""
    fab = Fabric(NET, NET, ranks_per_node=8, nics_per_node=8)
    alg = Hierarchical("double_binary_tree")
    ft = uniform_flow_time(A, B)
    got = C.time_on_fabric(alg, 64, 1e8, ft, G, ranks_per_node=8)
    cf = float(alg.allreduce_time(64, 1e8, fab))
    intra_only = 2 * 7 * A + 2 * 7 / 8 * 1e8 * B + 7 / 8 * 1e8 * G
    assert intra_only < got <= cf * (1 + 1e-12)


# ---------------------------------------------------------------------------------------------------------
# bandwidth metrics
# ---------------------------------------------------------------------------------------------------------
def test_bus_bandwidth_equals_link_speed_for_bandwidth_optimal_ring():
    net = NetParams(0.0, 1 / 12.5e9, 0.0)
    p, n = np.array([2, 8, 64, 1024]), 1e9
    t = C.allreduce_time("ring", p, n, net)
    assert close(C.bus_bandwidth(p, n, t), np.full(4, 12.5e9))
    assert close(C.algorithm_bandwidth(n, t), n / t)
    t_ag = C.allgather_time("ring", p, n, net)
    assert close(C.bus_bandwidth(p, n, t_ag, op="allgather"), np.full(4, 12.5e9))
    assert C.bus_bandwidth(4, 1e6, 1e-3, op="broadcast") == C.algorithm_bandwidth(1e6, 1e-3) == 1e9
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError):
            C.bus_bandwidth(4, 1e6, bad)
    with pytest.raises(ConfigError):
        C.bus_bandwidth(4, 1e6, 1.0, op="alltoall")


# ---------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [0, -3, 2.5, float("nan"), np.array([4, 0])])
def test_bad_p(p):
    with pytest.raises(ConfigError) as e:
        C.allreduce_time("ring", p, 1e6, NET)
    assert e.value.field == "p"


@pytest.mark.parametrize("n", [-1.0, float("inf"), float("nan"), np.array([1e3, -5.0])])
def test_bad_nbytes(n):
    with pytest.raises(ConfigError) as e:
        C.allreduce_time("auto", 8, n, NET)
    assert e.value.field == "nbytes"


def test_unknown_algorithm_and_bad_parameters():
    with pytest.raises(ConfigError) as e:
        C.allreduce_time("butterfly", 8, 1e6, NET)
    err = e.value
    assert (err.source, err.field, err.value) == ("--allreduce", "allreduce", "butterfly")
    assert "unknown algorithm; known: ring" in str(err) and "auto" in str(err)
    with pytest.raises(ConfigError):
        C.broadcast_time("ring", 8, 1e6, NET)  # not defined for the ring
    with pytest.raises(ConfigError):
        NetParams(-1e-6, 1e-9)
    with pytest.raises(ConfigError):
        NetParams(1e-6, float("inf"))
    with pytest.raises(ConfigError):
        Fabric(NET, NET, ranks_per_node=0)
    with pytest.raises(ConfigError):
        C.allreduce_time("ring", 8, 1e6, {"alpha_s": 1})
    with pytest.raises(ConfigError):
        Hierarchical(inter_algorithm="torus2d")
    with pytest.raises(ConfigError):
        Hierarchical(variant="tree")
    with pytest.raises(ConfigError):
        Hierarchical().steps(12)  # ranks_per_node required
    with pytest.raises(ConfigError):
        Hierarchical().steps(12, ranks_per_node=8)  # not whole nodes
    with pytest.raises(ConfigError):
        ParameterServer(servers=0)
    with pytest.raises(ConfigError):
        DoubleBinaryTree(segment_bytes=0)
    with pytest.raises(ConfigError):
        C.time_on_fabric("ring", 0, 1e6, uniform_flow_time(A, B), G)
    with pytest.raises(ConfigError):
        C.AUTO.steps(8)


# ---------------------------------------------------------------------------------------------------------
# vectorisation
# ---------------------------------------------------------------------------------------------------------
def test_vectorised_over_100k_configurations():
    """Every algorithm prices 100,000 (ranks, bytes) pairs in one call (the throughput target is checked by
    benchmarks/bench_predict_throughput.py, not here)."""
    rng = np.random.default_rng(0)
    p = rng.integers(1, 1025, 100_000)
    n = 10.0 ** rng.uniform(3, 9, 100_000)
    fab = Fabric(NetParams(1e-6, 1 / 150e9, G), NetParams(A, B, G), ranks_per_node=8)
    for name in [*ALGORITHMS, "auto"]:
        out = C.allreduce_time(name, p, n, fab)
        assert out.shape == (100_000,) and np.isfinite(out).all()
        assert ((out == 0) == (p == 1)).all()   # one rank: nothing to reduce; more: a positive time
        # element-wise the same as one pair at a time
        for i in (0, 4_999, 99_999):
            assert out[i] == pytest.approx(float(C.allreduce_time(name, p[i:i + 1], n[i:i + 1], fab)[0]), rel=1e-12)
