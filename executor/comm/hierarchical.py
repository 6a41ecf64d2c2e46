"""Hierarchical (two-level) allreduce (Goyal et al. 2017; Jia et al. 2018), the executable twin of
:mod:`perfmodel.collectives.hierarchical`.

Nodes: the ranks sharing memory (``comm.Split_type(MPI.COMM_TYPE_SHARED)``) or, when ``ranks_per_node`` is
given, blocks of ``ranks_per_node`` consecutive ranks (``color = rank // ranks_per_node``, the cost model's
block placement; use it to emulate several nodes on one machine). ``L`` = ranks of a node, ``N`` = nodes.
Three sub-communicators are built once per (communicator, ranks_per_node) and cached: the node, the
*peers* (ranks with the same local rank on every node) and the *leaders* (local rank 0 of every node).

Variant ``"reduce_scatter"`` (default; Jia et al., NCCL): intra-node ring reduce-scatter (local rank ``i``
ends with block ``i`` of ``L``), then the ``L`` peer groups allreduce their ``n/L`` block across nodes
with the inter algorithm (concurrently), then an intra-node ring all-gather.

Variant ``"reduce_broadcast"`` (Goyal et al.): intra-node ring reduce-scatter, direct gather of the
blocks to the leader, allreduce of the whole vector among leaders, direct scatter from the leader,
intra-node ring all-gather (the cost model prices exactly these phases).

APPROXIMATION / deviation: the reduce-scatter variant needs every node to hold the same number of ranks
(peer groups must agree on block boundaries). When nodes differ in size (``p`` not a multiple of
``ranks_per_node``), the reduce-broadcast variant runs instead; :meth:`Hierarchical.effective_variant`
says which one ran. The cost model prices ``N`` full nodes in that case.

With a single node (``N == 1``) this is an intra-node ring; with one rank per node, the inter algorithm.
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import numpy as np
from mpi4py import MPI

from hardware.errors import ConfigError

from ._buffers import SOURCE, TAG, offsets
from .base import AllreduceAlgorithm
from .halving_doubling import HalvingDoubling
from .mpi_native import MPINative
from .recursive_doubling import RecursiveDoubling
from .ring import Ring, ring_allgather, ring_reduce_scatter

__all__ = ["Hierarchical", "NodeLayout", "node_layout", "free_layouts", "VARIANTS", "INTER_ALGORITHMS"]

VARIANTS = ("reduce_scatter", "reduce_broadcast")

#: algorithms allowed between nodes
INTER_ALGORITHMS: dict[str, AllreduceAlgorithm] = {
    a.name: a for a in (Ring(), RecursiveDoubling(), HalvingDoubling(), MPINative())
}


@dataclass
class NodeLayout:
    """Sub-communicators of a two-level layout (see the module docstring).

    Attributes
    ----------
    node : MPI.Comm
        The ranks of this rank's node (``local rank = node.Get_rank()``).
    peers : MPI.Comm
        Ranks with this rank's local rank, one per node, ordered by node.
    leaders : MPI.Comm
        Local rank 0 of every node; ``MPI.COMM_NULL`` on the other ranks.
    n_nodes : int
        Number of nodes ``N``.
    uniform : bool
        Whether every node holds the same number of ranks.
    """

    node: MPI.Comm
    peers: MPI.Comm
    leaders: MPI.Comm
    n_nodes: int
    uniform: bool

    def free(self) -> None:
        """Free the sub-communicators (collective over the parent communicator)."""
        for c in (self.node, self.peers, self.leaders):
            if c != MPI.COMM_NULL:
                c.Free()


_LAYOUTS: dict[tuple[int, int | None], tuple[MPI.Comm, NodeLayout]] = {}


def node_layout(comm: MPI.Comm, ranks_per_node: int | None = None) -> NodeLayout:
    """The (cached) two-level layout of ``comm``; collective on first use for a given ``ranks_per_node``."""
    key = (id(comm), ranks_per_node)
    hit = _LAYOUTS.get(key)
    if hit is not None and hit[0] is comm:
        return hit[1]
    rank = comm.Get_rank()
    if ranks_per_node is None:
        node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    else:
        node = comm.Split(color=rank // ranks_per_node, key=rank)
    local, size = node.Get_rank(), node.Get_size()
    stats = np.array([size, -size, 1 if local == 0 else 0], dtype=np.int64)
    mx = np.empty_like(stats)
    comm.Allreduce(stats[:2], mx[:2], op=MPI.MAX)
    comm.Allreduce(stats[2:], mx[2:], op=MPI.SUM)
    peers = comm.Split(color=local, key=rank)
    leaders = comm.Split(color=0 if local == 0 else MPI.UNDEFINED, key=rank)
    from .polite import PoliteComm

    if isinstance(comm, PoliteComm):  # sub-communicators of a polite one wait politely too
        node, peers = PoliteComm(node), PoliteComm(peers)
        leaders = PoliteComm(leaders) if leaders != MPI.COMM_NULL else leaders
    layout = NodeLayout(node=node, peers=peers, leaders=leaders, n_nodes=int(mx[2]),
                        uniform=bool(mx[0] == -mx[1]))
    _LAYOUTS[key] = (comm, layout)
    return layout


def free_layouts(comm: MPI.Comm) -> None:
    """Free the cached layouts built on ``comm`` (collective; call before freeing ``comm``)."""
    for key in [k for k, (c, _) in _LAYOUTS.items() if c is comm]:
        _LAYOUTS.pop(key)[1].free()


class Hierarchical(AllreduceAlgorithm):
    """Two-level allreduce: inside each node, between nodes, inside each node again.

    Parameters
    ----------
    ranks_per_node : int or None
        Ranks per (emulated) node, block placement; ``None``: the ranks that share memory form a node.
    inter_algorithm : str
        Allreduce between nodes: ``ring`` (default), ``recursive_doubling``, ``halving_doubling`` or
        ``mpi``.
    variant : str
        ``"reduce_scatter"`` (default) or ``"reduce_broadcast"`` (Goyal et al.).
    """

    name = "hierarchical"
    summary = "intra-node ring reduce-scatter, inter-node allreduce of n/L per peer group, intra-node all-gather"

    def __init__(self, ranks_per_node: int | None = None, inter_algorithm: str = "ring",
                 variant: str = "reduce_scatter"):
        if ranks_per_node is not None and (isinstance(ranks_per_node, bool)
                                           or not isinstance(ranks_per_node, Integral) or ranks_per_node < 1):
            raise ConfigError(SOURCE, "ranks_per_node", ranks_per_node, "must be an integer >= 1 (or None)")
        if inter_algorithm not in INTER_ALGORITHMS:
            raise ConfigError(SOURCE, "inter_algorithm", inter_algorithm,
                              f"unknown; known: {', '.join(INTER_ALGORITHMS)}")
        if variant not in VARIANTS:
            raise ConfigError(SOURCE, "variant", variant, f"must be one of {', '.join(VARIANTS)}")
        self.ranks_per_node = None if ranks_per_node is None else int(ranks_per_node)
        self.inter = INTER_ALGORITHMS[inter_algorithm]
        self.variant = variant

    def __repr__(self) -> str:
        return (f"Hierarchical(ranks_per_node={self.ranks_per_node!r}, inter_algorithm={self.inter.name!r}, "
                f"variant={self.variant!r})")

    def effective_variant(self, comm: MPI.Comm) -> str:
        """The variant that runs on ``comm`` (``reduce_broadcast`` when nodes differ in size)."""
        lay = node_layout(comm, self.ranks_per_node)
        return self.variant if lay.uniform else "reduce_broadcast"

    def _allreduce(self, a: np.ndarray, comm: MPI.Comm) -> None:
        lay = node_layout(comm, self.ranks_per_node)
        node = lay.node
        L, i = node.Get_size(), node.Get_rank()
        off = offsets(a.size, L)
        ring_reduce_scatter(a, node, off)  # local rank i holds block i of the node's sum
        if lay.uniform and self.variant == "reduce_scatter":
            if lay.n_nodes > 1:
                self.inter.allreduce(a[off[i]:off[i + 1]], lay.peers)
        else:
            if L > 1:  # direct gather of the blocks to the leader
                if i == 0:
                    reqs = [node.Irecv(a[off[j]:off[j + 1]], source=j, tag=TAG) for j in range(1, L)]
                    MPI.Request.Waitall(reqs)
                else:
                    node.Send(a[off[i]:off[i + 1]], dest=0, tag=TAG)
            if i == 0 and lay.n_nodes > 1:
                self.inter.allreduce(a, lay.leaders)
            if L > 1:  # direct scatter from the leader
                if i == 0:
                    reqs = [node.Isend(a[off[j]:off[j + 1]], dest=j, tag=TAG) for j in range(1, L)]
                    MPI.Request.Waitall(reqs)
                else:
                    node.Recv(a[off[i]:off[i + 1]], source=0, tag=TAG)
        ring_allgather(a, node, off)
