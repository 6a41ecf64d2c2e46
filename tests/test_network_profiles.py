"""Tests of perfmodel.network: collective cost profiles on real topologies (the topology effects of
PAPERS.md section 6: "on an oversubscribed fat tree or a torus, the bandwidth term is set by the most loaded
link that the algorithm's messages cross, not by the NIC alone").

What the model predicts, derived by hand here and asserted:

(a) Oversubscribed fat tree (Stampede2: 28 nodes per leaf, 20 uplinks) against the same tree with full
    bisection (28 uplinks). With spread (ECMP) routing a leaf whose ``k`` flows leave it loads each uplink
    with ``k / U``; a node's own link carries its own flows. A step's slope is therefore
    ``max(1, k_out / U, k_in / U) / bw``; a step in which all 28 nodes of a leaf send across is slower by
    exactly 28/20, the others are unchanged. Recursive doubling on 64 nodes: only the distance-32 step
    crosses with full leaves, so beta(over) - beta(full) = (1.4 - 1) / bw exactly; halving-doubling moves
    n/64 in that step, twice: 2 * 0.4 / 64 / bw.
(b) Ring on a 2D torus (8 x 8) vs on a fat tree: ring neighbours ``i -> i+1`` are link-disjoint on the
    torus under dimension-order routing (load 1), on the full tree (load 1) and on the oversubscribed tree
    (one flow per leaf crosses: 1/20 per uplink), so all three give the same, closed-form, profile.
    Halving-doubling on the torus is not: its distance-2 and distance-4 (tie, split both ways) exchanges
    load a link with 2 flows, so 4 of its 6 patterns run at half speed.
(c) Hierarchical vs flat ring on DGX-1 V100 nodes (8 GPUs, 4 NICs): the closed forms give latency terms
    14 alpha_intra + 2 (N - 1) alpha_inter and 2 (8N - 1) alpha_inter; the topology profile gives the same
    structure with the intra-node ring step latency read off the graph. The hierarchical inter-node phase
    on the topology equals the closed form's, NIC sharing (8 ranks on 4 NICs: x2) included.
(d) Profiles are exactly linear, bound time_on_fabric with max_flow_time from above by at most alpha, and
    equal the closed forms on a single switch (alpha = latency, beta = 1 / bw, gamma = 3 / memory bw).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hardware.catalog import load_system
from hardware.errors import ConfigError, InfeasibleError
from hardware.specs import FrozenMap
from hardware.topology import max_flow_time
from perfmodel.collectives import ALGORITHMS, allreduce_time, time_on_fabric
from perfmodel.network import (CollectiveProfile, best_profiles, cluster_graph, collective_profile, fabric_for,
                               rank_endpoints, reduce_gamma_s_per_B)

REL = 1e-9
SIZES = np.array([0.0, 1e3, 1e5, 4e6, 25e6, 1e8, 1e9])


@pytest.fixture(scope="module")
def knl():
    return load_system("stampede2-knl")


@pytest.fixture(scope="module")
def dgx():
    return load_system("dgx1-v100")


def with_topology(system, kind, **params):
    """A copy of ``system`` with another network topology (distinct id so caches never mix them)."""
    net = dataclasses.replace(system.network, topology_kind=kind, topology_params=FrozenMap(params))
    tag = "-".join(f"{k}{v}" for k, v in params.items())
    return dataclasses.replace(system, id=f"{system.id}~{kind}~{tag}", network=net)


def fat(system, per_leaf, uplinks):
    return with_topology(system, "fat-tree", levels=2, nodes_per_leaf=per_leaf, uplinks_per_leaf=uplinks,
                         oversubscription=per_leaf / uplinks)


def step_slopes(system, nodes, alg, rpn=1):
    """Bandwidth slope (s/B per byte of a flow) of each step of ``alg`` on the cluster graph."""
    G = cluster_graph(system, nodes)
    eps = rank_endpoints(system, nodes, rpn)
    out = []
    for st in ALGORITHMS[alg].steps(nodes * rpn, ranks_per_node=rpn):
        flows = [(eps[s], eps[d]) for s, d in st.pairs]
        lat = max_flow_time(G, flows, 0.0)
        out.append((st, (max_flow_time(G, flows, 1e9) - lat) / 1e9))
    return out


def leaf_model(alg, p, per_leaf, uplinks, bw, lat, gamma):
    """Independent (alpha, beta) of ``alg`` on p single-device nodes of a 2-level fat tree, spread routing:
    a flow's slope is max(own node's flows out, destination's flows in, leaf flows out / U, leaf flows in / U)
    / bw; every inter-node flow has the end-to-end latency ``lat``."""
    alpha = beta = 0.0
    for st in ALGORITHMS[alg].steps(p, ranks_per_node=1):
        pairs = st.pairs
        if len(pairs) == 0:
            beta += st.repeat * st.reduce_frac * gamma
            continue
        src, dst = pairs[:, 0], pairs[:, 1]
        out_n = np.bincount(src, minlength=p)
        in_n = np.bincount(dst, minlength=p)
        ls, ld = src // per_leaf, dst // per_leaf
        cross = ls != ld
        nleaf = p // per_leaf + 1
        out_l = np.bincount(ls[cross], minlength=nleaf)
        in_l = np.bincount(ld[cross], minlength=nleaf)
        load = np.maximum(out_n[src], in_n[dst]).astype(float)
        load = np.where(cross, np.maximum(load, np.maximum(out_l[ls], in_l[ld]) / uplinks), load)
        alpha += st.repeat * lat
        beta += st.repeat * (st.send_frac * load.max() / bw + st.reduce_frac * gamma)
    return alpha, beta


# ---------------------------------------------------------------------------------------------------------
# (a) oversubscribed fat tree
# ---------------------------------------------------------------------------------------------------------
def test_stampede2_tree_is_28_over_20(knl):
    assert knl.network.topology_kind == "fat-tree"
    assert knl.network.topology_params["nodes_per_leaf"] == 28
    assert knl.network.topology_params["uplinks_per_leaf"] == 20
    G = cluster_graph(knl, 64)
    assert G.graph["oversubscription"] == pytest.approx(1.4)


def test_leaf_crossing_step_slower_by_exactly_28_over_20(knl):
    """Recursive doubling on 64 nodes, step by step: distance 32 sends all 28 nodes of leaves 0 and 1
    across (28 flows over 20 uplinks: x1.4); every other step is bound by the node link (x1)."""
    full = fat(knl, 28, 28)
    bw = knl.network.link_bw_Bps
    over_steps, full_steps = step_slopes(knl, 64, "recursive_doubling"), step_slopes(full, 64,
                                                                                    "recursive_doubling")
    assert len(over_steps) == 6
    for k, ((st, so), (_, sf)) in enumerate(zip(over_steps, full_steps)):
        distance = int(abs(st.pairs[0, 1] - st.pairs[0, 0]))
        assert distance == 2 ** k
        assert sf == pytest.approx(1.0 / bw, rel=REL)
        assert so / sf == pytest.approx(28 / 20 if distance == 32 else 1.0, rel=REL)


def test_whole_algorithm_ratio_recursive_doubling_and_halving_doubling(knl):
    full = fat(knl, 28, 28)
    bw, g = knl.network.link_bw_Bps, reduce_gamma_s_per_B(knl)
    rd_o, rd_f = collective_profile(knl, 64, 1, "recursive_doubling"), collective_profile(full, 64, 1,
                                                                                          "recursive_doubling")
    assert rd_o.alpha_s == pytest.approx(rd_f.alpha_s, rel=REL)       # latency unaffected
    assert rd_f.beta_s_per_B == pytest.approx(6 / bw + 6 * g, rel=REL)
    assert rd_o.beta_s_per_B == pytest.approx((5 + 28 / 20) / bw + 6 * g, rel=REL)
    # network part of the bandwidth term: (5 + 1.4) / 6
    assert (rd_o.beta_s_per_B - 6 * g) / (rd_f.beta_s_per_B - 6 * g) == pytest.approx(6.4 / 6, rel=REL)
    hd_o, hd_f = collective_profile(knl, 64, 1, "halving_doubling"), collective_profile(full, 64, 1,
                                                                                        "halving_doubling")
    assert hd_f.beta_s_per_B == pytest.approx(2 * 63 / 64 / bw + 63 / 64 * g, rel=REL)
    assert hd_o.beta_s_per_B - hd_f.beta_s_per_B == pytest.approx(2 * (28 / 20 - 1) / 64 / bw, rel=REL)
    assert (hd_o.beta_s_per_B - 63 / 64 * g) / (hd_f.beta_s_per_B - 63 / 64 * g) == \
        pytest.approx((62 + 1.4) / 63, rel=REL)


@pytest.mark.parametrize("uplinks", [20, 28, 7])
@pytest.mark.parametrize("p", [28, 56, 64, 100])
@pytest.mark.parametrize("alg", ["ring", "recursive_doubling", "halving_doubling", "binary_tree"])
def test_fat_tree_profile_matches_leaf_count_model(knl, alg, p, uplinks):
    system = fat(knl, 28, uplinks)
    prof = collective_profile(system, p, 1, alg)
    a, b = leaf_model(alg, p, 28, uplinks, knl.network.link_bw_Bps, knl.network.latency_s,
                      reduce_gamma_s_per_B(knl))
    assert prof.alpha_s == pytest.approx(a, rel=REL)
    assert prof.beta_s_per_B == pytest.approx(b, rel=REL)


@pytest.mark.parametrize("alg", ["recursive_doubling", "halving_doubling", "binary_tree"])
def test_more_oversubscription_never_faster(knl, alg):
    betas = [collective_profile(fat(knl, 28, u), 112, 1, alg).beta_s_per_B for u in (28, 20, 14, 7, 4)]
    assert all(b2 >= b1 * (1 - 1e-12) for b1, b2 in zip(betas, betas[1:]))
    if alg == "binary_tree":  # a binomial level sends few flows across a leaf: 4 uplinks still suffice
        assert betas[-1] == pytest.approx(betas[0], rel=REL)
    else:
        assert betas[-1] > betas[0]


# ---------------------------------------------------------------------------------------------------------
# (b) ring on a torus vs on fat trees
# ---------------------------------------------------------------------------------------------------------
def test_ring_on_torus_equals_ring_on_fat_trees_and_closed_form(knl):
    torus = with_topology(knl, "torus", dims=(8, 8))
    G = cluster_graph(torus, 64)
    assert G.graph["network_kind"] == "torus"
    bw, lat, g = knl.network.link_bw_Bps, knl.network.latency_s, reduce_gamma_s_per_B(knl)
    expect_alpha, expect_beta = 2 * 63 * lat, 2 * 63 / 64 / bw + 63 / 64 * g
    for system in (torus, fat(knl, 28, 28), knl):
        prof = collective_profile(system, 64, 1, "ring")
        assert prof.alpha_s == pytest.approx(expect_alpha, rel=REL)
        assert prof.beta_s_per_B == pytest.approx(expect_beta, rel=REL)
    # on the oversubscribed tree only one ring flow per leaf crosses: each uplink carries 1/20 of a flow
    (st, slope), = step_slopes(knl, 64, "ring")[:1]
    assert slope == pytest.approx(1 / bw, rel=REL)


def test_ring_flows_on_torus_are_link_disjoint(knl):
    from hardware.topology import link_loads
    torus = with_topology(knl, "torus", dims=(8, 8))
    G = cluster_graph(torus, 64)
    eps = rank_endpoints(torus, 64, 1)
    loads = link_loads(G, [(eps[i], eps[(i + 1) % 64]) for i in range(64)])
    assert max(loads.values()) == pytest.approx(1.0)


def test_halving_doubling_on_torus_is_set_by_most_loaded_link(knl):
    """8 x 8 torus, row-major ranks. Exchange distance (mask) -> most loaded link: 1 -> 1 (neighbours),
    2 -> 2 (0<->2 and 1<->3 share link 1->2), 4 -> 2 (tie split both ways: 4 sources x 1/2 per link), then the
    same along the other dimension for masks 8, 16, 32."""
    torus = with_topology(knl, "torus", dims=(8, 8))
    bw, g = knl.network.link_bw_Bps, reduce_gamma_s_per_B(knl)
    slopes = step_slopes(torus, 64, "halving_doubling")
    loads = {1: 1, 2: 2, 4: 2, 8: 1, 16: 2, 32: 2}
    for st, s in slopes:
        mask = int(st.pairs[0, 0] ^ st.pairs[0, 1])
        assert s == pytest.approx(loads[mask] / bw, rel=REL)
    prof = collective_profile(torus, 64, 1, "halving_doubling")
    net = 2 * sum(loads[m] / (2 * m) for m in loads)
    assert prof.beta_s_per_B == pytest.approx(net / bw + 63 / 64 * g, rel=REL)
    full = collective_profile(fat(knl, 28, 28), 64, 1, "halving_doubling")
    assert prof.beta_s_per_B > full.beta_s_per_B
    assert prof.alpha_s == pytest.approx(full.alpha_s, rel=REL)


def test_partial_torus_falls_back_to_single_switch(knl):
    torus = with_topology(knl, "torus", dims=(8, 8))
    G = cluster_graph(torus, 10)  # 10 nodes do not fill an 8 x 8 torus
    assert G.graph["network_kind"] == "single-switch"


# ---------------------------------------------------------------------------------------------------------
# (c) hierarchical vs flat ring on NVLink nodes
# ---------------------------------------------------------------------------------------------------------
NODES = [1, 2, 4, 8, 16]


def test_dgx1_fabric(dgx):
    fab = fabric_for(dgx, 8)
    assert fab.ranks_per_node == 8 and fab.nics_per_node == 4
    intra, net = dgx.node.intra, dgx.network
    assert fab.intra.alpha_s == intra.latency_s and fab.inter.alpha_s == net.latency_s
    # closed form: a rank drives all its NVLinks at once (NCCL's several rings)
    assert fab.intra.beta_s_per_B == pytest.approx(1 / (intra.links_per_device * intra.link_bw_Bps), rel=1e-15)
    assert fab.inter.beta_s_per_B == pytest.approx(1 / net.link_bw_Bps, rel=1e-15)
    assert fab.intra.gamma_s_per_B == fab.inter.gamma_s_per_B == pytest.approx(3 / dgx.device.memory_bw_Bps)


@pytest.mark.parametrize("N", NODES)
def test_hierarchical_latency_closed_forms(dgx, N):
    fab = fabric_for(dgx, 8)
    ia, ea = fab.intra.alpha_s, fab.inter.alpha_s
    p = 8 * N
    ring0 = float(allreduce_time("ring", p, 0.0, fab))
    hier0 = float(allreduce_time("hierarchical", p, 0.0, fab))
    assert hier0 == pytest.approx(2 * 7 * ia + 2 * (N - 1) * ea, rel=REL)
    assert ring0 == pytest.approx(2 * 7 * ia if N == 1 else 2 * (p - 1) * ea, rel=REL)
    if N == 1:
        assert hier0 == pytest.approx(ring0, rel=REL)
    else:  # 2(8N - 1) ea - 2(N - 1) ea = 14 N ea, so hierarchical wins  <=>  ia < N ea
        assert (hier0 < ring0) == (ia < N * ea)
        assert ring0 - hier0 == pytest.approx(14 * (N * ea - ia), rel=REL)
        assert hier0 < ring0  # DGX-1 catalog values: 1 us < 2 x 0.8 us


@pytest.mark.parametrize("N", NODES)
def test_hierarchical_vs_ring_profiles(dgx, N):
    fab = fabric_for(dgx, 8)
    ea = fab.inter.alpha_s
    one = collective_profile(dgx, 1, 8, "ring")
    step_lat = one.alpha_s / 14                      # latency of one intra-node ring step on the cube mesh
    assert step_lat >= fab.intra.alpha_s
    ring = collective_profile(dgx, N, 8, "ring")
    hier = collective_profile(dgx, N, 8, "hierarchical")
    p = 8 * N
    assert ring.alpha_s == pytest.approx(2 * (p - 1) * max(step_lat, ea if N > 1 else 0.0), rel=REL)
    assert hier.alpha_s == pytest.approx(14 * step_lat + 2 * (N - 1) * ea, rel=REL)
    if N == 1:
        assert hier.alpha_s == pytest.approx(ring.alpha_s, rel=REL)
        assert hier.beta_s_per_B == pytest.approx(ring.beta_s_per_B, rel=REL)
    else:
        assert hier.alpha_s < ring.alpha_s
        assert hier.beta_s_per_B < ring.beta_s_per_B
        assert np.all(hier.time_s(SIZES[1:]) < ring.time_s(SIZES[1:]))


@pytest.mark.parametrize("N", NODES[1:])
def test_hierarchical_inter_node_phase_matches_closed_form(dgx, N):
    """profile(N) - profile(1) is the inter-node phase on the topology: L = 8 concurrent rings of n/8 over
    N nodes, two ranks per NIC. The closed form's inter phase (share factor 8 / min(8, 4) = 2) is the same
    difference of closed forms."""
    fab = fabric_for(dgx, 8)
    h1, hN = collective_profile(dgx, 1, 8, "hierarchical"), collective_profile(dgx, N, 8, "hierarchical")
    topo = hN.time_s(SIZES) - h1.time_s(SIZES)
    closed = allreduce_time("hierarchical", 8 * N, SIZES, fab) - allreduce_time("hierarchical", 8, SIZES, fab)
    np.testing.assert_allclose(topo, closed, rtol=1e-9, atol=1e-15)
    # and explicitly: 2(N-1) alpha + 2(N-1)/N (n/8)(2 beta) + (N-1)/N (n/8) gamma
    e = fab.inter
    expect = 2 * (N - 1) * e.alpha_s + (N - 1) / N * SIZES / 8 * (2 * 2 * e.beta_s_per_B + e.gamma_s_per_B)
    np.testing.assert_allclose(topo, expect, rtol=1e-9, atol=1e-15)


def test_hierarchical_advantage_grows_with_nodes(dgx):
    ratios = [collective_profile(dgx, N, 8, "ring").alpha_s / collective_profile(dgx, N, 8, "hierarchical").alpha_s
              for N in NODES]
    assert ratios[0] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(ratios, ratios[1:]))


# ---------------------------------------------------------------------------------------------------------
# (d) linearity, time_on_fabric, closed forms on a single switch
# ---------------------------------------------------------------------------------------------------------
def test_profile_is_linear():
    prof = CollectiveProfile("ring", "allreduce", 8, 3e-5, 2e-10)
    np.testing.assert_allclose(prof.time_s(SIZES), 3e-5 + 2e-10 * SIZES, rtol=1e-15)
    assert float(prof.time_s(1e6)) == pytest.approx(3e-5 + 2e-4)
    single = CollectiveProfile("ring", "allreduce", 1, 0.0, 0.0)
    assert single.time_s(1e6) == 0.0
    np.testing.assert_array_equal(single.time_s(SIZES), np.zeros_like(SIZES))


def _flow_time(system, nodes, rpn):
    G = cluster_graph(system, nodes)
    eps = rank_endpoints(system, nodes, rpn)

    def flow_time(pairs, nb):
        return max_flow_time(G, [(eps[s], eps[d]) for s, d in np.asarray(pairs)], float(nb))
    return flow_time


@pytest.mark.parametrize("sysname, nodes, rpn, alg", [
    ("dgx", 4, 8, "ring"), ("dgx", 4, 8, "hierarchical"), ("dgx", 4, 8, "halving_doubling"),
    ("dgx", 3, 8, "recursive_doubling"), ("knl", 56, 1, "halving_doubling"), ("knl", 100, 1, "ring"),
    ("knl", 64, 1, "recursive_doubling"),
])
def test_profile_bounds_time_on_fabric(request, sysname, nodes, rpn, alg):
    """profile(n) = sum(max latency + n max slope) >= sum(max_f(latency_f + n slope_f)) = time_on_fabric, and
    the gap is at most the latency term (documented upper-bound approximation); equal at n = 0."""
    system = request.getfixturevalue(sysname)
    prof = collective_profile(system, nodes, rpn, alg)
    ft = _flow_time(system, nodes, rpn)
    g = reduce_gamma_s_per_B(system)
    for n in SIZES:
        exact = time_on_fabric(alg, nodes * rpn, float(n), ft, g, ranks_per_node=rpn)
        approx = float(prof.time_s(n))
        assert approx >= exact * (1 - 1e-9)
        assert approx - exact <= prof.alpha_s * (1 + 1e-9)
        if n == 0:
            assert approx == pytest.approx(exact, rel=REL)
        if n >= 1e8:
            assert approx == pytest.approx(exact, rel=0.02)


def test_upper_bound_is_strict_when_slowest_flows_differ(dgx):
    """On DGX-1 the ring's intra-node 2-hop step is the latency maximum and the NIC-sharing inter-node flow
    the slope maximum: the profile over-estimates a little at mid sizes."""
    prof = collective_profile(dgx, 4, 8, "ring")
    ft = _flow_time(dgx, 4, 8)
    exact = time_on_fabric("ring", 32, 1e5, ft, reduce_gamma_s_per_B(dgx), ranks_per_node=8)
    assert float(prof.time_s(1e5)) > exact * (1 + 1e-6)


@pytest.mark.parametrize("p", [2, 3, 5, 8, 12, 64])
@pytest.mark.parametrize("alg", ["ring", "halving_doubling", "recursive_doubling"])
def test_single_switch_profile_equals_closed_form(knl, alg, p):
    sw = with_topology(knl, "single-switch")
    prof = collective_profile(sw, p, 1, alg)
    fab = fabric_for(sw, 1)
    assert fab.inter.alpha_s == knl.network.latency_s
    assert fab.inter.beta_s_per_B == pytest.approx(1 / knl.network.link_bw_Bps, rel=1e-15)
    closed = allreduce_time(alg, p, SIZES, fab)
    assert prof.alpha_s == pytest.approx(float(closed[0]), rel=REL)
    np.testing.assert_allclose(prof.time_s(SIZES), closed, rtol=REL)
    # and so does time_on_fabric (every flow sees the same latency and slope)
    ft = _flow_time(sw, p, 1)
    for n in SIZES[::2]:
        assert time_on_fabric(alg, p, float(n), ft, reduce_gamma_s_per_B(knl)) == \
            pytest.approx(float(prof.time_s(n)), rel=REL)


@pytest.mark.parametrize("alg", ["ring", "halving_doubling", "recursive_doubling"])
def test_full_bisection_tree_equals_closed_form(knl, alg):
    full = fat(knl, 28, 28)
    for p in (28, 64, 100):
        prof = collective_profile(full, p, 1, alg)
        np.testing.assert_allclose(prof.time_s(SIZES), allreduce_time(alg, p, SIZES, fabric_for(full, 1)),
                                   rtol=REL)


def test_ranks_sharing_a_device_use_the_intra_link(knl):
    """Two ranks on one KNL: every flow is a shared-memory copy (latency and bandwidth of node.intra)."""
    prof = collective_profile(knl, 1, 2, "ring")
    intra, g = knl.node.intra, reduce_gamma_s_per_B(knl)
    assert prof.p == 2
    assert prof.alpha_s == pytest.approx(2 * intra.latency_s, rel=REL)
    assert prof.beta_s_per_B == pytest.approx(2 * 0.5 / intra.link_bw_Bps + 0.5 * g, rel=REL)


def test_two_sockets_over_shared_memory():
    skx = load_system("stampede2-skx")
    prof = collective_profile(skx, 1, 2, "ring")
    intra, g = skx.node.intra, reduce_gamma_s_per_B(skx)
    assert prof.alpha_s == pytest.approx(2 * intra.latency_s, rel=REL)
    assert prof.beta_s_per_B == pytest.approx(1 / intra.link_bw_Bps + 0.5 * g, rel=REL)


# ---------------------------------------------------------------------------------------------------------
# best_profiles and errors
# ---------------------------------------------------------------------------------------------------------
def test_best_profiles_is_the_minimum(dgx):
    sizes = np.logspace(2, 9, 8)
    t, names = best_profiles(dgx, 4, 8, "auto", sizes)
    assert len(names) == len(sizes)
    for i, n in enumerate(sizes):
        cands = {a: float(collective_profile(dgx, 4, 8, a).time_s(n))
                 for a in ("ring", "recursive_doubling", "halving_doubling", "hierarchical")}
        assert t[i] <= min(cands.values()) * (1 + 1e-12)
        assert t[i] == pytest.approx(float(collective_profile(dgx, 4, 8, names[i]).time_s(n)), rel=1e-12)
    t_ring, names_ring = best_profiles(dgx, 4, 8, "ring", sizes)
    assert set(names_ring) == {"ring"} and np.all(t <= t_ring * (1 + 1e-12))
    # small messages: latency-bound algorithm; large: a bandwidth-optimal one
    assert names[0] in ("recursive_doubling", "hierarchical", "binary_tree", "double_binary_tree")


def test_profile_errors(dgx):
    with pytest.raises(ConfigError):
        collective_profile(dgx, 2, 8, "auto")
    with pytest.raises(ConfigError) as ei:
        best_profiles(dgx, 2, 8, "nosuch", [1e6])
    assert ei.value.field == "allreduce"
    with pytest.raises(InfeasibleError):
        cluster_graph(dgx, dgx.max_nodes + 1)


def test_single_rank_costs_nothing(dgx):
    prof = collective_profile(dgx, 1, 1, "ring")
    assert prof.p == 1 and prof.alpha_s == 0.0 and prof.beta_s_per_B == 0.0
