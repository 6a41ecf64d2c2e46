"""NVLink fabrics inside one server: the DGX-1 hybrid cube-mesh (P100 and V100) and NVSwitch.

DGX-1 hybrid cube-mesh
----------------------
Eight GPUs on the corners of a cube: two quads ``0-3`` and ``4-7``, each fully connected (the cube
faces plus their diagonals), and the four cross links ``i <-> i + 4``: 16 GPU pairs.

- P100 (NVLink 1, 20 GB/s per direction per link): every pair has one link, 4 links per GPU, 16 links.
- V100 (NVLink 2, 25 GB/s per direction per link): 6 links per GPU, 24 links (48 link ends); eight of
  the 16 pairs are doubled. Link list from ``nvidia-smi topo -m`` on a DGX-1V (NV1/NV2 entries) and the
  NCCL topology dump of a DGX-1V (``nvlink ... count="2"``), consistent with the whitepaper's "all 12 cube
  edges NVLinked, some doubled; two faces have diagonals" (hardware_specs.md [NVL])::

      NV2: 0-3 0-4 1-2 1-5 2-3 4-7 5-6 6-7      NV1: 0-1 0-2 1-3 2-6 3-7 4-5 4-6 5-7

Doubled links are aggregated on one edge (``links=2``, ``bw_Bps`` = 2 x the per-link bandwidth).
The graph holds NVLink only: GPU pairs without a link route through an intermediate GPU (2 hops), the way
NCCL forwards over NVLink; the PCIe/QPI path is the separate :func:`hardware.topology.pcie.pcie_tree`.
The P100 DGX-1 link list (one link per pair on the same 16 pairs) is treated as unverified in
hardware_specs.md (only a low-quality mirror of the NVIDIA diagram was found).

Natural partition: the two quads. Bisection: P100 4 x 20 GB/s = 80 GB/s; V100 (2 + 2 + 1 + 1) links x
25 GB/s = 150 GB/s (per direction). Diameter 2.

NVSwitch (DGX-2)
----------------
All GPUs reach every other through the NVSwitch planes; modelled as one non-blocking switch
``("nvswitch", 0)`` with one edge per GPU of ``links_per_gpu * nvlink_bw_Bps`` (``links=links_per_gpu``).
Bisection ``(n // 2) * links_per_gpu * nvlink_bw_Bps`` (DGX-2: the 48 links between the two baseboards
carry exactly the 8 x 6 links of one board, so the single switch is not optimistic). Diameter 2.
"""
from __future__ import annotations

import networkx as nx

from hardware.topology._common import add_link, check_bw, check_choice, check_int, check_latency, finish_graph, new_graph

__all__ = ["dgx1_hybrid_cube_mesh", "nvswitch", "DGX1_P100_LINKS", "DGX1_V100_LINKS", "KIND_DGX1", "KIND_NVSWITCH"]

KIND_DGX1 = "dgx1-hybrid-cube-mesh"
KIND_NVSWITCH = "nvswitch"

#: (gpu, gpu, links) of the P100 DGX-1: two fully connected quads plus i <-> i+4, one link each.
DGX1_P100_LINKS: tuple[tuple[int, int, int], ...] = tuple(
    [(q + i, q + j, 1) for q in (0, 4) for i in range(4) for j in range(i + 1, 4)] + [(i, i + 4, 1) for i in range(4)]
)

#: (gpu, gpu, links) of the V100 DGX-1 (see the module docstring for the source).
DGX1_V100_LINKS: tuple[tuple[int, int, int], ...] = (
    (0, 1, 1), (0, 2, 1), (0, 3, 2), (0, 4, 2),
    (1, 2, 2), (1, 3, 1), (1, 5, 2),
    (2, 3, 2), (2, 6, 1),
    (3, 7, 1),
    (4, 5, 1), (4, 6, 1), (4, 7, 2),
    (5, 6, 2), (5, 7, 1),
    (6, 7, 2),
)

_DEFAULT_NVLINK_BW = {"p100": 20e9, "v100": 25e9}


def dgx1_hybrid_cube_mesh(gpu: str = "v100", nvlink_bw_Bps: float | None = None, latency_s: float = 0.0) -> nx.Graph:
    """Build the NVLink graph of a DGX-1 (8 GPUs, endpoints ``0..7``).

    Parameters
    ----------
    gpu : {"v100", "p100"}
        Which DGX-1 generation (selects the link list).
    nvlink_bw_Bps : float, optional
        Bandwidth of one NVLink per direction; defaults to 20e9 (P100, NVLink 1) or 25e9 (V100,
        NVLink 2) per hardware_specs.md section 1.
    latency_s : float
        Latency per NVLink hop, seconds (default 0: no sourced value).
    """
    gpu = check_choice(KIND_DGX1, "gpu", gpu.lower() if isinstance(gpu, str) else gpu, ("v100", "p100"))
    bw = _DEFAULT_NVLINK_BW[gpu] if nvlink_bw_Bps is None else check_bw(KIND_DGX1, "nvlink_bw_Bps", nvlink_bw_Bps)
    lat = check_latency(KIND_DGX1, "latency_s", latency_s)
    G = new_graph(KIND_DGX1, f"dgx1-{gpu}", {"gpu": gpu, "nvlink_bw_Bps": bw, "latency_s": lat}, "shortest")
    for i in range(8):
        G.add_node(i, kind="endpoint", half=0 if i < 4 else 1)
    link_list = DGX1_V100_LINKS if gpu == "v100" else DGX1_P100_LINKS
    for u, v, n_links in link_list:
        add_link(G, u, v, bw, lat, "nvlink", links=n_links)
    cross = sum(n_links for u, v, n_links in link_list if (u < 4) != (v < 4))
    return finish_graph(G, list(range(8)), cross * bw, 2,
                        links_per_gpu=6 if gpu == "v100" else 4, n_links=sum(x for _, _, x in link_list))


def nvswitch(n_gpus: int = 16, links_per_gpu: int = 6, nvlink_bw_Bps: float = 25e9, latency_s: float = 0.0) -> nx.Graph:
    """Build an NVSwitch server (DGX-2 by default: 16 GPUs, 6 NVLink 2 links each).

    Parameters
    ----------
    n_gpus : int
        GPUs (endpoints ``0..n_gpus-1``), >= 1.
    links_per_gpu : int
        NVLinks from each GPU into the switch planes, >= 1.
    nvlink_bw_Bps : float
        Bandwidth of one NVLink per direction (25e9 for NVLink 2).
    latency_s : float
        Latency per hop (GPU to switch), seconds.
    """
    n = check_int(KIND_NVSWITCH, "n_gpus", n_gpus)
    k = check_int(KIND_NVSWITCH, "links_per_gpu", links_per_gpu)
    bw = check_bw(KIND_NVSWITCH, "nvlink_bw_Bps", nvlink_bw_Bps)
    lat = check_latency(KIND_NVSWITCH, "latency_s", latency_s)
    G = new_graph(KIND_NVSWITCH, f"nvswitch-{n}x{k}",
                  {"n_gpus": n, "links_per_gpu": k, "nvlink_bw_Bps": bw, "latency_s": lat}, "shortest")
    sw = ("nvswitch", 0)
    G.add_node(sw, kind="switch", half=None)
    for i in range(n):
        G.add_node(i, kind="endpoint", half=0 if i < n // 2 else 1)
        add_link(G, i, sw, bw, lat, "nvlink", links=k)
    return finish_graph(G, list(range(n)), (n // 2) * k * bw, 2 if n > 1 else 0, oversubscription=1.0)
