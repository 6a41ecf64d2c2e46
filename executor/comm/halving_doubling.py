"""Recursive halving and doubling allreduce (Rabenseifner 2004; Thakur, Rabenseifner and Gropp 2005,
section 4.4), the executable twin of :mod:`perfmodel.collectives.halving_doubling`.

Power of two ``p`` (MPICH order, as the cost model's steps): the reduce-scatter runs masks
``m = 1, 2, ..., p/2``; in step ``m`` survivor ``v`` splits its current window in two halves, keeps the
lower half if ``v & m == 0`` (else the upper), sends the other half to ``v XOR m`` and adds the half it
receives (``n/2, n/4, ...`` elements). Each rank ends with ``n/p`` fully reduced elements (the block whose
index is ``v`` bit-reversed). The all-gather replays the masks in reverse order, exchanging the current
window with the partner, which holds the sibling half (``..., n/4, n/2``).

Other ``p``: the simple pre/post step of the cost model (Thakur et al. 2005, not Rabenseifner and Traff's
binary blocks): the ``r`` odd ranks among the first ``2r`` fold their whole vector into their even
neighbour before, and receive the whole result after (:func:`~executor.comm.recursive_doubling.fold`,
:func:`~executor.comm.recursive_doubling.unfold`; the survivor mapping is the cost model's).

Windows are split at ``lo + (hi - lo) // 2``; both partners of a step hold the same window, so any ``n``
works (halves differ by at most one element).
"""
from __future__ import annotations

import numpy as np
from mpi4py import MPI

from ._buffers import TAG, workspace
from .base import AllreduceAlgorithm
from .recursive_doubling import fold, unfold

__all__ = ["HalvingDoubling"]


class HalvingDoubling(AllreduceAlgorithm):
    """Rabenseifner: recursive-halving reduce-scatter + recursive-doubling all-gather."""

    name = "halving_doubling"
    summary = ("Rabenseifner recursive halving (reduce-scatter) + doubling (all-gather); "
               "pre/post step for p not a power of two")

    def _allreduce(self, a: np.ndarray, comm: MPI.Comm) -> None:
        tmp = workspace(a.size, a.dtype)  # the pre-step needs n; the halving steps at most ceil(n/2)
        v, q, old = fold(a, comm, tmp)
        if v >= 0 and q > 1:
            masks = [1 << k for k in range(q.bit_length() - 1)]  # 1, 2, ..., q/2
            lo, hi = 0, a.size
            parents: list[tuple[int, int, int, int]] = []  # (window, half sent = partner's half)
            for m in masks:  # reduce-scatter: recursive halving
                partner = old[v ^ m]
                mid = lo + (hi - lo) // 2
                (klo, khi), (slo, shi) = ((lo, mid), (mid, hi)) if v & m == 0 else ((mid, hi), (lo, mid))
                rb = tmp[: khi - klo]
                comm.Sendrecv(a[slo:shi], dest=partner, sendtag=TAG, recvbuf=rb, source=partner, recvtag=TAG)
                np.add(a[klo:khi], rb, out=a[klo:khi])
                parents.append((lo, hi, slo, shi))
                lo, hi = klo, khi
            for m in reversed(masks):  # all-gather: recursive doubling
                partner = old[v ^ m]
                plo, phi, olo, ohi = parents.pop()
                comm.Sendrecv(a[lo:hi], dest=partner, sendtag=TAG, recvbuf=a[olo:ohi], source=partner,
                              recvtag=TAG)
                lo, hi = plo, phi
        unfold(a, comm)
