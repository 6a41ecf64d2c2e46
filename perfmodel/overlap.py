"""Gradient bucketing and communication/backward overlap.

Model (the same rule the executor implements, so prediction and measurement are comparable):

- Backward runs through the layers in reverse forward order. A layer's parameter gradients are ready when
  its backward (input-gradient and weight-gradient) is done.
- Gradients are packed into buckets in the order they become ready: a bucket is closed as soon as it holds
  at least ``bucket_bytes`` (the last bucket takes whatever is left). This is PyTorch DDP's rule without its
  special small first bucket.
- A bucket's allreduce starts when the bucket is full *and* the previous bucket's allreduce has finished
  (one collective in flight at a time, as with one communicator/stream); it takes ``comm_s[k]``.
- Exposed communication = time from the end of backward until the last allreduce ends (never negative).
  With overlap off, every allreduce starts after backward: exposed = total.

Approximation: communication does not slow compute down (no contention for cores or memory bandwidth);
on CPU ranks that share cores with MPI progress this is optimistic and is noted where calibrated.

Everything is vectorised over a leading "configuration" axis so that sweeps evaluate many configurations
in one call: arrays of shape (C, L) for per-layer times and (C, K) for per-bucket comm times.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["assign_buckets", "OverlapResult", "overlap_schedule"]


def assign_buckets(grad_bytes_ready_order: np.ndarray, bucket_bytes: float) -> np.ndarray:
    """Bucket index of each gradient (in ready order): consecutive gradients fill a bucket until it holds
    at least ``bucket_bytes``.

    Parameters
    ----------
    grad_bytes_ready_order : array of shape (G,)
        Bytes of each parameterised layer's gradients, in the order they become ready in backward.
    bucket_bytes : float
        Bucket capacity in bytes (> 0).

    Returns
    -------
    ndarray of int, shape (G,)
        Non-decreasing bucket indices starting at 0.
    """
    sizes = np.asarray(grad_bytes_ready_order, dtype=float)
    out = np.empty(sizes.shape[0], dtype=np.int64)
    k, filled = 0, 0.0
    for i, s in enumerate(sizes):
        out[i] = k
        filled += s
        if filled >= bucket_bytes:
            k, filled = k + 1, 0.0
    return out


@dataclass(frozen=True)
class OverlapResult:
    """Per-configuration results, each an array of shape (C,) in seconds."""

    backward_s: np.ndarray       # backward compute time
    comm_total_s: np.ndarray     # sum of all bucket allreduce times
    comm_exposed_s: np.ndarray   # part of communication not hidden behind backward
    comm_end_s: np.ndarray       # time (from backward start) when the last allreduce ends
    bucket_ready_s: np.ndarray   # (C, K) ready time of each bucket
    bucket_start_s: np.ndarray   # (C, K) start time of each bucket's allreduce


def overlap_schedule(bwd_layer_s: np.ndarray, layer_bucket: np.ndarray, bucket_comm_s: np.ndarray,
                     overlap: bool = True) -> OverlapResult:
    """Schedule bucket allreduces against backward and return the exposed communication.

    Parameters
    ----------
    bwd_layer_s : array (C, L) or (L,)
        Backward time of each layer in *backward execution order* (reverse forward order), including
        parameterless layers, in seconds.
    layer_bucket : array (L,) of int
        Bucket index of each layer in the same order, or -1 for layers without gradients. Non-negative
        entries must be non-decreasing.
    bucket_comm_s : array (C, K) or (K,)
        Allreduce time of each bucket, seconds.
    overlap : bool
        If False, all allreduces run after backward.
    """
    bwd = np.atleast_2d(np.asarray(bwd_layer_s, dtype=float))
    comm = np.atleast_2d(np.asarray(bucket_comm_s, dtype=float))
    lb = np.asarray(layer_bucket)
    n_buckets = comm.shape[1]
    if lb.shape[0] != bwd.shape[1]:
        raise ValueError(f"layer_bucket has {lb.shape[0]} entries, bwd_layer_s has {bwd.shape[1]} layers")
    cum = np.cumsum(bwd, axis=1)
    backward_s = cum[:, -1]
    ready = np.empty((max(bwd.shape[0], comm.shape[0]), n_buckets))
    for k in range(n_buckets):
        idx = np.nonzero(lb == k)[0]
        if idx.size == 0:
            raise ValueError(f"bucket {k} holds no layer")
        ready[:, k] = cum[:, idx[-1]]          # bucket full when its last gradient is ready
    if not overlap:
        ready = np.broadcast_to(backward_s[:, None], ready.shape).copy()
    start = np.empty_like(ready)
    end_prev = np.zeros(ready.shape[0])
    comm_b = np.broadcast_to(comm, ready.shape)
    for k in range(n_buckets):
        start[:, k] = np.maximum(ready[:, k], end_prev)
        end_prev = start[:, k] + comm_b[:, k]
    comm_total = comm_b.sum(axis=1)
    exposed = np.maximum(end_prev - backward_s, 0.0)
    return OverlapResult(backward_s=np.broadcast_to(backward_s, end_prev.shape).copy(), comm_total_s=comm_total,
                         comm_exposed_s=exposed, comm_end_s=end_prev, bucket_ready_s=ready, bucket_start_s=start)
