"""Tests of hardware.topology: builders against closed forms, routing, loads, placement and errors."""
from __future__ import annotations

import itertools
import math
import random

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hardware.topology as T
from hardware.errors import InfeasibleError, SpecError

GBPS = 1e9 / 8  # bytes/s in one Gbit/s
OPA = 100 * GBPS  # 100 Gb/s Omni-Path / EDR link


# ----------------------------------------------------------------------------------------------------
# helpers

def endpoint_diameter(G: nx.Graph) -> int:
    eps = T.endpoints(G)
    best = 0
    for a in eps:
        dist = nx.single_source_shortest_path_length(G, a)
        best = max(best, max(dist[b] for b in eps))
    return best


def small_graphs() -> list[nx.Graph]:
    """One small instance of every builder (and a cluster), for the generic invariants."""
    return [
        T.single_switch(5, 1e9, 1e-6),
        T.fat_tree(12, 4, 2, 1e9, 1e-6),
        T.fat_tree(13, 3, 2, 1e9, 1e-6, uplink_bw_Bps=2e9),
        T.fat_tree(24, 2, 2, 1e9, 1e-6, levels=3, leaves_per_pod=3, uplinks_per_agg=2),
        T.torus((4, 3), 1e9, 1e-6),
        T.torus((2, 3, 4), 1e9, 1e-6),
        T.dragonfly(5, 2, 2, 2, 1e9, 2e9, 1e-6),
        T.dragonfly(2, 4, 1, 1, 1e9, 1e9, 1e-6),
        T.dgx1_hybrid_cube_mesh("p100"),
        T.dgx1_hybrid_cube_mesh("v100"),
        T.nvswitch(16, 6, 25e9),
        T.pcie_tree(8, 2, 16e9, 1e-7),
        T.pcie_tree(6, 2, 16e9, 1e-7, sockets=3),
        T.cluster_with_nodes(T.dgx1_hybrid_cube_mesh("v100"), 3,
                             {"kind": "fat-tree", "endpoints_per_leaf": 4, "uplinks_per_leaf": 2,
                              "link_bw_Bps": OPA, "latency_s": 1e-6}, 2, OPA),
        T.cluster_with_nodes(None, 6, {"kind": "torus", "dims": (2, 3), "link_bw_Bps": OPA, "latency_s": 1e-6},
                             1, OPA),
    ]


SMALL = small_graphs()
SMALL_IDS = [G.graph["name"] for G in SMALL]


# ----------------------------------------------------------------------------------------------------
# node and edge counts

@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_single_switch_counts(n):
    G = T.single_switch(n, 1e9, 1e-6)
    assert (G.number_of_nodes(), G.number_of_edges()) == (n + 1, n)
    assert G.graph["num_endpoints"] == n == len(T.endpoints(G))
    assert G.graph["bisection_bw_Bps"] == (n // 2) * 1e9
    assert G.graph["diameter_hops"] == (2 if n > 1 else 0)


@pytest.mark.parametrize("n,E,U", [(1, 1, 1), (8, 4, 2), (56, 28, 20), (100, 28, 20), (1024, 32, 16)])
def test_fat_tree_two_level_counts(n, E, U):
    G = T.fat_tree(n, E, U, OPA, 1e-6)
    L = math.ceil(n / E)
    assert G.number_of_nodes() == n + L + U
    assert G.number_of_edges() == n + L * U
    assert G.graph["n_leaves"] == L and G.graph["n_spines"] == U
    kinds = nx.get_edge_attributes(G, "kind")
    assert sum(1 for k in kinds.values() if k == "uplink") == L * U
    assert all(G.degree(("leaf", i)) == min(E, n - i * E) + U for i in range(L))


@pytest.mark.parametrize("n,E,U,lpp,U2", [(16, 2, 2, 2, 2), (64, 4, 4, 4, 4), (50, 4, 2, 3, 1), (1024, 16, 8, 8, 4)])
def test_fat_tree_three_level_counts(n, E, U, lpp, U2):
    G = T.fat_tree(n, E, U, OPA, 1e-6, levels=3, leaves_per_pod=lpp, uplinks_per_agg=U2)
    L = math.ceil(n / E)
    P = math.ceil(L / lpp)
    assert G.number_of_nodes() == n + L + P * U + U * U2
    assert G.number_of_edges() == n + L * U + P * U * U2
    assert G.graph["n_pods"] == P and G.graph["n_cores"] == U * U2


@pytest.mark.parametrize("dims", [(3,), (4, 4), (2, 5), (8, 8), (4, 4, 4), (2, 3, 4), (1, 6), (32, 32)])
def test_torus_counts(dims):
    G = T.torus(dims, 1e9, 1e-6)
    P = math.prod(dims)
    links = sum(P if d >= 3 else (P // 2 if d == 2 else 0) for d in dims)
    assert G.number_of_nodes() == P
    assert G.number_of_edges() == links
    assert G.graph["diameter_hops"] == sum(d // 2 for d in dims)
    if min(dims) >= 3:
        assert all(deg == 2 * len(dims) for _, deg in G.degree())


@pytest.mark.parametrize("g,a,p,h", [(1, 4, 2, 0), (2, 4, 1, 1), (5, 4, 2, 1), (9, 4, 2, 2), (7, 3, 2, 2),
                                     (6, 2, 1, 3), (16, 8, 4, 2)])
def test_dragonfly_counts_and_balance(g, a, p, h):
    G = T.dragonfly(g, a, p, h, 1e9, 2e9, 1e-6)
    assert G.number_of_nodes() == g * a * p + g * a
    local = [e for e in G.edges if G.edges[e]["kind"] == "local"]
    assert len(local) == g * a * (a - 1) // 2
    glob = [e for e in G.edges if G.edges[e]["kind"] == "global"]
    total = sum(G.edges[e]["links"] for e in glob)
    if g > 1:
        base, extra = divmod(a * h, g - 1)
        unused = g if (g * extra) % 2 else 0  # one port per group left when g * extra is odd
        assert total == (g * a * h - unused) // 2 == G.graph["n_global_links"]
        per_pair: dict[tuple[int, int], int] = {}
        per_router: dict[tuple, int] = {}
        for u, v in glob:
            key = tuple(sorted((u[1], v[1])))
            per_pair[key] = per_pair.get(key, 0) + G.edges[u, v]["links"]
            for r in (u, v):
                per_router[r] = per_router.get(r, 0) + G.edges[u, v]["links"]
        assert len(per_pair) == g * (g - 1) // 2  # every pair of groups directly linked
        assert set(per_pair.values()) <= {base, base + 1}
        assert max(per_router.values()) <= h
    else:
        assert total == 0


@pytest.mark.parametrize("gpu,links_per_gpu,total_links,bw", [("p100", 4, 16, 20e9), ("v100", 6, 24, 25e9)])
def test_dgx1_link_counts(gpu, links_per_gpu, total_links, bw):
    G = T.dgx1_hybrid_cube_mesh(gpu)
    assert G.number_of_nodes() == 8 and G.number_of_edges() == 16
    for i in range(8):
        assert sum(G.edges[e]["links"] for e in G.edges(i)) == links_per_gpu
        assert sum(G.edges[e]["bw_Bps"] for e in G.edges(i)) == pytest.approx(links_per_gpu * bw)
    assert sum(d["links"] for _, _, d in G.edges(data=True)) == total_links
    assert sum(d for _, d in G.degree(weight="links")) == 2 * total_links  # 48 link ends on the V100
    # two fully connected quads plus the i <-> i+4 cross links
    for q in (0, 4):
        assert all(G.has_edge(q + i, q + j) for i in range(4) for j in range(i + 1, 4))
    assert all(G.has_edge(i, i + 4) for i in range(4))
    assert not any(G.has_edge(i, j) for i in range(4) for j in range(4, 8) if j != i + 4)
    assert G.graph["diameter_hops"] == 2 == endpoint_diameter(G)


def test_dgx1_v100_doubled_pairs():
    G = T.dgx1_hybrid_cube_mesh("v100")
    doubled = sorted(tuple(sorted(e)) for e in G.edges if G.edges[e]["links"] == 2)
    assert doubled == [(0, 3), (0, 4), (1, 2), (1, 5), (2, 3), (4, 7), (5, 6), (6, 7)]
    assert G.edges[0, 3]["bw_Bps"] == 50e9 and G.edges[0, 1]["bw_Bps"] == 25e9


@pytest.mark.parametrize("n,k", [(16, 6), (8, 6), (1, 1)])
def test_nvswitch(n, k):
    G = T.nvswitch(n, k, 25e9)
    assert (G.number_of_nodes(), G.number_of_edges()) == (n + 1, n)
    assert all(d["bw_Bps"] == k * 25e9 and d["links"] == k for _, _, d in G.edges(data=True))
    assert G.graph["bisection_bw_Bps"] == (n // 2) * k * 25e9


@pytest.mark.parametrize("n,gps,sockets", [(8, 2, 2), (4, 4, 1), (4, 1, 2), (9, 2, 2), (8, 2, 4)])
def test_pcie_counts(n, gps, sockets):
    G = T.pcie_tree(n, gps, 16e9, 1e-7, sockets=sockets)
    S = math.ceil(n / gps)
    assert G.number_of_nodes() == n + S + sockets
    assert G.number_of_edges() == n + S + sockets * (sockets - 1) // 2
    assert G.graph["diameter_hops"] == endpoint_diameter(G)


def test_pcie_dgx1_like_bisection_is_the_socket_link():
    G = T.pcie_tree(8, 2, 16e9, 1e-7, sockets=2, socket_link_bw_Bps=19.2e9)
    assert G.graph["bisection_bw_Bps"] == 19.2e9  # min(QPI 19.2, 2 uplinks 32, 4 GPUs 64) GB/s
    G = T.pcie_tree(8, 2, 16e9, 1e-7, sockets=2, socket_link_bw_Bps=40e9)
    assert G.graph["bisection_bw_Bps"] == 32e9  # now the two switch uplinks of a socket limit
    G = T.pcie_tree(8, 2, 16e9, 1e-7, sockets=2, uplink_bw_Bps=64e9, socket_link_bw_Bps=100e9)
    assert G.graph["bisection_bw_Bps"] == 64e9  # and then the four GPU links
    assert G.graph["diameter_hops"] == 5


# ----------------------------------------------------------------------------------------------------
# diameter and bisection against networkx

@pytest.mark.parametrize("G", SMALL, ids=SMALL_IDS)
def test_diameter_matches_networkx(G):
    assert endpoint_diameter(G) == G.graph["diameter_hops"]


@pytest.mark.parametrize("G", SMALL, ids=SMALL_IDS)
def test_bisection_matches_max_flow(G):
    assert T.max_flow_bandwidth(G) == pytest.approx(T.bisection_bandwidth(G), rel=1e-12)


@pytest.mark.parametrize("n_leaves,E,U,ub", [(2, 28, 20, OPA), (4, 4, 2, 1e9), (6, 3, 4, 1e9), (8, 4, 4, 0.5e9)])
def test_fat_tree_bisection_closed_form(n_leaves, E, U, ub):
    G = T.fat_tree(n_leaves * E, E, U, 1e9 if ub != OPA else OPA, 0.0, uplink_bw_Bps=ub)
    bw = G.graph["link_bw_Bps"]
    expected = (n_leaves / 2) * min(E * bw, U * ub)
    assert G.graph["bisection_bw_Bps"] == pytest.approx(expected)
    # natural cut (leaves with their side, spines on the other side) is the uplink cut
    assert T.cut_bandwidth(G, T.natural_side(G)) == pytest.approx((n_leaves / 2) * U * ub)
    if n_leaves * E <= 64:
        assert T.max_flow_bandwidth(G) == pytest.approx(expected)


@pytest.mark.parametrize("pods,lpp,E,U,U2", [(2, 2, 2, 2, 2), (4, 2, 4, 2, 1), (2, 3, 2, 2, 3)])
def test_fat_tree_three_level_bisection_closed_form(pods, lpp, E, U, U2):
    n = pods * lpp * E
    G = T.fat_tree(n, E, U, 1e9, 0.0, levels=3, leaves_per_pod=lpp, uplinks_per_agg=U2)
    expected = (pods / 2) * min(lpp * min(E * 1e9, U * 1e9), U * U2 * 1e9)
    assert G.graph["bisection_bw_Bps"] == pytest.approx(expected)
    assert T.max_flow_bandwidth(G) == pytest.approx(expected)
    assert G.graph["oversubscription_by_level"] == pytest.approx((E / U, lpp / U2))


@pytest.mark.parametrize("dims", [(4, 4), (4, 8), (8, 4), (6, 6), (4, 4, 4), (2, 2, 2), (3, 5), (2, 6, 4)])
def test_torus_bisection_closed_form(dims):
    G = T.torus(dims, 2e9, 0.0)
    P, D = math.prod(dims), max(dims)
    expected = (2 * P / D if D >= 3 else P / 2) * 2e9
    assert G.graph["bisection_bw_Bps"] == pytest.approx(expected)
    assert T.cut_bandwidth(G, T.natural_side(G)) == pytest.approx(expected)
    assert T.max_flow_bandwidth(G) == pytest.approx(expected)


def test_dgx1_bisection_values():
    assert T.dgx1_hybrid_cube_mesh("p100").graph["bisection_bw_Bps"] == 80e9
    assert T.dgx1_hybrid_cube_mesh("v100").graph["bisection_bw_Bps"] == 150e9
    G = T.dgx1_hybrid_cube_mesh("v100")
    assert T.cut_bandwidth(G, T.natural_side(G)) == 150e9


@pytest.mark.parametrize("g,a,p,h", [(4, 3, 2, 1), (6, 4, 2, 2), (9, 4, 1, 2)])
def test_dragonfly_bisection_is_the_global_cut(g, a, p, h):
    G = T.dragonfly(g, a, p, h, 10e9, 1e9, 0.0)  # fast local links: the global cut is the bottleneck
    cross = G.graph["global_links_between_halves"]
    assert G.graph["bisection_bw_Bps"] == pytest.approx(cross * 1e9)
    assert T.cut_bandwidth(G, T.natural_side(G)) == pytest.approx(cross * 1e9)
    assert T.max_flow_bandwidth(G) == pytest.approx(cross * 1e9)


def test_dragonfly_diameter_three_router_hops():
    G = T.dragonfly(9, 4, 2, 2, 1e9, 1e9, 0.0)  # g = a*h + 1: one link per pair of groups
    assert G.graph["diameter_hops"] == 5 == endpoint_diameter(G)
    G2 = T.dragonfly(2, 4, 1, 1, 1e9, 1e9, 0.0)  # two groups: global then local reaches every router
    assert G2.graph["diameter_hops"] == 4 == endpoint_diameter(G2)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 30), E=st.integers(1, 6), U=st.integers(1, 4), ub=st.sampled_from([0.5e9, 1e9, 3e9]),
       levels=st.sampled_from([2, 3]), lpp=st.integers(1, 3), U2=st.integers(1, 3))
def test_fat_tree_bisection_and_diameter_property(n, E, U, ub, levels, lpp, U2):
    extra = {"leaves_per_pod": lpp, "uplinks_per_agg": U2} if levels == 3 else {}
    G = T.fat_tree(n, E, U, 1e9, 0.0, levels=levels, uplink_bw_Bps=ub, **extra)
    assert T.max_flow_bandwidth(G) == pytest.approx(G.graph["bisection_bw_Bps"])
    assert endpoint_diameter(G) == G.graph["diameter_hops"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(g=st.integers(1, 8), a=st.integers(1, 4), p=st.integers(1, 3), h=st.integers(1, 3))
def test_dragonfly_diameter_property(g, a, p, h):
    if g > a * h + 1:
        with pytest.raises(SpecError) as err:
            T.dragonfly(g, a, p, h, 1e9, 1e9, 0.0)
        assert err.value.field == "groups"
        return
    G = T.dragonfly(g, a, p, h, 1e9, 1e9, 0.0)
    assert endpoint_diameter(G) == G.graph["diameter_hops"]
    assert G.graph["diameter_hops"] <= 5


# ----------------------------------------------------------------------------------------------------
# oversubscription and loads

def stampede2_like(uplinks: int, n_leaves: int = 2) -> nx.Graph:
    return T.fat_tree(28 * n_leaves, 28, uplinks, OPA, 0.0)


def test_oversubscription_ratio_28_20():
    G = stampede2_like(20)
    assert G.graph["oversubscription"] == pytest.approx(28 / 20)
    assert stampede2_like(28).graph["oversubscription"] == 1.0


@pytest.mark.parametrize("nbytes", [1e3, 1e6, 25e6 * 4])
def test_leaf_to_leaf_is_oversubscription_times_slower(nbytes):
    pairs = [(e, e + 28) for e in range(28)]  # all of leaf 0 sends to leaf 1
    t_over = T.max_flow_time(stampede2_like(20), pairs, nbytes)
    t_full = T.max_flow_time(stampede2_like(28), pairs, nbytes)
    assert t_full == pytest.approx(nbytes / OPA)
    assert t_over / t_full == pytest.approx(28 / 20, rel=1e-12)


def test_leaf_to_leaf_static_dmodk_loads():
    pairs = [(e, e + 28) for e in range(28)]
    loads = T.link_loads(stampede2_like(20), pairs, routing="static")
    up = {e: v for e, v in loads.items() if e[0] == ("leaf", 0)}
    assert len(up) == 20 and sum(up.values()) == 28
    assert max(up.values()) == 2  # D-mod-k: ceil(28 / 20) flows on the busiest uplink
    assert max(T.link_loads(stampede2_like(28), pairs, routing="static").values()) == 1


def test_ring_on_torus_has_load_one():
    G = T.torus((8, 8), 1e9, 1e-6)
    eps = T.endpoints(G)
    # snake ring over the 2D torus: every hop is a single link
    order = [r * 8 + (c if r % 2 == 0 else 7 - c) for r in range(8) for c in range(8)]
    ring = [(order[i], order[(i + 1) % 64]) for i in range(64)]
    assert sorted(order) == eps
    for routing in ("spread", "static"):
        loads = T.link_loads(G, ring, routing)
        assert max(loads.values()) == 1.0
    assert T.max_flow_time(G, ring, 1e6) == pytest.approx(1e-6 + 1e6 / 1e9)


def test_random_pairs_on_oversubscribed_tree_overload_links():
    G = T.fat_tree(28 * 8, 28, 20, OPA, 0.0)
    rng = random.Random(1234)
    perm = list(range(28 * 8))
    rng.shuffle(perm)
    pairs = [(i, perm[i]) for i in range(len(perm)) if perm[i] != i]
    assert max(T.link_loads(G, pairs).values()) > 1.0
    assert max(T.link_loads(G, pairs, routing="static").values()) > 1.0
    assert T.max_flow_time(G, pairs, 1e6) > 1e6 / OPA


def test_link_loads_conserve_flow():
    for G in SMALL:
        eps = T.endpoints(G)
        pairs = [(eps[i], eps[(i * 7 + 3) % len(eps)]) for i in range(len(eps))]
        for routing in ("spread", "static"):
            loads = T.link_loads(G, pairs, routing)
            net: dict = {}
            for (u, v), f in loads.items():
                net[u] = net.get(u, 0.0) + f
                net[v] = net.get(v, 0.0) - f
            expect: dict = {}
            for s, d in pairs:
                if s != d:
                    expect[s] = expect.get(s, 0.0) + 1
                    expect[d] = expect.get(d, 0.0) - 1
            for node in set(net) | set(expect):
                assert net.get(node, 0.0) == pytest.approx(expect.get(node, 0.0), abs=1e-9), (G.graph["name"], node)


def test_max_flow_time_invariants():
    G = T.fat_tree(64, 8, 4, 1e9, 1e-6)
    pairs = [(i, (i + 8) % 64) for i in range(64)]
    t1 = T.max_flow_time(G, pairs, 1e6)
    assert T.max_flow_time(G, pairs, 2e6) > t1  # monotone in size
    faster = T.fat_tree(64, 8, 4, 2e9, 1e-6)
    assert T.max_flow_time(faster, pairs, 1e6) < t1  # falls as bandwidth rises
    assert T.max_flow_time(G, pairs, 0) == pytest.approx(4e-6)  # latency only: 4 hops
    assert T.max_flow_time(G, [(3, 3)], 1e9) == 0.0
    assert T.max_flow_time(G, [], 1e9) == 0.0
    # 8 flows leave each leaf over 4 uplinks: load 2 -> twice the single-link time
    assert t1 == pytest.approx(4e-6 + 2 * 1e6 / 1e9)


# ----------------------------------------------------------------------------------------------------
# paths

def _check_path(G, s, d, edges):
    assert all(G.has_edge(u, v) for u, v in edges)
    if s == d:
        assert edges == []
        return
    assert edges[0][0] == s and edges[-1][1] == d
    assert all(edges[i][1] == edges[i + 1][0] for i in range(len(edges) - 1))
    nodes = [s] + [v for _, v in edges]
    assert len(set(nodes)) == len(nodes)  # no loops


@pytest.mark.parametrize("G", SMALL, ids=SMALL_IDS)
def test_every_path_is_connected_and_minimal(G):
    eps = T.endpoints(G)
    for s, d in itertools.product(eps, eps):
        edges = T.path(G, s, d)
        _check_path(G, s, d, edges)
        hops = nx.shortest_path_length(G, s, d)
        kind = G.graph["routing"]
        if kind == "dragonfly":
            assert len(edges) <= 5
        elif kind == "cluster":
            assert len(edges) <= G.graph["diameter_hops"]
        else:
            assert len(edges) == hops
        assert T.bottleneck_bw(G, s, d) == (min(G.edges[e]["bw_Bps"] for e in edges) if edges else math.inf)
        assert T.path_latency(G, s, d) == pytest.approx(sum(G.edges[e]["latency_s"] for e in edges))
        fr = T.route_fractions(G, s, d)
        assert all(G.has_edge(u, v) and 0 < f <= 1 for (u, v), f in fr)


def test_fat_tree_dmodk_path():
    G = T.fat_tree(56, 28, 20, OPA, 1e-6)
    assert T.path(G, 0, 50) == [(0, ("leaf", 0)), (("leaf", 0), ("spine", 50 % 20)),
                                (("spine", 50 % 20), ("leaf", 1)), (("leaf", 1), 50)]
    assert T.path(G, 0, 5) == [(0, ("leaf", 0)), (("leaf", 0), 5)]
    assert T.path_latency(G, 0, 50) == pytest.approx(4e-6)


def test_torus_dimension_order_path():
    G = T.torus((4, 4), 1e9, 0.0)
    # from (0,0) to (1,3): dimension 0 first (+1), then dimension 1 the short way (-1, wraparound)
    assert T.path(G, 0, 7) == [(0, 4), (4, 7)]
    # tie in dimension 0 (offset 2 of 4): static goes +, spread splits both ways
    assert T.path(G, 0, 8) == [(0, 4), (4, 8)]
    fr = dict(T.route_fractions(G, 0, 8))
    assert fr == {(0, 4): 0.5, (4, 8): 0.5, (0, 12): 0.5, (12, 8): 0.5}


def test_cluster_paths_and_bottleneck():
    net = {"kind": "fat-tree", "endpoints_per_leaf": 8, "uplinks_per_leaf": 4, "link_bw_Bps": OPA, "latency_s": 1e-6}
    G = T.cluster_with_nodes(T.dgx1_hybrid_cube_mesh("v100"), 4, net, 4, 12e9, nic_latency_s=2e-7)
    assert T.endpoints(G)[:3] == [(0, 0), (0, 1), (0, 2)] and len(T.endpoints(G)) == 32
    # inside a node: NVLink only, never through the NIC
    assert T.path(G, (1, 0), (1, 3)) == [((1, 0), (1, 3))]
    assert T.bottleneck_bw(G, (1, 0), (1, 3)) == 50e9
    # across nodes: device -> NIC (i % 4) -> fat tree -> NIC -> device
    p = T.path(G, (0, 5), (3, 2))
    assert p[0] == ((0, 5), (0, ("nic", 1))) and p[-1] == ((3, ("nic", 2)), (3, 2))
    assert T.bottleneck_bw(G, (0, 5), (3, 2)) == 12e9
    assert T.path_latency(G, (0, 5), (3, 2)) == pytest.approx(2 * 2e-7 + 4e-6)
    assert G.graph["diameter_hops"] == 6 and G.graph["oversubscription"] == 2.0


def test_routes_are_cached_on_1024_endpoints():
    graphs = [
        T.fat_tree(1024, 32, 16, OPA, 1e-6),
        T.fat_tree(1024, 16, 8, OPA, 1e-6, levels=3, leaves_per_pod=8, uplinks_per_agg=4),
        T.torus((32, 32), OPA, 1e-6),
        T.torus((8, 8, 16), OPA, 1e-6),
        T.dragonfly(16, 16, 4, 4, OPA, OPA, 1e-6),
        T.cluster_with_nodes(T.dgx1_hybrid_cube_mesh("v100"), 128,
                             {"kind": "fat-tree", "endpoints_per_leaf": 32, "uplinks_per_leaf": 16,
                              "link_bw_Bps": OPA, "latency_s": 1e-6}, 4, OPA),
    ]
    for G in graphs:
        eps = T.endpoints(G)
        assert len(eps) == 1024
        ring = [(eps[i], eps[(i + 1) % 1024]) for i in range(1024)]
        t = T.max_flow_time(G, ring, 1e6)
        # a ring by endpoint order never shares a link on these graphs: each flow runs at its bottleneck
        assert max(T.link_loads(G, ring).values()) == pytest.approx(1.0)
        assert t == pytest.approx(max(T.path_latency(G, s, d) + 1e6 / T.bottleneck_bw(G, s, d) for s, d in ring))
        # cached: the second call reuses the graph's index and its route tables, and adds nothing to them
        ix = G.graph["_fast"]

        def sizes():
            return sum(len(v) for v in ix.pair_routes.values()), len(ix.tables)
        cached = sizes()
        assert sum(cached) > 0, G.graph["name"]
        assert T.max_flow_time(G, ring, 1e6) == t
        assert G.graph["_fast"] is ix and sizes() == cached


# ----------------------------------------------------------------------------------------------------
# placement

def test_placement_block_and_round_robin_on_cluster():
    G = T.cluster_with_nodes(T.dgx1_hybrid_cube_mesh("v100"), 4,
                             {"kind": "single-switch", "link_bw_Bps": OPA, "latency_s": 1e-6}, 1, OPA)
    block = T.place_ranks(G, 10)
    assert block == [(0, i) for i in range(8)] + [(1, 0), (1, 1)]
    rr = T.place_ranks(G, 10, policy="round-robin")
    assert rr == [(r % 4, r // 4) for r in range(10)]
    assert T.place_ranks(G, 32, policy="round-robin")[-1] == (3, 7)
    assert sorted(T.place_ranks(G, 32, policy="round-robin")) == sorted(T.place_ranks(G, 32)) == T.endpoints(G)


def test_placement_flat_graph_and_ranks_per_endpoint():
    G = T.single_switch(4, 1e9, 0.0)
    assert T.place_ranks(G, 6, ranks_per_endpoint=2) == [0, 0, 1, 1, 2, 2]
    assert T.place_ranks(G, 6, ranks_per_endpoint=2, policy="round-robin") == [0, 1, 2, 3, 0, 1]
    # explicit grouping: two "hosts" of two endpoints each
    assert T.place_ranks(G, 4, policy="round-robin", group_key=lambda e: e // 2) == [0, 2, 1, 3]
    with pytest.raises(InfeasibleError):
        T.place_ranks(G, 9, ranks_per_endpoint=2)


@pytest.mark.parametrize("kwargs,field", [({"n_ranks": 0}, "n_ranks"), ({"n_ranks": 2.5}, "n_ranks"),
                                          ({"n_ranks": 2, "ranks_per_endpoint": 0}, "ranks_per_endpoint"),
                                          ({"n_ranks": 2, "policy": "scatter"}, "policy"),
                                          ({"n_ranks": 2, "policy": "round-robin", "group_key": 3}, "group_key")])
def test_placement_errors(kwargs, field):
    with pytest.raises(SpecError) as err:
        T.place_ranks(T.single_switch(4, 1e9, 0.0), **kwargs)
    assert err.value.field == field


# ----------------------------------------------------------------------------------------------------
# registry and errors

def test_registry_builds_every_kind():
    assert T.available() == sorted(["single-switch", "fat-tree", "torus", "dragonfly", "dgx1-hybrid-cube-mesh",
                                    "nvswitch", "pcie-tree", "cluster"])
    G = T.build("fat-tree", n_endpoints=56, endpoints_per_leaf=28, uplinks_per_leaf=20, link_bw_Bps=OPA, latency_s=0.0)
    assert G.graph["kind"] == "fat-tree" and G.graph["oversubscription"] == pytest.approx(1.4)
    assert G.graph["params"]["uplinks_per_leaf"] == 20 and G.graph["uplinks_per_leaf"] == 20
    assert T.build("dgx1-hybrid-cube-mesh", gpu="p100").graph["nvlink_bw_Bps"] == 20e9
    assert T.build("torus", dims=(2, 2), link_bw_Bps=1.0, latency_s=0.0).number_of_nodes() == 4
    c = T.build("cluster", node_graph={"kind": "nvswitch"}, n_nodes=2,
                network={"kind": "single-switch", "link_bw_Bps": OPA, "latency_s": 0.0}, nics_per_node=2,
                nic_bw_Bps=OPA)
    assert c.graph["num_endpoints"] == 32


def test_registry_errors():
    with pytest.raises(SpecError) as err:
        T.build("hypercube", n=4)
    assert err.value.field == "kind" and "fat-tree" in str(err.value) and "hypercube" in str(err.value)
    with pytest.raises(SpecError) as err:
        T.build("torus", dims=(2, 2), link_bw_Bps=1.0, latency_s=0.0, wrap=False)
    assert err.value.field == "wrap" and err.value.source == "topology:torus"
    with pytest.raises(SpecError) as err:
        T.build("torus", dims=(2, 2), latency_s=0.0)
    assert err.value.field == "link_bw_Bps"


BAD = [
    (T.single_switch, dict(n_endpoints=0, link_bw_Bps=1.0, latency_s=0.0), "n_endpoints"),
    (T.single_switch, dict(n_endpoints=True, link_bw_Bps=1.0, latency_s=0.0), "n_endpoints"),
    (T.single_switch, dict(n_endpoints=4, link_bw_Bps=-1.0, latency_s=0.0), "link_bw_Bps"),
    (T.single_switch, dict(n_endpoints=4, link_bw_Bps=float("nan"), latency_s=0.0), "link_bw_Bps"),
    (T.single_switch, dict(n_endpoints=4, link_bw_Bps=1.0, latency_s=-1e-6), "latency_s"),
    (T.fat_tree, dict(n_endpoints=8, endpoints_per_leaf=0, uplinks_per_leaf=2, link_bw_Bps=1.0, latency_s=0.0),
     "endpoints_per_leaf"),
    (T.fat_tree, dict(n_endpoints=8, endpoints_per_leaf=4, uplinks_per_leaf=2, link_bw_Bps=1.0, latency_s=0.0,
                      levels=4), "levels"),
    (T.fat_tree, dict(n_endpoints=8, endpoints_per_leaf=4, uplinks_per_leaf=2, link_bw_Bps=1.0, latency_s=0.0,
                      levels=3), "leaves_per_pod"),
    (T.fat_tree, dict(n_endpoints=8, endpoints_per_leaf=4, uplinks_per_leaf=2, link_bw_Bps=1.0, latency_s=0.0,
                      leaves_per_pod=2), "leaves_per_pod"),
    (T.fat_tree, dict(n_endpoints=8, endpoints_per_leaf=4, uplinks_per_leaf=2, link_bw_Bps=1.0, latency_s=0.0,
                      uplink_bw_Bps=0), "uplink_bw_Bps"),
    (T.torus, dict(dims=(4, 0), link_bw_Bps=1.0, latency_s=0.0), "dims[1]"),
    (T.torus, dict(dims=(2, 2, 2, 2), link_bw_Bps=1.0, latency_s=0.0), "dims"),
    (T.torus, dict(dims="44", link_bw_Bps=1.0, latency_s=0.0), "dims"),
    (T.dragonfly, dict(groups=10, routers_per_group=4, endpoints_per_router=2, global_links_per_router=2,
                       link_bw_Bps=1.0, global_bw_Bps=1.0, latency_s=0.0), "groups"),
    (T.dragonfly, dict(groups=4, routers_per_group=4, endpoints_per_router=2, global_links_per_router=1,
                       link_bw_Bps=1.0, global_bw_Bps=0.0, latency_s=0.0), "global_bw_Bps"),
    (T.dgx1_hybrid_cube_mesh, dict(gpu="a100"), "gpu"),
    (T.dgx1_hybrid_cube_mesh, dict(gpu="v100", nvlink_bw_Bps=0), "nvlink_bw_Bps"),
    (T.nvswitch, dict(n_gpus=16, links_per_gpu=0), "links_per_gpu"),
    (T.pcie_tree, dict(n_gpus=8, gpus_per_switch=2, pcie_bw_Bps=16e9, latency_s=0.0, sockets=0), "sockets"),
    (T.pcie_tree, dict(n_gpus=8, gpus_per_switch=2, pcie_bw_Bps=16e9, latency_s=0.0, socket_link_bw_Bps=-1),
     "socket_link_bw_Bps"),
    (T.cluster_with_nodes, dict(node_graph=None, n_nodes=4, network={"kind": "torus", "dims": (3, 3),
                                "link_bw_Bps": 1.0, "latency_s": 0.0}, nics_per_node=1, nic_bw_Bps=1.0), "network"),
    (T.cluster_with_nodes, dict(node_graph=None, n_nodes=4, network={"kind": "single-switch", "n_endpoints": 3,
                                "link_bw_Bps": 1.0, "latency_s": 0.0}, nics_per_node=1, nic_bw_Bps=1.0),
     "network.n_endpoints"),
    (T.cluster_with_nodes, dict(node_graph=None, n_nodes=2, network={"link_bw_Bps": 1.0}, nics_per_node=1,
                                nic_bw_Bps=1.0), "network"),
    (T.cluster_with_nodes, dict(node_graph=None, n_nodes=2, network={"kind": "single-switch", "link_bw_Bps": 1.0,
                                "latency_s": 0.0}, nics_per_node=0, nic_bw_Bps=1.0), "nics_per_node"),
]


@pytest.mark.parametrize("builder,kwargs,field", BAD, ids=[f"{b.__name__}-{f}" for b, _, f in BAD])
def test_bad_parameters_raise_spec_error(builder, kwargs, field):
    with pytest.raises(SpecError) as err:
        builder(**kwargs)
    assert err.value.field == field
    assert err.value.source.startswith("topology")
    assert field.split("[")[0].split(".")[0] in str(err.value)


def test_routing_errors():
    G = T.single_switch(4, 1e9, 0.0)
    with pytest.raises(SpecError) as err:
        T.path(G, 0, 99)
    assert err.value.field == "dst"
    with pytest.raises(SpecError) as err:
        T.path(G, [0], 1)
    assert err.value.field == "src"
    with pytest.raises(SpecError) as err:
        T.link_loads(G, [(0, 1)], routing="adaptive")
    assert err.value.field == "routing"
    with pytest.raises(SpecError) as err:
        T.max_flow_time(G, [(0, 1)], -1.0)
    assert err.value.field == "nbytes"
    with pytest.raises(SpecError):
        T.bisection_bandwidth(nx.path_graph(3))
    with pytest.raises(SpecError) as err:
        T.path(T.fat_tree(8, 4, 2, 1e9, 0.0), ("leaf", 0), 5)
    assert err.value.field == "src"


def test_copies_get_their_own_route_cache():
    G = T.single_switch(4, 1e9, 1e-6)
    assert T.path_latency(G, 0, 1) == pytest.approx(2e-6)
    H = G.copy()
    for _, _, d in H.edges(data=True):
        d["latency_s"] = 5e-6
        d["bw_Bps"] = 2e9
    assert T.path_latency(H, 0, 1) == pytest.approx(1e-5)
    assert T.path_latency(G, 0, 1) == pytest.approx(2e-6)
    assert T.max_flow_time(H, [(0, 1)], 2e9) == pytest.approx(1e-5 + 1.0)


def test_spread_latency_is_the_longest_sub_path():
    # 2 groups of 2 routers, 2 global ports each: links r00-r10 (x2) and r01-r11 (x2)
    G = T.dragonfly(2, 2, 1, 2, 1e9, 1e9, 1e-6)
    assert G.edges[("router", 0, 0), ("router", 1, 0)]["links"] == 2
    # static: dst % 4 = 2 -> a link r00-r10: endpoint-router-router-endpoint, 3 hops
    assert T.path_latency(G, 0, 2) == pytest.approx(3e-6)
    # spread: half the flow goes r00-r01-r11-r10 (5 hops); the flow ends with its slowest part
    fr = dict(T.route_fractions(G, 0, 2))
    assert fr[(("router", 0, 0), ("router", 1, 0))] == 0.5 and fr[(("router", 0, 1), ("router", 1, 1))] == 0.5
    assert T.max_flow_time(G, [(0, 2)], 0) == pytest.approx(5e-6)
    assert T.max_flow_time(G, [(0, 2)], 0, routing="static") == pytest.approx(3e-6)
