"""Variable-count collectives on flat torch tensors through mpi4py's buffer API (used by K-FAC).

:class:`MPIBufferComm` wraps an mpi4py communicator: ``reduce_scatter_v`` (``MPI_Reduce_scatter`` with
per-rank counts, the ReduceScatterV of Osawa et al.), ``allgather_v`` (the executor's ring all-gather,
:func:`executor.comm.ring.ring_allgather`, not ``MPI_Allgatherv``: MPICH's ring Allgatherv sends large
blocks in 32 KiB pieces, one network round trip each, which measured 330 ms for 1 MiB between two emulated
hosts 20 ms apart where one exchange of the whole block took 32 ms; the cost model prices this ring) and
``allgather_scalar``. Tensors are staged to contiguous CPU memory (no copy when they already are) and
handed to MPI as numpy views: fp32 as ``MPI.FLOAT`` and fp64 as ``MPI.DOUBLE`` with ``MPI.SUM``; 16-bit
tensors (float16, bfloat16) travel as ``MPI.INT16_T`` words and are reduced by a user-defined commutative
``MPI.Op`` that adds in fp32 and rounds back, so 16-bit factors cost 2 bytes per element on the wire.
mpi4py is imported when the first communicator is wrapped, never at module import.
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch

__all__ = ["MPIBufferComm"]


def _mpi_dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "FLOAT", torch.float64: "DOUBLE"}[dtype]


class MPIBufferComm:
    """Thin wrapper of an mpi4py communicator: variable-count reduce-scatter and all-gather on flat tensors."""

    def __init__(self, comm: Any):
        from mpi4py import MPI  # imported only when a communicator is used

        self.MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self._ops: dict[torch.dtype, Any] = {}

    @staticmethod
    def _host(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to("cpu").contiguous()

    @staticmethod
    def _displs(counts: Sequence[int]) -> list[int]:
        out, acc = [], 0
        for c in counts:
            out.append(acc)
            acc += c
        return out

    def _half_op(self, dtype: torch.dtype) -> Any:
        op = self._ops.get(dtype)
        if op is None:
            def add16(inbuf: Any, inoutbuf: Any, datatype: Any, _dt: torch.dtype = dtype) -> None:
                import numpy as np

                a = torch.from_numpy(np.frombuffer(inbuf, dtype=np.int16).copy()).view(_dt)
                out = np.frombuffer(inoutbuf, dtype=np.int16)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    b = torch.from_numpy(out).view(_dt)
                b.copy_((a.float() + b.float()).to(_dt))
            op = self._ops[dtype] = self.MPI.Op.Create(add16, commute=True)
        return op

    def _spec(self, t: torch.Tensor) -> tuple[Any, Any, Any]:
        """(numpy view, MPI datatype, op) of a flat host tensor."""
        if t.dtype in (torch.float16, torch.bfloat16):
            return t.view(torch.int16).numpy(), self.MPI.INT16_T, self._half_op(t.dtype)
        return t.numpy(), getattr(self.MPI, _mpi_dtype_name(t.dtype)), self.MPI.SUM

    def reduce_scatter_v(self, send: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
        """Sum of ``send`` over ranks; this rank receives its ``counts[rank]`` elements (ReduceScatterV)."""
        send = self._host(send)
        recv = torch.empty(int(counts[self.rank]), dtype=send.dtype)
        s_np, mtype, op = self._spec(send)
        r_np, _, _ = self._spec(recv)
        self.comm.Reduce_scatter([s_np, mtype], [r_np, mtype], [int(c) for c in counts], op)
        return recv

    def allgather_v(self, send: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
        """Concatenation over ranks of every rank's ``send`` (``counts[r]`` elements each), on every rank:
        a ring of ``p - 1`` ``Sendrecv`` steps, each moving one rank's whole block (module docstring)."""
        from executor.comm.ring import ring_allgather

        send = self._host(send)
        counts = [int(c) for c in counts]
        if send.numel() != counts[self.rank]:
            raise ValueError(f"allgather_v: rank {self.rank} sends {send.numel()} elements, counts say "
                             f"{counts[self.rank]}")
        off = [*self._displs(counts), sum(counts)]
        recv = torch.empty(off[-1], dtype=send.dtype)
        r_np, _, _ = self._spec(recv)
        s_np, _, _ = self._spec(send)
        r_np[off[self.rank]:off[self.rank + 1]] = s_np
        ring_allgather(r_np, self.comm, off)
        return recv

    def allgather_scalar(self, x: float) -> list[float]:
        """Every rank's ``x`` (float64), in rank order."""
        import numpy as np

        send = np.array([x], dtype=np.float64)
        recv = np.empty(self.size, dtype=np.float64)
        self.comm.Allgather([send, self.MPI.DOUBLE], [recv, self.MPI.DOUBLE])
        return [float(v) for v in recv]
