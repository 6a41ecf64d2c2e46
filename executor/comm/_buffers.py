"""Buffer plumbing shared by the explicit collectives: a flat numpy view of the caller's buffer, block
boundaries, per-thread scratch space and input checks.

A collective works *in place* on a contiguous 1-D view of the caller's buffer:

* a C-contiguous, writeable ``numpy.ndarray`` is reshaped to 1-D (a view, no copy);
* a contiguous CPU ``torch.Tensor`` is viewed through ``tensor.detach().numpy()`` (shares storage);
* a tensor on another device (CUDA) is staged through host memory: copied to a CPU tensor, reduced there,
  and copied back. APPROXIMATION: MPI from the ``mpich`` wheel is not CUDA-aware, so GPU buffers pay two
  device<->host copies; use :mod:`executor.comm.torch_dist` (NCCL) for GPU-resident collectives.

torch is never imported here: a tensor is recognised through ``sys.modules`` (if torch was never imported,
the buffer cannot be a tensor), so numpy-only users (the microbenchmark) do not pay torch's import time.
"""
from __future__ import annotations

import functools
import sys
import threading
from typing import Any, Callable

import numpy as np

from hardware.errors import ConfigError

__all__ = ["SOURCE", "DTYPES", "TAG", "as_flat_array", "block_offsets", "offsets", "workspace", "check_counts"]

#: ``source`` of the ConfigErrors raised for bad buffers and options
SOURCE = "executor.comm"

#: element types the explicit algorithms accept (the reduction is ``numpy.add``)
DTYPES: tuple[np.dtype, ...] = (np.dtype(np.float32), np.dtype(np.float64))

#: point-to-point tag used by every explicit algorithm. Each call runs to completion before the next one on
#: the same communicator starts, and MPI does not let messages between one pair overtake each other, so
#: one tag suffices (the communication thread uses its own duplicated communicator).
TAG = 7301


def _torch_tensor_type() -> type | None:
    torch = sys.modules.get("torch")
    return getattr(torch, "Tensor", None) if torch is not None else None


def as_flat_array(buf: Any, name: str = "buf") -> tuple[np.ndarray, Callable[[], None] | None]:
    """A 1-D numpy view of ``buf`` to reduce into, and a write-back function (or ``None``).

    Parameters
    ----------
    buf : numpy.ndarray or torch.Tensor
        Contiguous float32 (or float64) buffer. Modified in place by the collective.
    name : str
        Name used in error messages.

    Returns
    -------
    (array, writeback)
        ``array`` shares memory with ``buf`` for numpy arrays and CPU tensors (``writeback`` is ``None``);
        for a tensor on another device ``array`` is a host copy and ``writeback()`` copies it back.

    Raises
    ------
    ConfigError
        Unsupported type or dtype, non-contiguous or read-only buffer.
    """
    tensor_t = _torch_tensor_type()
    if tensor_t is not None and isinstance(buf, tensor_t):
        if not buf.is_contiguous():
            raise ConfigError(SOURCE, name, f"tensor of shape {tuple(buf.shape)}", "must be contiguous")
        t = buf.detach()
        if t.device.type == "cpu":
            arr, writeback = t.numpy().reshape(-1), None
        else:
            host = t.to("cpu")

            def writeback(host=host, t=t) -> None:
                t.copy_(host, non_blocking=False)

            arr = host.numpy().reshape(-1)
    elif isinstance(buf, np.ndarray):
        if not buf.flags.c_contiguous:
            raise ConfigError(SOURCE, name, f"array of shape {buf.shape}", "must be C-contiguous")
        if not buf.flags.writeable:
            raise ConfigError(SOURCE, name, f"array of shape {buf.shape}", "must be writeable (in place)")
        arr, writeback = buf.reshape(-1), None
    else:
        raise ConfigError(SOURCE, name, type(buf).__name__, "must be a numpy.ndarray or a torch.Tensor")
    if arr.dtype not in DTYPES:
        raise ConfigError(SOURCE, f"{name}.dtype", str(arr.dtype),
                          f"must be one of {', '.join(str(d) for d in DTYPES)}")
    return arr, writeback


def block_offsets(n: int, p: int) -> np.ndarray:
    """Boundaries of ``p`` nearly equal blocks of ``n`` elements: block ``i`` is ``[off[i], off[i+1])``.

    ``off[i] = floor(i n / p)``; block sizes differ by at most one (some are empty when ``n < p``).
    """
    i = np.arange(p + 1, dtype=np.int64)
    return (i * int(n)) // int(p)


@functools.lru_cache(maxsize=1024)
def offsets(n: int, p: int) -> tuple[int, ...]:
    """:func:`block_offsets` as a tuple of Python ints (cached: the algorithms index with it in loops, and
    numpy scalars would cost microseconds per slice on small messages)."""
    return tuple((i * n) // p for i in range(p + 1))


def check_counts(counts: Any, n: int, p: int, name: str = "counts") -> tuple[int, ...]:
    """Block boundaries (``p + 1`` Python ints) from explicit per-rank element ``counts`` (length ``p``,
    summing to ``n``), or the even split of :func:`offsets` when ``counts`` is ``None``."""
    if counts is None:
        return offsets(int(n), int(p))
    c = np.asarray(counts)
    if c.shape != (p,) or c.dtype.kind not in "iu" or (c < 0).any() or int(c.sum()) != n:
        raise ConfigError(SOURCE, name, list(np.ravel(c)) if c.size <= 16 else f"array of shape {c.shape}",
                          f"must be {p} non-negative integers summing to the buffer size {n}")
    return tuple(int(x) for x in np.concatenate([[0], np.cumsum(c, dtype=np.int64)]))


_local = threading.local()


def workspace(nelem: int, dtype: np.dtype) -> np.ndarray:
    """Scratch space of at least ``nelem`` elements of ``dtype`` (grown on demand, one per thread and dtype).

    Reused across calls so that large collectives do not pay a fresh allocation (and its page faults) on
    every call. The caller must not hold a previous workspace across another call that uses one.
    """
    cache = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    dt = np.dtype(dtype)
    buf = cache.get(dt)
    if buf is None or buf.size < nelem:
        buf = cache[dt] = np.empty(max(int(nelem), 1), dtype=dt)
    return buf[:nelem]
