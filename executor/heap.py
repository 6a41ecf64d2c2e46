"""Keep freed memory in the process's heap, so that a training step does not page-fault its tensors in anew.

Why: PyTorch on the CPU allocates every activation and gradient with the C library's ``malloc``. glibc
serves blocks above its mmap threshold (128 KiB at start, raised as blocks are freed) with fresh ``mmap``
pages and returns heap memory above its trim threshold to the kernel, so each step touches its tensors'
pages for the first time again. Measured on this 2-core VM (ResNet-20, 2 threads, forward and backward
with the loss, median of 6 steps): 3.4k-27k minor page faults and 9-61 ms of kernel time per step at
batches 16-128, 2.1-2.6 ms per image; with the heap kept, 0-1k faults, 0-3 ms of kernel time and
1.80-2.09 ms per image, with the per-image time no longer rising from batch 32 to 64. Page faults on a
virtual machine cost what the hypervisor makes them cost, so they were also a large part of the step's
run-to-run and session-to-session spread. CPU training guides recommend the same (jemalloc or tcmalloc
in place of glibc's defaults); this does it with glibc's own ``mallopt`` and no extra library.

What: :func:`keep_heap` sets, for this process, the mmap threshold to glibc's maximum (32 MiB on 64-bit),
the trim threshold and the top pad high, and turns ``mmap`` off for large blocks (``M_MMAP_MAX = 0``), so
that blocks above 32 MiB come from the heap too. Why the last: a block above the threshold is mapped
afresh at every allocation, and AlexNet allocates several every step (its first fully connected layer's
151 MB weight gradient, and the same size again for SGD's weight-decay term in ``torch.optim.SGD``).
Measured (AlexNet at batch 8, forward, backward and ``SGD(weight_decay=1e-4)`` step, 2 threads): with the
threshold alone 119k page faults per iteration and a 133-135 ms optimizer step; with ``mmap`` off 26-27k
faults and 74-86 ms, and the same peak resident memory (1.26-1.29 GB); ResNet-50 (no block that large)
unchanged at 24-29 ms. Every process that measures or trains (the executor's ranks, the compute
and allreduce benchmarks) calls it first, so the calibration and the runs it predicts allocate alike.

Assumptions: glibc (``mallopt`` found in the C library); elsewhere it does nothing and says so in its
return value. The process's resident memory stays at its peak instead of shrinking between steps.
``TTT_MALLOC=default`` in the environment leaves glibc's defaults (for comparisons).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# glibc's malloc.h parameter numbers
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4

MMAP_THRESHOLD_BYTES = 32 << 20   # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit; a larger value is refused
TRIM_THRESHOLD_BYTES = 2**31 - 1  # the largest int mallopt takes: the top of the heap is kept
TOP_PAD_BYTES = 64 << 20          # grow the heap in 64 MiB steps


def keep_heap() -> dict[str, int] | None:
    """Set this process's malloc to keep freed memory (see the module docstring).

    Returns the settings applied (bytes), or None where the C library has no ``mallopt`` (not glibc) or
    refused a setting, or where ``TTT_MALLOC=default``; the process then allocates as before."""
    if os.environ.get("TTT_MALLOC", "").strip().lower() == "default":
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = {"mmap_threshold": (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
                "trim_threshold": (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
                "top_pad": (M_TOP_PAD, TOP_PAD_BYTES),
                "mmap_max": (M_MMAP_MAX, 0)}
    applied = {}
    for key, (param, value) in settings.items():
        if mallopt(param, value) != 1:   # mallopt returns 1 on success
            return None
        applied[key] = value
    return applied
