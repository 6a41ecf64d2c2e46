"""Host speed probe: a fixed small reference workload timed between training iterations and during the
calibration, so that a prediction calibrated at one time can be compared with a run at another on a host
whose speed drifts.

Why: a shared virtual machine's speed changes by tens of percent within seconds (neighbours on the same
physical cores and memory; measured here: ResNet-20 steps from 61 to 95 ms within 15 s with no load inside
the VM and no CPU steal). A calibration taken in a fast minute then predicts every later run too fast, and a
run taken in a slow minute looks like a model error. The probe measures the host's current speed with a
workload that is *not* the one being predicted: the tiny CNN (:class:`executor.models.cifar_resnet.TinyCNN`,
1.6k parameters, convolutions, batch norm, pooling) at batch 32, one forward with the loss and one backward,
at the calling rank's thread count. ``speed factor = probe time during the run / probe time during the
calibration`` (same number of ranks sharing the host); :mod:`validation.loop` reports errors both raw and
with the prediction multiplied by that factor.

Context: the probe's own time depends on what ran just before it (a step of AlexNet leaves colder caches
than one of ResNet-20: about 6.3 against 5.0 ms here), so the calibration samples it after every timed
whole-model step, exactly where the executor samples it (after every iteration), and keeps a reference per
model (``[calibration.speed_probe_model_ms]``).

Two samples back to back (:meth:`SpeedProbe.sample_pair`): the *warm* one (the second: the probe's own
tensors in cache) is the statistic (``probe_s``), the cold one (the first) is kept beside it
(``probe_cold_s``). Why: the cold sample also measures how much of the cache the preceding work left cold,
which differs between the calibration (every benchmarked model resident and interleaved) and a run (one
model): after ResNet-50 at 2 ranks the calibration's cold probe came out 15-25 % slower than the runs' in
four full validation runs (speed factors 0.72-0.85), which made those predictions 8-18 % too fast; in one
calibration-like measurement the cold probe ranged 8.4-12.3 ms over nine (model, batch) rows, the warm one
8.0-10.1 ms.

All ranks at once: with several ranks the probe pair follows a barrier, in the calibration's compute
benchmark and in the executor's loop alike, so every rank's probe shares the CPU with the other ranks'
probes and nothing else. Without it the ranks of a run over a slow network left the allreduce at different
times and each iteration a different rank's probe overlapped the others' compute or polling: at 4 emulated
hosts (5 ms, four ranks on 2 cores) the ranks' own typical probes were 9.8-19.8 ms, the typical of the
per-iteration maximum 27.0 ms, against a calibration reference of 17.5 ms taken with the ranks in step.

Ranks on several nodes (:func:`start_together`): a barrier over a network releases the ranks up to a one-way
latency apart, so the first rank out probed while the others still busy-polled in the barrier on the same
cores, and the per-iteration slowest probe inflated (emulated cluster, 4 hosts at 5 ms per link: speed factors
1.73, 1.33 and 1.29 where the unscaled predictions were within -4.9 to -3.0 %; the file of 2026-12-07 19:16).
There the ranks meet at a barrier and then sleep until one instant of the wall clock that rank 0 announces,
far enough ahead for the announcement to reach every rank, and probe from there, all at once as in the
calibration. On one node the barrier alone releases them within microseconds and is kept.

Assumption: the host's slowdown affects the probe and the workload by the same factor. Measured over 60 s
windows of 40 iterations, the ResNet-20 step over the probe varies with a standard deviation of about 5%
where the step alone varies by about 8-12%: the probe removes most, not all, of the drift. When the host
is much slower than during the calibration (factors above about 1.3) the probe slows down more than a
training step does, and the scaled prediction over-shoots by 10-30% (full validation matrix, 2026-11-21).
"""
from __future__ import annotations

import time
from typing import Any

__all__ = ["SpeedProbe", "PROBE_MODEL", "PROBE_BATCH", "start_together"]

PROBE_MODEL = "tiny"
PROBE_BATCH = 32
#: bounds of the lead (seconds) of the common start over rank 0's clock when it announces it
START_LEAD_MIN_S, START_LEAD_MAX_S = 0.002, 0.2


def start_together(comm, clock=time.time, sleep=time.sleep) -> float:
    """Bring every rank of ``comm`` to one instant of the wall clock (collective); returns the seconds this rank
    slept (0 if the instant had passed when it learnt it).

    A barrier, then rank 0 broadcasts ``its clock + lead`` with ``lead`` = twice the time the barrier took it,
    within :data:`START_LEAD_MIN_S` and :data:`START_LEAD_MAX_S`: a barrier has as many rounds of messages as
    the broadcast has hops (log2 of the ranks), so the announcement reaches the last rank well within it.
    Assumption: the ranks' wall clocks agree to well within the lead (one clock on the emulated cluster's
    hosts, which share this machine; NTP on a real cluster)."""
    t0 = clock()
    comm.Barrier()
    start = None
    if comm.Get_rank() == 0:
        start = clock() + min(START_LEAD_MAX_S, max(START_LEAD_MIN_S, 2.0 * (clock() - t0)))
    start = comm.bcast(start, root=0)
    wait = start - clock()
    if wait > 0:
        sleep(wait)
    return max(0.0, wait)


class SpeedProbe:
    """The reference workload; :meth:`sample` times one forward + backward (seconds)."""

    def __init__(self, seed: int = 1234):
        import torch

        from executor.models import build_model, get_model_info

        info = get_model_info(PROBE_MODEL)
        g = torch.Generator().manual_seed(seed)
        state = torch.random.get_rng_state()  # leave the caller's global generator untouched
        try:
            torch.manual_seed(seed)
            self.model = build_model(info.name)
        finally:
            torch.random.set_rng_state(state)
        self.model.train()
        self.x = torch.randn((PROBE_BATCH, *info.input_shape), generator=g)
        self.y = torch.randint(0, info.num_classes, (PROBE_BATCH,), generator=g)
        self.sample()  # first call allocates and selects kernels: not representative

    def sample_pair(self) -> tuple[float, float]:
        """``(cold, warm)``: two samples back to back (seconds); the warm one is the statistic (module docstring)."""
        cold = self.sample()
        return cold, self.sample()

    def sample(self) -> float:
        """Seconds of one forward (with cross-entropy) and backward of the probe model."""
        import torch.nn.functional as F

        self.model.zero_grad(set_to_none=False)
        t0 = time.perf_counter()
        F.cross_entropy(self.model(self.x), self.y).backward()
        return time.perf_counter() - t0

    def describe(self) -> dict[str, Any]:
        return {"model": PROBE_MODEL, "batch": PROBE_BATCH, "what": "forward with cross-entropy + backward"}
