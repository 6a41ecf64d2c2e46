"""Calibration of this machine: run the microbenchmarks, fit the cost models' parameters, write the
calibrated ``local`` system spec that ``perfmodel predict --system local`` (or ``--system FILE``) uses.

What is measured and fitted
---------------------------
1. Device (one device = this machine's CPU, all its cores; ``devices_per_node = 1``; ranks share it):

   - ``peak_tflops_fp32`` / ``fp64``: square GEMM (``torch.mm``) with every core (``bench compute``);
   - memory bandwidth: STREAM-like triad with every core;
   - one efficiency curve ``eff_k(b) = eff_max * b / (b + batch_half)`` per number ``k`` of ranks sharing
     the machine (the executor gives each of ``k`` ranks ``cores // k`` threads, at least one), fitted by
     least squares on the logarithm of the measured whole-model forward and backward times of the
     calibration models (ResNet-20/32, the tiny CNN, the digits CNN, ResNet-18 at small batches) at
     several per-rank batches, measured with ``k`` ranks running at once. ``k = 1`` is the device's
     ``[efficiency.fp32]``, ``k >= 2`` its ``[shared_efficiency.fp32.ranks_<k>]``;
   - ``layer_overhead_us``: a fixed framework cost per layer and pass (eager PyTorch dispatches every
     module from Python; this dominates the tiny models), fitted jointly with the curves. The predictor
     prices each layer exactly as :func:`perfmodel.compute.layer_times` with
     :func:`perfmodel.compute.shared_layer_overhead_s` (what the fit evaluates);
   - ``[workload_scale.ranks_<k>]``: EMPIRICAL factor per calibration workload and sharing, the geometric
     median of measured over modelled step times after the fit above. One curve cannot express layer
     shapes that vectorise badly (the tiny CNN's 8-channel convolutions run at a fraction of ResNet-20's
     FLOP rate) nor memory-bound layers in cache; the factor carries that for the workloads measured, and
     every other workload gets 1. The report gives the fit's error with and without the factors.
   - ``[workload_scale_batch.ranks_<k>.<model>]``: the same factor at each benchmarked per-rank batch of a
     workload measured at several; the predictor interpolates it in log(batch). One curve per sharing
     cannot express a workload whose time per image changes with the batch its own way: ResNet-20 at 64
     per rank runs 5-9 % slower per image than at 32 (full run 21; its activations leave the caches), while AlexNet
     from 4 to 8 per rank takes 1.26 times as long, not twice (its fully connected layers read the same
     244 MB of weights at any batch); with one factor per workload the fit erred by -17 % to +25 % at the
     validation matrix's batches (full run 21), the size of the largest matrix errors.
   - Per-rank batch 1 is left out of the full plan: for a batch of one small image PyTorch runs its native
     convolution instead of oneDNN's (``input.size(0) > 1`` selects oneDNN), with a much smaller fixed cost,
     a regime the per-layer overhead above does not describe (predictions at batch 1 are pessimistic).

2. Collectives: ``bench allreduce`` at 2..4 ranks (every executor algorithm and MPI's own), each size
   measured in several repetitions (the typical undisturbed time is kept, as for compute). Per
   algorithm of :mod:`perfmodel.collectives` a closed-form fit ``NetParams(alpha, beta, gamma)`` over all
   rank counts by non-negative least squares on the relative error, with ``gamma`` fixed at the measured
   reduction cost per byte (``numpy.add``, what the executor's algorithms run): ring and
   halving-doubling depend on ``beta`` and ``gamma`` only through ``2 beta + gamma``, so they cannot
   separate them. Per algorithm and rank count also a measured linear profile ``alpha_p + beta_p n``
   (the only model of ``mpi``, whose internal algorithm is MPICH's choice). The predictor uses the
   profile at the exact rank count, else the closed form (:mod:`perfmodel.network`).

3. The executor's per-iteration overheads (EMPIRICAL terms, :class:`hardware.specs.ExecutorOverheads`):
   the optimizer's per-kernel launch cost fitted to measured ``step()`` + ``zero_grad()`` times of SGD
   and LARS against the optimizer cost models, and per rank count sharing the host the memory traffic of
   the same steps taken by all ranks at once (``[calibration.optimizer_traffic]``,
   :func:`fit_optimizer_sharing`); the gradient bucketer's fixed and per-layer costs from
   measured (forward + backward + ``finish()``) with and without it, after subtracting the bucket copies
   priced at the measured memory bandwidth; the per-step cost of fetching a batch.

4. The compute inside the executor's loop (EMPIRICAL, ``[calibration.loop_compute]``): a short real training
   run of the plan's loop reference (ResNet-20 at 32 images per rank, SGD, 25 MB buckets: not a point of the
   validation matrix, at its per-rank batches, in both plans) at
   every compute rank count, right after the compute benchmark; per rank count the ratio of its measured
   forward + backward (less the bucketer's hooks, priced apart) to the benchmark's step of the same model and
   batch, speed-probe normalised, median over the sessions (:func:`fit_loop_compute`). The same layers
   run a few percent slower in the training loop than in the benchmark, by an amount that depends on the rank
   count; the predictor multiplies every compute time at that sharing by this factor.

5. The step tail (EMPIRICAL, ``[calibration.step_tail]``): every time above is a *typical* one (median of the
   fastest half of the repetitions), a run's iteration time a mean; per rank count the median over the
   benchmarked workloads of median / typical of their repeated steps (:func:`compute_step_tail`), by which
   the predictor multiplies compute and optimizer times.

Files: the system file and its device file ``<stem>-cpu.toml`` next to it (referenced by a relative path),
written atomically after both were validated by loading them. Every number cites its measurement in
``[sources]``.

Noise: other work on the host slows some repetitions; every measurement keeps the median of its fastest
half and the fit reports its residuals, so a bad calibration is visible (``perfmodel calibrate --json``).
"""
from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hardware.errors import ConfigError, ToolkitError

__all__ = [
    "BenchFailed", "run_benchmark", "run_allreduce_samples", "QUICK", "FULL", "CalibrationPlan",
    "closed_form_coefficients", "fit_closed_form", "fit_linear_profile", "fit_collectives",
    "fit_compute", "fit_kernel_launch", "fit_optimizer_sharing", "fit_bucketer", "fit_loop_compute",
    "compute_step_tail",
    "loop_hook_overhead_s", "measure_loop_reference", "merge_compute_docs", "combine_sessions", "normalise_raw",
    "measure_calibration", "fit_calibration", "calibrate", "render_system_toml",
    "render_device_toml", "write_spec", "typical_rows", "FIT_ALGORITHMS",
]

SOURCE = "perfmodel calibrate"
ROOT = Path(__file__).resolve().parents[1]
#: executor algorithms with a closed form in perfmodel.collectives (``mpi`` is profiled only)
FIT_ALGORITHMS: tuple[str, ...] = ("ring", "recursive_doubling", "halving_doubling", "hierarchical")


class BenchFailed(ToolkitError):
    """A benchmark job failed or timed out (one line naming the job and the reason)."""


# ==========================================================================================================
# running benchmark jobs
# ==========================================================================================================
def _env(threads: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "HYDRA_", "MPIR_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _reason(stderr: str, rc: int) -> str:
    m = re.search(r"^rank (\d+): (.+)$", stderr, flags=re.MULTILINE)
    if m:
        return f"rank {m.group(1)} failed: {m.group(2).strip()}"
    m = re.search(r"^(?:bench \w+|perfmodel): error: (.+)$", stderr, flags=re.MULTILINE)
    if m:
        return m.group(1).strip()
    if rc < 0:
        return f"killed by signal {-rc}"
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("bench ")]
    return f"exit code {rc}: {(lines[-1] if lines else 'no error output')[:300]}"


def run_benchmark(module: str, args: Sequence[str], ranks: int = 1, *, timeout_s: float = 600.0,
                  threads: int | None = None, what: str | None = None,
                  progress: Callable[[str], None] | None = None, system: str | None = None) -> dict[str, Any]:
    """Run ``python -m module args`` (under ``mpiexec -n ranks`` when ``ranks > 1``) in its own process
    group, with a time limit, and return the JSON document it writes to ``--out``.

    ``system`` naming the emulated cluster (``emulated``, see :mod:`executor.cluster`) runs the ranks across
    its hosts (one per host while there are enough) with :func:`executor.cluster.hydra.mpiexec_command`.

    Raises
    ------
    BenchFailed
        One line: the job, and the failing rank's message, the exit status or the time-out.
    """
    from executor.launch import cores_per_rank, find_mpiexec

    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
        raise ConfigError("--ranks", "ranks", ranks, "must be an integer >= 1")
    what = what or module.rsplit(".", 1)[-1].replace("_", " ")
    tmp = Path(tempfile.mkdtemp(prefix="ttt-bench-"))
    out = tmp / "result.json"
    prog = [sys.executable, "-m", module, *map(str, args), "--out", str(out)]
    cmd = [find_mpiexec(), "-n", str(ranks), *prog] if ranks > 1 else prog
    env = _env(threads if threads is not None else cores_per_rank(ranks))
    if system is not None:
        from executor.cluster.hydra import is_emulated_system, mpiexec_command
        if is_emulated_system(system):
            cmd, extra = mpiexec_command(prog, ranks, tmp)
            env.update(extra)
    t0 = time.monotonic()
    try:
        with open(tmp / "stderr.txt", "w") as err, open(tmp / "stdout.txt", "w") as sout:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sout, stderr=err, start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise BenchFailed(f"{what} ({ranks} ranks) timed out after {timeout_s:g} s and was killed") from None
            except KeyboardInterrupt:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
        stderr = (tmp / "stderr.txt").read_text(errors="replace")
        if rc != 0:
            raise BenchFailed(f"{what} ({ranks} ranks) failed after {time.monotonic() - t0:.1f} s: "
                              f"{_reason(stderr, rc)}")
        try:
            doc = json.loads(out.read_text())
        except (OSError, ValueError) as exc:
            raise BenchFailed(f"{what} ({ranks} ranks) ended without a result ({exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        progress(f"{what} on {ranks} rank(s): {time.monotonic() - t0:.1f} s")
    return doc


def run_allreduce_samples(ranks: int, algorithms: Sequence[str], min_bytes: int, max_bytes: int, *,
                          factor: int = 4, repeats: int = 3, max_iterations: int = 50,
                          timeout_s: float = 600.0, progress=None) -> dict[str, Any]:
    """``bench allreduce`` repeated ``repeats`` times in one MPI job (this module's worker); every row of
    every repetition is returned (``results``), plus the typical time per (algorithm, size) in ``typical``."""
    args = ["--allreduce-worker", "--algorithms", ",".join(algorithms), "--min-bytes", str(min_bytes),
            "--max-bytes", str(max_bytes), "--factor", str(factor), "--repeats", str(repeats),
            "--max-iterations", str(max_iterations)]
    doc = run_benchmark("executor.calibrate", args, ranks, timeout_s=timeout_s, threads=1,
                        what="bench allreduce", progress=progress)
    doc["typical"] = typical_rows(doc["results"])
    return doc


def typical_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (algorithm, ranks, nbytes): the typical (median of the fastest half) ``time_s`` over the
    repetitions, with its spread."""
    from executor.bench_compute import spread, typical

    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["algorithm"], int(r["ranks"]), int(r["nbytes"])), []).append(float(r["time_s"]))
    out = []
    for (alg, p, n), ts in groups.items():
        out.append({"algorithm": alg, "ranks": p, "nbytes": n, "time_s": typical(ts), "spread_s": spread(ts)})
    return out


def _allreduce_worker(argv: Sequence[str]) -> int:
    """``python -m executor.calibrate --allreduce-worker ...`` under mpiexec: run_allreduce_bench repeated."""
    import argparse

    from mpi4py import MPI

    from executor.bench_allreduce import default_iterations, default_warmup, message_sizes, parse_bytes, run_allreduce_bench
    from executor.measurement import write_json_atomic

    ap = argparse.ArgumentParser(prog="executor.calibrate --allreduce-worker")
    ap.add_argument("--allreduce-worker", action="store_true")
    ap.add_argument("--algorithms", required=True)
    ap.add_argument("--min-bytes", default="4")
    ap.add_argument("--max-bytes", default="64M")
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-iterations", type=int, default=50)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(list(argv))
    comm = MPI.COMM_WORLD
    sizes = message_sizes(parse_bytes(a.min_bytes, "min_bytes"), parse_bytes(a.max_bytes, "max_bytes"), a.factor)
    algs = [s.strip() for s in a.algorithms.split(",") if s.strip()]
    rows: list[dict[str, Any]] = []
    for rep in range(a.repeats):
        for r in run_allreduce_bench(comm, sizes, algs,
                                     iterations=lambda n: min(a.max_iterations, default_iterations(n)),
                                     warmup=lambda n: min(5, default_warmup(n))):
            r["repeat"] = rep
            rows.append(r)
    if comm.Get_rank() == 0:
        write_json_atomic(a.out, {"benchmark": "allreduce", "ranks": comm.Get_size(), "repeats": a.repeats,
                                  "mpi_library": MPI.Get_library_version().splitlines()[0].strip(),
                                  "results": rows})
    bad = [r for r in rows if r["correct"] is False]
    if bad:
        raise RuntimeError(f"wrong allreduce result: {bad[0]['algorithm']} at {bad[0]['nbytes']} bytes")
    return 0


# ==========================================================================================================
# collective fits
# ==========================================================================================================
def closed_form_coefficients(algorithm: str, p, nbytes, ranks_per_node: int | None = None) -> np.ndarray:
    """Coefficients ``(c_alpha, c_beta, c_gamma)`` of the closed form: ``T = c_a alpha + c_b beta + c_g gamma``
    (every closed form of :mod:`perfmodel.collectives` is linear in the three). Shape (3, N) for arrays
    ``p``, ``nbytes`` of shape (N,). Ranks are on one node (``ranks_per_node = p`` unless given)."""
    from perfmodel.collectives import Fabric, NetParams, allreduce_time

    p = np.atleast_1d(np.asarray(p, dtype=np.int64))
    n = np.atleast_1d(np.asarray(nbytes, dtype=float))
    p, n = np.broadcast_arrays(p, n)
    out = np.empty((3, p.size))
    for i, unit in enumerate(((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))):
        net = NetParams(*unit)
        col = np.empty(p.size)
        for pv in np.unique(p):
            sel = p == pv
            rpn = int(ranks_per_node or pv)
            col[sel] = np.asarray(allreduce_time(algorithm, int(pv), n[sel], Fabric(net, net, ranks_per_node=rpn)))
        out[i] = col
    return out


def _nnls_rel(A: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Non-negative least squares of ``A x = t`` on the relative error (rows scaled by 1 / t)."""
    from scipy.optimize import nnls

    w = 1.0 / np.asarray(t, dtype=float)
    x, _ = nnls(A * w[:, None], np.ones_like(w))
    return x


def _residuals(pred: np.ndarray, t: np.ndarray) -> dict[str, float]:
    rel = pred / t - 1.0
    return {"rms_rel_err": float(np.sqrt(np.mean(rel ** 2))), "max_abs_rel_err": float(np.max(np.abs(rel)))}


def fit_closed_form(algorithm: str, p, nbytes, time_s, gamma_s_per_B: float | None = None) -> dict[str, Any]:
    """Fit ``alpha`` (s), ``beta`` (s/B) and, unless given, ``gamma`` (s/B) of ``algorithm``'s closed form to
    measured allreduce times by non-negative least squares on the relative error.

    With ``gamma_s_per_B`` given only alpha and beta are fitted (needed where the closed form depends on
    beta and gamma through one combination: ring, halving-doubling). Exact for data generated by the closed
    form. Raises ConfigError when fewer than 2 (3) distinct points are given.
    """
    p = np.atleast_1d(np.asarray(p, dtype=np.int64))
    n = np.atleast_1d(np.asarray(nbytes, dtype=float))
    t = np.atleast_1d(np.asarray(time_s, dtype=float))
    if not (p.shape == n.shape == t.shape) or np.any(t <= 0) or np.any(p < 2):
        raise ConfigError(SOURCE, "allreduce samples", algorithm, "need positive times at p >= 2 ranks, one per size")
    C = closed_form_coefficients(algorithm, p, n)
    need = 2 if gamma_s_per_B is not None else 3
    if len(set(zip(p.tolist(), n.tolist()))) < need:
        raise ConfigError(SOURCE, "allreduce samples", algorithm, f"need at least {need} distinct (p, size) points")
    if gamma_s_per_B is not None:
        g = float(gamma_s_per_B)
        rest = t - C[2] * g
        # the relative weighting keeps using the measured time
        from scipy.optimize import nnls
        w = 1.0 / t
        x, _ = nnls(C[:2].T * w[:, None], rest * w)
        alpha, beta, gamma = float(x[0]), float(x[1]), g
    else:
        alpha, beta, gamma = (float(v) for v in _nnls_rel(C.T, t))
    pred = C[0] * alpha + C[1] * beta + C[2] * gamma
    return {"alpha_s": alpha, "beta_s_per_B": beta, "gamma_s_per_B": gamma, "gamma_fixed": gamma_s_per_B is not None,
            "ranks": sorted(set(p.tolist())), **_residuals(pred, t)}


def fit_linear_profile(nbytes, time_s) -> dict[str, Any]:
    """``time = alpha + beta * n`` by non-negative least squares on the relative error."""
    n = np.atleast_1d(np.asarray(nbytes, dtype=float))
    t = np.atleast_1d(np.asarray(time_s, dtype=float))
    if n.size < 2 or np.any(t <= 0):
        raise ConfigError(SOURCE, "allreduce samples", list(n), "need at least 2 sizes with positive times")
    alpha, beta = (float(v) for v in _nnls_rel(np.stack([np.ones_like(n), n], axis=1), t))
    return {"alpha_s": alpha, "beta_s_per_B": beta, **_residuals(alpha + beta * n, t)}


def fit_collectives(rows: Sequence[Mapping[str, Any]], gamma_s_per_B: float | None) -> dict[str, Any]:
    """Per algorithm: ``closed_form`` (for :data:`FIT_ALGORITHMS`) and ``profiles`` {p: fit} from typical
    rows (``algorithm``, ``ranks``, ``nbytes``, ``time_s``)."""
    out: dict[str, Any] = {}
    algs = list(dict.fromkeys(r["algorithm"] for r in rows))
    for alg in algs:
        mine = [r for r in rows if r["algorithm"] == alg]
        entry: dict[str, Any] = {"profiles": {}}
        for p in sorted({int(r["ranks"]) for r in mine}):
            at = sorted((r for r in mine if int(r["ranks"]) == p), key=lambda r: r["nbytes"])
            entry["profiles"][p] = fit_linear_profile([r["nbytes"] for r in at], [r["time_s"] for r in at])
        if alg in FIT_ALGORITHMS:
            entry["closed_form"] = fit_closed_form(alg, [r["ranks"] for r in mine], [r["nbytes"] for r in mine],
                                                   [r["time_s"] for r in mine], gamma_s_per_B)
        out[alg] = entry
    return out


# ==========================================================================================================
# compute fits
# ==========================================================================================================
def _probe_device(peak_flops: float, mem_bw_Bps: float, cores: int, layer_overhead_s: float = 0.0):
    from hardware.specs import DeviceSpec, EfficiencyCurve, FrozenMap, MemorySpec

    return DeviceSpec(id="calibration-probe", name="calibration probe", kind="cpu", cores=int(cores),
                      clock_hz=1e9, peak_flops=FrozenMap(fp32=float(peak_flops)),
                      memories=FrozenMap(dram=MemorySpec("dram", 2.0 ** 40, float(mem_bw_Bps))), memory_mode=None,
                      efficiency=FrozenMap(fp32=EfficiencyCurve(0.5, 1.0)), sources=FrozenMap(),
                      source_file="<calibration>", layer_overhead_s=float(layer_overhead_s))


def model_rank_times(table, device, share: float, batch, curve) -> tuple[np.ndarray, np.ndarray]:
    """Per-rank forward and backward seconds of ``table`` at per-rank ``batch`` (array) with ``share`` ranks
    on ``device`` and efficiency ``curve``: exactly what :func:`perfmodel.predict.iteration_model` prices."""
    from perfmodel.compute import layer_times, shared_layer_overhead_s

    lt = layer_times(table, device, batch, "fp32", efficiency=curve, overhead_s=shared_layer_overhead_s(device, share))
    k = max(1.0, float(share))
    return lt.fwd_s.sum(axis=1) * k, lt.bwd_s.sum(axis=1) * k


def fit_compute(points: Sequence[Mapping[str, Any]], peak_flops: float, mem_bw_Bps: float, cores: int,
                max_batch_half: float = 4096.0, workload_factors: bool = True,
                fit_bandwidth: bool = False) -> dict[str, Any]:
    """Fit one efficiency curve per sharing ``k`` and one per-layer overhead to measured model times, then
    (``workload_factors``) one EMPIRICAL factor per workload and sharing: the geometric median of measured
    over modelled step times (what :meth:`hardware.specs.DeviceSpec.workload_factor` applies).

    Parameters
    ----------
    points : sequence of mapping
        ``model``, ``share`` (ranks sharing the device), ``batch`` (per rank), ``forward_s``, ``backward_s``.
    peak_flops, mem_bw_Bps : float
        The device's peak FLOP/s and memory bandwidth (measured).
    cores : int
        The device's cores.
    fit_bandwidth : bool
        Also fit the bandwidth of the memory-bound layers (``mem_bw_Bps`` is then the starting point,
        bounded to [1/2, 20] times it): a framework's batch-norm, activation and pooling layers work on
        activations that mostly stay in the caches, far from a STREAM measurement on arrays beyond them.

    Returns
    -------
    dict
        ``layer_overhead_s``, ``curves`` {k: {"eff_max", "batch_half"}}, ``workload_scale``
        {k: {model: factor}}, ``points`` (each with the predicted times, with the factor, and the relative
        error of the step with and without it), ``rms_rel_err`` / ``max_abs_rel_err`` (with the factors) and
        ``generic_rms_rel_err`` / ``generic_max_abs_rel_err`` (without).
    """
    from scipy.optimize import least_squares

    from hardware.specs import EfficiencyCurve
    from perfmodel.workload import load_workload

    pts = [dict(p) for p in points]
    if not pts:
        raise ConfigError(SOURCE, "compute samples", [], "no model times to fit")
    shares = sorted({int(p["share"]) for p in pts})
    tables = {m: load_workload(m) for m in {p["model"] for p in pts}}
    groups: dict[tuple[str, int], list[int]] = {}
    for i, p in enumerate(pts):
        groups.setdefault((p["model"], int(p["share"])), []).append(i)
    meas_f = np.array([p["forward_s"] for p in pts])
    meas_b = np.array([p["backward_s"] for p in pts])

    nb = 1 if fit_bandwidth else 0

    def unpack(x):
        o = x[0] * 1e-6
        bw = mem_bw_Bps * math.exp(x[1]) if fit_bandwidth else mem_bw_Bps
        return o, bw, {k: (x[1 + nb + 2 * j], math.exp(x[2 + nb + 2 * j])) for j, k in enumerate(shares)}

    def predict_all(x):
        o, bw, curves = unpack(x)
        dev = _probe_device(peak_flops, bw, cores, o)
        pf, pb = np.empty(len(pts)), np.empty(len(pts))
        for (m, k), idx in groups.items():
            em, bh = curves[k]
            f, b = model_rank_times(tables[m], dev, k, np.array([pts[i]["batch"] for i in idx], float),
                                    EfficiencyCurve(em, bh))
            pf[idx], pb[idx] = f, b
        return pf, pb

    def resid(x):
        pf, pb = predict_all(x)
        return np.concatenate([np.log(pf / meas_f), np.log(pb / meas_b)])

    x0 = [20.0]
    lo, hi = [0.0], [1e4]
    if fit_bandwidth:
        x0, lo, hi = x0 + [0.0], lo + [math.log(0.5)], hi + [math.log(20.0)]
    for _ in shares:
        x0 += [0.3, math.log(4.0)]
        lo += [1e-3, math.log(1e-3)]
        hi += [1.0, math.log(max_batch_half)]
    sol = least_squares(resid, np.array(x0), bounds=(np.array(lo), np.array(hi)), x_scale="jac")
    o, bw, curves = unpack(sol.x)
    pf, pb = predict_all(sol.x)
    generic_err = (pf + pb) / (meas_f + meas_b) - 1.0
    # EMPIRICAL per-workload factors: geometric median of measured / modelled step per (model, sharing)
    factors: dict[int, dict[str, float]] = {}
    for (m, k), idx in groups.items():
        ratio = (meas_f[idx] + meas_b[idx]) / (pf[idx] + pb[idx])
        factors.setdefault(k, {})[m] = float(np.exp(np.median(np.log(ratio)))) if workload_factors else 1.0
    # and per benchmarked batch where a (model, sharing) has several: the predictor interpolates between them
    # (hardware.specs.DeviceSpec.workload_factor)
    batch_factors: dict[int, dict[str, list[tuple[float, float]]]] = {}
    if workload_factors:
        for (m, k), idx in groups.items():
            by_b: dict[float, list[float]] = {}
            for i in idx:
                by_b.setdefault(float(pts[i]["batch"]), []).append(
                    float(np.log((meas_f[i] + meas_b[i]) / (pf[i] + pb[i]))))
            if len(by_b) >= 2:
                batch_factors.setdefault(k, {})[m] = [(b, float(np.exp(np.median(v)))) for b, v in sorted(by_b.items())]
    fac = np.array([factors[int(p["share"])][p["model"]] for p in pts])
    step_err = (pf + pb) * fac / (meas_f + meas_b) - 1.0
    for p, f, b, c, e, g in zip(pts, pf, pb, fac, step_err, generic_err):
        p.update(predicted_forward_s=float(f * c), predicted_backward_s=float(b * c), workload_factor=float(c),
                 step_rel_err=float(e), generic_step_rel_err=float(g))
    return {"layer_overhead_s": float(o), "mem_bw_Bps": float(bw), "bandwidth_fitted": bool(fit_bandwidth),
            "curves": {k: {"eff_max": float(em), "batch_half": float(bh)} for k, (em, bh) in curves.items()},
            "workload_scale": {k: dict(sorted(v.items())) for k, v in sorted(factors.items())},
            "workload_scale_batch": {k: dict(sorted(v.items())) for k, v in sorted(batch_factors.items())},
            "points": pts, "rms_rel_err": float(np.sqrt(np.mean(step_err ** 2))),
            "max_abs_rel_err": float(np.max(np.abs(step_err))),
            "generic_rms_rel_err": float(np.sqrt(np.mean(generic_err ** 2))),
            "generic_max_abs_rel_err": float(np.max(np.abs(generic_err)))}


def _optimizer_model_terms(rows: Sequence[Mapping[str, Any]], peak_flops: float, mem_bw_Bps: float,
                           efficiency: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row (``model``, ``optimizer``) the optimizer cost model's launch-free step (s) and its kernel count
    (the step's growth per second of launch cost), one rank at ``peak_flops`` and ``mem_bw_Bps``."""
    from perfmodel.optimizers import optimizer_cost
    from perfmodel.workload import load_workload

    base, kern = [], []
    for r in rows:
        table = load_workload(r["model"])

        def cost(launch: float) -> float:
            return optimizer_cost(r["optimizer"], table, per_device_batch=2, ranks=1, peak_flops=peak_flops,
                                  efficiency=efficiency, mem_bw_Bps=mem_bw_Bps, comm=lambda *a: 0.0,
                                  options={"launch_overhead_s": launch}).total_s
        c0 = cost(0.0)
        base.append(c0)
        kern.append(cost(1.0) - c0)
    return np.array(base), np.array(kern)


def fit_kernel_launch(rows: Sequence[Mapping[str, Any]], peak_flops: float, mem_bw_Bps: float,
                      efficiency: float = 0.5) -> dict[str, Any]:
    """Per-kernel launch cost (s) and memory-traffic scale that make the optimizer cost models match measured
    ``step() + zero_grad()`` times: ``measured = scale * model(launch=0) + kernels * launch`` (the steps are
    memory-bound, so the model without launch costs is proportional to the bytes moved) by non-negative
    least squares on the relative error. ``scale`` is fitted only when some row is memory-bound, else 1; it is
    at least 1. A row is memory-bound when its launch-free model is at least its kernels' launch cost at
    ``L0``, the median over the rows of (measured - launch-free model) / kernels (what one launch would cost
    if every row's excess were launches): a share of the measured time (the test used before) misses a
    memory-bound row whenever its traffic is underestimated by as much as the scale corrects (AlexNet's
    steps are about 3.4 x the models' minimum traffic here, so their launch-free model is 29 % of them).
    ``rows``: ``model``, ``optimizer``, ``step_s`` (one rank)."""
    if not rows:
        return {"kernel_launch_s": 0.0, "optimizer_traffic_scale": 1.0, "rows": []}
    out = []
    base, kern = _optimizer_model_terms(rows, peak_flops, mem_bw_Bps, efficiency)
    meas = np.array([float(r["step_s"]) for r in rows])
    w = 1.0 / meas
    scale = 1.0
    has_kernels = kern > 0
    l0 = (float(np.median(np.maximum(0.0, meas - base)[has_kernels] / kern[has_kernels]))
          if has_kernels.any() else 0.0)
    if np.any(base >= kern * l0):
        from scipy.optimize import nnls

        (a, launch), _ = nnls(np.column_stack([base * w, kern * w]), np.ones_like(meas))
        scale, launch = float(a), float(launch)
    if scale < 1.0:  # never below the models' minimum traffic: refit the launch cost alone
        scale = 1.0
    den = float(np.sum((kern * w) ** 2))
    launch = max(0.0, float(np.sum(kern * w * (meas - scale * base) * w) / den)) if den > 0 else 0.0
    pred = scale * base + kern * launch
    for r, b, k, pr in zip(rows, base, kern, pred):
        out.append({**r, "model_s": float(b * scale), "kernels": float(k), "predicted_s": float(pr),
                    "rel_err": float(pr / r["step_s"] - 1.0)})
    return {"kernel_launch_s": launch, "optimizer_traffic_scale": scale, "rows": out, **_residuals(pred, meas)}


def fit_optimizer_sharing(rows_by_share: Mapping[int, Sequence[Mapping[str, Any]]], kernel_launch_s: float,
                          peak_flops: float, mem_bw_Bps: float, efficiency: float = 0.5) -> dict[str, Any]:
    """Memory-traffic scale of the optimizer step per number ``k`` of ranks stepping at once (k > 1), with
    the per-kernel launch cost held at ``kernel_launch_s`` (fitted at one rank): ``measured = scale_k *
    model(launch=0, bandwidth = mem_bw / k) + kernels * launch``, least squares on the relative error over the
    rows measured with ``k`` ranks (``model``, ``optimizer``, ``step_s`` = the slowest rank's typical step).

    Why: k ranks on one host do not each get 1/k of the one-rank bandwidth: the optimizer's passes are not
    all bandwidth-bound, and ranks that step at once interleave differently than one process with every
    core. Measured here (AlexNet SGD, barrier-synchronised steps of 2 ranks with one thread each against one
    rank with two): 1.3-1.9 x the one-rank step, not 2 x; in the executor's loop at 2 ranks 1.65 x.

    Only shares with a memory-bound row (launch-free model at least the launch cost, as in
    :func:`fit_kernel_launch`) get a scale: a launch-bound optimizer says nothing about the traffic. Returns
    ``{"scale": {k: scale_k}, "rows": [...]}`` (the rows with ``share``, ``predicted_s`` and ``rel_err``)."""
    scales: dict[int, float] = {}
    out: list[dict[str, Any]] = []
    for k, rows in sorted(rows_by_share.items()):
        k = int(k)
        if k < 2 or not rows:
            continue
        base, kern = _optimizer_model_terms(rows, peak_flops / k, mem_bw_Bps / k, efficiency)
        meas = np.array([float(r["step_s"]) for r in rows])
        bound = base >= kern * kernel_launch_s
        if not bound.any():
            continue
        w = 1.0 / meas[bound]
        x, y = base[bound] * w, (meas[bound] - kern[bound] * kernel_launch_s) * w
        scale = float(np.sum(x * y) / np.sum(x * x))
        if not np.isfinite(scale) or scale <= 0:
            continue
        scales[k] = scale
        for r, b, kk, m, mb in zip(rows, base, kern, meas, bound):
            pr = scale * b + kk * kernel_launch_s
            out.append({**r, "share": k, "memory_bound": bool(mb), "predicted_s": float(pr),
                        "rel_err": float(pr / m - 1.0)})
    return {"scale": scales, "rows": out}


def fit_bucketer(rows: Sequence[Mapping[str, Any]], mem_bw_Bps: float) -> dict[str, Any]:
    """Fixed and per-layer cost of the gradient bucketer from measured overheads (``overhead_s``,
    ``grad_layers``, ``param_bytes``), after the bucket copies (6 bytes moved per gradient byte at
    ``mem_bw_Bps``). Non-negative least squares; one model gives the fixed cost only."""
    from scipy.optimize import nnls

    if not rows:
        return {"bucketer_s": 0.0, "grad_hook_s": 0.0, "rows": []}
    y = np.array([max(0.0, r["overhead_s"] - 6.0 * r["param_bytes"] / mem_bw_Bps) for r in rows])
    L = np.array([float(r["grad_layers"]) for r in rows])
    if len(set(L.tolist())) < 2:
        fixed, per = float(np.median(y)), 0.0
    else:
        x, _ = nnls(np.stack([np.ones_like(L), L], axis=1), y)
        fixed, per = float(x[0]), float(x[1])
    out = [{**r, "copies_s": 6.0 * r["param_bytes"] / mem_bw_Bps,
            "predicted_s": fixed + per * r["grad_layers"] + 6.0 * r["param_bytes"] / mem_bw_Bps} for r in rows]
    return {"bucketer_s": fixed, "grad_hook_s": per, "rows": out}


def loop_hook_overhead_s(bucketer_fit: Mapping[str, Any], model: str, ranks: int, mem_bw_Bps: float) -> float:
    """Seconds per iteration of the gradient bucketer that a run's measured backward contains and the predictor
    books apart (``overhead_s``): with more than one rank its fixed cost, a cost per parameterised layer and the
    copies (6 bytes per gradient byte at the rank's share ``mem_bw_Bps / ranks``), as
    :func:`perfmodel.predict.iteration_model` prices them; 0 for one rank. ``model``'s layer count and gradient
    bytes come from the bucketer fit's rows (only the fixed cost when the model is not among them)."""
    if ranks < 2:
        return 0.0
    row = next((r for r in bucketer_fit.get("rows", []) if r.get("model") == model), None)
    cost = float(bucketer_fit.get("bucketer_s", 0.0))
    if row is not None:
        cost += float(row["grad_layers"]) * float(bucketer_fit.get("grad_hook_s", 0.0))
        cost += 6.0 * float(row["param_bytes"]) / (mem_bw_Bps / ranks)
    return cost


def fit_loop_compute(sessions: Sequence[Mapping[str, Any]], bucketer_fit: Mapping[str, Any],
                     mem_bw_Bps: float, step_tail: Mapping[int, float] | None = None) -> dict[str, Any]:
    """EMPIRICAL factor per rank count on the benchmarked compute: how much slower (or faster) forward +
    backward run inside the executor's training loop than in ``bench compute``, from each session's loop
    reference run (:func:`measure_loop_reference`) and the same session's benchmark of the same model and
    per-rank batch at the same rank count.

    Per session and rank count ``k``::

        ratio = (C_run - hooks) / (C_bench * tail)  /  (probe_run / probe_bench)

    ``C_run``: the run's measured compute (critical rank, mean over iterations); ``hooks``: the bucketer's
    cost inside its backward, which the predictor books apart (:func:`loop_hook_overhead_s`); ``C_bench``:
    the benchmark's typical step of that (model, batch) (the session's rounds merged as in the fit);
    ``tail``: the step tail at ``k`` (:func:`compute_step_tail`, a mean over the typical time, which the
    predictor applies apart; 1 when not given);
    ``probe_run / probe_bench``: the run's typical host speed probe over the benchmark's for that model at
    ``k`` (the median over its batches, the reference the validation loop uses), so that the host's speed
    between the two measurements does not count. The factor at ``k`` is the median of the sessions' ratios
    (in log space: with an even number of sessions the geometric mean of the middle two), not their mean: one
    reference run is a few seconds of a shared host, and one slow stretch that the probe does not see made a
    session's ratio 1.60 where the other two gave 1.07 and 1.03 (full run 14, 2 ranks). Returns
    ``{"scale": {k: factor}, "rows": [per session and k: the inputs and the ratio]}``; sessions without a loop
    reference contribute nothing (no factor: the predictor uses 1)."""
    rows: list[dict[str, Any]] = []
    for i, s in enumerate(sessions):
        for k, run in sorted((s.get("loop") or {}).items()):
            k = int(k)
            if k not in s["compute"]:
                continue
            doc = merge_compute_docs(s["compute"][k])
            mine = [r for r in doc["models"] if r["model"] == run["model"]]
            bench = next((r for r in mine if int(r["batch"]) == int(run["batch"])), None)
            if bench is None:
                raise ConfigError(SOURCE, "loop reference", f"{run['model']}:{run['batch']}",
                                  f"has no benchmarked compute at {k} rank(s) in session {i + 1}")
            probes = [r["probe_s"] for r in mine if r.get("probe_s")]
            speed = (float(run["speed_probe_s"]) / float(np.median(probes))
                     if probes and run.get("speed_probe_s") else 1.0)
            hooks = loop_hook_overhead_s(bucketer_fit, run["model"], k, mem_bw_Bps)
            tail = float((step_tail or {}).get(k, 1.0))
            ratio = (float(run["compute_s"]) - hooks) / (float(bench["step_s"]) * tail) / speed
            rows.append({"session": i + 1, "ranks": k, "model": run["model"], "batch": int(run["batch"]),
                         "run_compute_s": float(run["compute_s"]), "hooks_s": hooks,
                         "bench_step_s": float(bench["step_s"]), "step_tail": tail, "speed_factor": speed,
                         "ratio": ratio})
    scale = {}
    for k in sorted({r["ranks"] for r in rows}):
        vals = [r["ratio"] for r in rows if r["ranks"] == k and r["ratio"] > 0]
        if vals:
            scale[k] = float(np.exp(np.median(np.log(vals))))
    return {"scale": scale, "rows": rows}


# ==========================================================================================================
# the plan
# ==========================================================================================================
@dataclasses.dataclass(frozen=True)
class CalibrationPlan:
    """What to measure. ``compute_ranks``: rank counts sharing the machine for the compute curves;
    ``model_batches``: per-rank batches per model (per rank count: a model missing at a rank count is
    skipped there); ``allreduce_ranks``: rank counts of the allreduce benchmark."""

    name: str
    compute_ranks: tuple[int, ...]
    model_batches: Mapping[str, tuple[int, ...]]
    allreduce_ranks: tuple[int, ...]
    algorithms: tuple[str, ...] = ("ring", "recursive_doubling", "halving_doubling", "hierarchical", "mpi")
    min_bytes: int = 4
    max_bytes: int = 64 << 20
    factor: int = 4
    allreduce_repeats: int = 3
    max_iterations: int = 50
    repeats: int = 7
    gemm_n: int = 1024
    memory_mb: int = 128
    optimizer_models: tuple[str, ...] = ("resnet20", "tiny", "digits_cnn", "alexnet")
    heavy_max_ranks: Mapping[str, int] = dataclasses.field(default_factory=dict)
    compute_rounds: int = 2
    #: reference (model, per-rank batch) of the K-FAC measurement at every compute rank count (None: none)
    kfac: tuple[str, int] | None = ("resnet20", 16)
    #: (model, per-rank batch) of the executor-loop reference: a short real training run (SGD, MPI's allreduce,
    #: 25 MB buckets, overlap) at every compute rank count, whose compute is compared with the benchmark's
    #: (:func:`fit_loop_compute`); it must be one of ``model_batches`` (None: not measured, scale 1). The full
    #: plan runs it at 32 images per rank, the middle of the validation matrix's per-rank batches (16 to 64):
    #: with the reference at 8 per rank (factors 0.92 and 0.93 at 4 ranks) the matrix's 4-rank points came out
    #: 3 % and 9 % too fast in two full runs. The quick plan runs it at 32 per rank too (8 until 2026-11-22,
    #: when two quick runs with the warm speed probe came out 13 % and 23 % too fast: its matrix runs 16 to 32
    #: per rank)
    loop_reference: tuple[str, int] | None = ("resnet20", 32)
    #: measured iterations of each loop-reference run (after 2 warm-up iterations)
    loop_iterations: int = 40


#: models of the bucketer-overhead fit (small: the per-layer hook cost, not the bucket copies, dominates)
BUCKETER_MODELS = ("resnet20", "tiny", "digits_cnn")

#: the operating points of the validation matrix (validation.matrix) and of the time-to-accuracy runs
#: (validation.tta) are among the measured batches: the calibration describes the compute of the workloads
#: the loop then predicts in composition (communication, overlap, optimizer, overheads, sharing)
FULL = CalibrationPlan(
    name="full", compute_ranks=(1, 2, 4),
    model_batches={"resnet20": (4, 8, 16, 32, 64), "resnet32": (8, 16, 32), "tiny": (2, 4, 8, 16),
                   "digits_cnn": (8, 32, 64, 128, 256, 512), "resnet18": (2, 4), "resnet50": (1, 2),
                   "alexnet": (4, 8)},
    allreduce_ranks=(2, 3, 4), heavy_max_ranks={"resnet18": 2, "resnet50": 2, "alexnet": 2})

QUICK = CalibrationPlan(
    name="quick", compute_ranks=(1, 2, 4),
    model_batches={"resnet20": (8, 16, 32), "tiny": (4, 8), "digits_cnn": (32, 64, 128, 256)},
    allreduce_ranks=(2, 4), algorithms=("ring", "halving_doubling", "mpi"), min_bytes=4, max_bytes=4 << 20,
    factor=16, allreduce_repeats=2, max_iterations=10, repeats=5, gemm_n=512, memory_mb=32,
    optimizer_models=("resnet20", "tiny"), compute_rounds=1, heavy_max_ranks={"digits_cnn": 1},
    loop_reference=("resnet20", 32), loop_iterations=20)


# ==========================================================================================================
# calibrate
# ==========================================================================================================
def _expected_range(n: int) -> float:
    """Expected range of ``n`` standard normal draws (``d_n`` of quality control: 1.128 for 2, 2.326 for 5)."""
    from scipy import integrate, stats

    if n < 2:
        return float("nan")
    e_max = integrate.quad(lambda x: x * n * stats.norm.pdf(x) * stats.norm.cdf(x) ** (n - 1), -12, 12)[0]
    return 2.0 * e_max


def compute_jitter(points: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Per number of ranks sharing the CPU, the iteration-to-iteration coefficient of variation of one rank's
    compute: for every measured (model, batch), the range of its repeated step times over ``d_n`` times the
    median (the range estimator of a normal spread), and the median of that over the points."""
    out: dict[int, list[float]] = {}
    for p in points:
        s = p.get("spread_step_s") or {}
        n = int(s.get("n", 0))
        if n >= 3 and s.get("median", 0) > 0:
            out.setdefault(int(p["share"]), []).append((s["max"] - s["min"]) / (_expected_range(n) * s["median"]))
    return {k: float(min(0.5, np.median(v))) for k, v in sorted(out.items())}


def compute_step_tail(points: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Per number of ranks sharing the CPU, how much longer a step takes on average than its *typical* time
    (the statistic every benchmark keeps): for every measured (model, batch), the median of its repeated
    step times over their typical time (median of the fastest half), and the median of that over the points,
    at least 1. A run's iteration time is a mean over its iterations, so the predictor multiplies the typical
    compute and optimizer times by it (about 1.04-1.07 on this host)."""
    out: dict[int, list[float]] = {}
    for p in points:
        s = p.get("spread_step_s") or {}
        if int(s.get("n", 0)) >= 3 and p.get("step_s", 0) > 0 and s.get("median", 0) > 0:
            out.setdefault(int(p["share"]), []).append(s["median"] / p["step_s"])
    return {k: float(max(1.0, np.median(v))) for k, v in sorted(out.items())}


def merge_compute_docs(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge repeated ``bench compute`` documents of one rank count: per measured item the round with the
    fastest typical time (work) or the highest rate (GEMM, bandwidth, reduction), so that a round spoilt by
    sustained load on the host is outvoted by a quieter one."""
    if not docs:
        raise ConfigError(SOURCE, "compute rounds", 0, "no benchmark documents to merge")
    out = dict(docs[0])
    out["rounds"] = len(docs)
    out["gemm"] = max((d["gemm"] for d in docs), key=lambda g: g["flops"])
    out["gemm_fp64"] = max((d["gemm_fp64"] for d in docs), key=lambda g: g["flops"])
    out["memory"] = max((d["memory"] for d in docs), key=lambda m: m["triad_Bps"])
    out["reduce"] = min((d["reduce"] for d in docs), key=lambda r: r["gamma_s_per_B"])
    if all("loop" in d for d in docs):
        out["loop"] = min((d["loop"] for d in docs), key=lambda r: r["step_s"])
    kf = [d["kfac"] for d in docs if "kfac" in d]
    if kf:
        out["kfac"] = min(kf, key=lambda r: r["factor_s"])

    def best(key: str, ident: Callable[[Mapping[str, Any]], tuple], value: str) -> list[dict[str, Any]]:
        chosen: dict[tuple, Mapping[str, Any]] = {}
        for d in docs:
            for r in d.get(key, []):
                i = ident(r)
                if i not in chosen or r[value] < chosen[i][value]:
                    chosen[i] = r
        return [dict(r) for r in chosen.values()]

    out["models"] = best("models", lambda r: (r["model"], r["batch"]), "step_s")
    out["optimizers"] = best("optimizers", lambda r: (r["model"], r["optimizer"]), "step_s")
    out["bucketer"] = best("bucketer", lambda r: (r["model"],), "bucketed_s")
    out["layers"] = best("layers", lambda r: (r["model"], r["batch"], r["layer"]), "forward_s")
    return out


def _identity(row: Mapping[str, Any]) -> tuple:
    """What names a measured row: its text and integer fields (model, batch, algorithm, ranks, nbytes)."""
    return tuple(sorted((k, v) for k, v in row.items() if isinstance(v, (str, int)) and not isinstance(v, bool)))


def combine_sessions(docs: Sequence[Any]) -> Any:
    """Merge one benchmark document (or part of one) measured in several calibration sessions.

    Every positive float (a time, a rate, a probe) becomes the geometric mean over the sessions that have it;
    so the ratio of any two measured times, such as a model's step over the host speed probe sampled with
    it, is the geometric mean of the sessions' ratios. Text, integers and booleans are the first session's.
    Lists of rows are matched by :func:`_identity` (rows measured in only some sessions are kept as they
    are); other lists of equal length are merged item by item; ``None`` (a value that was not finite) is
    left out. One session is returned as it is.
    """
    if not docs:
        raise ConfigError(SOURCE, "calibration sessions", 0, "nothing to merge")
    if len(docs) == 1:   # one session: exactly itself
        return copy.deepcopy(docs[0])
    docs = [d for d in docs if d is not None]
    if not docs:
        return None
    first = docs[0]
    if isinstance(first, bool) or isinstance(first, (str, int)):
        return first
    if isinstance(first, float):
        vals = [float(d) for d in docs if isinstance(d, (int, float)) and not isinstance(d, bool)]
        if all(v == vals[0] for v in vals):   # identical sessions: exactly that value
            return vals[0]
        if all(v > 0 for v in vals):
            return float(np.exp(np.mean(np.log(vals))))
        return float(np.mean(vals))
    if isinstance(first, Mapping):
        return {k: combine_sessions([d[k] for d in docs if isinstance(d, Mapping) and k in d]) for k in first}
    if isinstance(first, list):
        if first and all(isinstance(r, Mapping) for d in docs for r in d):
            groups: dict[tuple, list[Mapping[str, Any]]] = {}
            for d in docs:
                seen: dict[tuple, int] = {}
                for r in d:   # the i-th row of a name in one session goes with the i-th of the others
                    i = _identity(r)
                    seen[i] = seen.get(i, -1) + 1
                    groups.setdefault((i, seen[i]), []).append(r)
            return [combine_sessions(g) for g in groups.values()]
        if all(isinstance(d, list) and len(d) == len(first) for d in docs):
            return [combine_sessions(list(items)) for items in zip(*docs)]
    return first


def normalise_raw(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A session's raw document (:func:`measure_calibration`) after a JSON round trip: rank counts back to
    integer keys. A document without the compute and allreduce measurements is a clear error."""
    try:
        compute = {int(k): list(v) for k, v in raw["compute"].items()}
        allreduce = {int(k): dict(v) for k, v in raw["allreduce"].items()}
        loop = {int(k): dict(v) for k, v in (raw.get("loop") or {}).items()}
        if not all(isinstance(d, Mapping) for docs in compute.values() for d in docs):
            raise TypeError("compute documents must be objects")
    except (KeyError, TypeError, ValueError, AttributeError):
        when = raw.get("date", "?") if isinstance(raw, Mapping) else type(raw).__name__
        raise ConfigError(SOURCE, "calibration session", when,
                          "not a calibration's raw document (needs 'compute' and 'allreduce' by rank count)") from None
    out = {**raw, "compute": compute, "allreduce": allreduce}
    if loop:
        out["loop"] = loop
    return out


def _cpu_mhz() -> float | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("cpu mhz"):
                return float(line.split(":")[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 / 2 ** 30
    except (OSError, ValueError, IndexError):
        pass
    return None


def measure_loop_reference(model: str, per_rank_batch: int, ranks: int, iterations: int, *,
                           timeout_s: float = 900.0) -> dict[str, Any]:
    """One short real training run of the executor (:func:`executor.launch.launch`): ``model`` at
    ``per_rank_batch`` images per rank on ``ranks`` ranks of this machine, SGD, MPI's own allreduce, 25 MB
    buckets with overlap, ``iterations`` measured iterations after 2 warm-up ones, with the host speed probe.
    Returns what :func:`fit_loop_compute` needs: the measured ``compute_s`` (forward + backward of the
    critical rank, mean over iterations), ``iteration_s`` and the run's typical ``speed_probe_s`` (median of
    the fastest half of the per-iteration samples, as the validation loop takes it)."""
    from executor.launch import launch
    from perfmodel.config import load_config

    cfg = load_config(model=model, batch=int(per_rank_batch) * int(ranks), optimizer="sgd", system="local",
                      nodes=1, ranks_per_node=int(ranks), iterations=int(iterations), warmup_iterations=2,
                      epochs=1.0)
    m = launch(cfg, int(ranks), iterations=int(iterations), warmup_iterations=2, timeout_s=timeout_s,
               extra={"speed_probe": True})
    return {"model": model, "batch": int(per_rank_batch), "ranks": int(ranks), "iterations": int(iterations),
            "compute_s": float(m["breakdown"]["compute_s"]), "iteration_s": float(m["iteration_s"]),
            "speed_probe_s": (m.get("speed_probe") or {}).get("typical_s")}


def measure_calibration(plan: CalibrationPlan = FULL, *, progress: Callable[[str], None] | None = None,
                        timeout_s: float = 900.0) -> dict[str, Any]:
    """Run the benchmarks of ``plan`` on this machine: one calibration *session*. Returns its raw documents
    (JSON-ready): ``compute`` (per rank count, one ``bench compute`` document per round), ``loop`` (per rank
    count, the executor-loop reference run of :func:`measure_loop_reference`, when the plan has one),
    ``allreduce`` (per rank count), ``plan``, ``date``, ``host``, ``cores`` and ``elapsed_s``.
    :func:`fit_calibration` fits them."""
    say = progress or (lambda msg: None)
    t_start = time.monotonic()
    cores = os.cpu_count() or 1
    raw: dict[str, Any] = {"plan": plan.name, "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                           "host": platform.node() or "unknown-host", "cores": cores, "compute": {}, "allreduce": {}}
    # ---- compute, one job per rank count, the whole sweep repeated plan.compute_rounds times --------------
    if plan.compute_ranks[0] != 1:
        raise ConfigError(SOURCE, "compute_ranks", list(plan.compute_ranks), "must start with 1 (the device's peak)")
    for rnd in range(plan.compute_rounds):
        for k in plan.compute_ranks:
            models = [m for m in plan.model_batches if k <= plan.heavy_max_ranks.get(m, k)]
            mb = ";".join(f"{m}={','.join(map(str, plan.model_batches[m]))}" for m in models)
            args = ["--models", ",".join(models), "--batches", "1", "--model-batches", mb, "--layer-batches",
                    "none", "--repeats", str(plan.repeats), "--gemm-n", str(plan.gemm_n), "--memory-mb",
                    str(plan.memory_mb), "--json", "--quiet"]
            # the optimizer steps at every rank count (k ranks stepping at once share the memory system:
            # fit_optimizer_sharing); the bucketer's costs at one rank only
            args += ["--optimizers", "sgd,lars", "--aux-models", ",".join(plan.optimizer_models)]
            if k == 1:
                args += ["--bucketer-models", ",".join(m for m in plan.optimizer_models if m in BUCKETER_MODELS)]
            else:
                args += ["--no-bucketer"]
            if plan.kfac and rnd == 0:
                args += ["--kfac", f"{plan.kfac[0]}:{plan.kfac[1]}"]
            say(f"bench compute (round {rnd + 1}/{plan.compute_rounds}): {k} rank(s) sharing {cores} cores, "
                f"models {', '.join(models)}")
            doc = run_benchmark("executor.bench_compute", args, k, timeout_s=timeout_s, progress=say)
            raw["compute"].setdefault(k, []).append(doc)
    # ---- the executor's loop: one short real run per rank count, right after the compute benchmark -------
    if plan.loop_reference is not None:
        model, per_rank = plan.loop_reference
        if int(per_rank) not in plan.model_batches.get(model, ()):
            raise ConfigError(SOURCE, "loop_reference", f"{model}:{per_rank}",
                              "must be one of the plan's benchmarked (model, per-rank batch) pairs")
        raw["loop"] = {}
        for k in plan.compute_ranks:
            say(f"executor loop reference: {model} at {per_rank} per rank, {k} rank(s), {plan.loop_iterations} "
                "iterations")
            raw["loop"][k] = measure_loop_reference(model, int(per_rank), k, plan.loop_iterations,
                                                    timeout_s=timeout_s)
    # ---- allreduce ---------------------------------------------------------------------------------------
    for p in plan.allreduce_ranks:
        say(f"bench allreduce: {p} ranks, {', '.join(plan.algorithms)}")
        raw["allreduce"][p] = run_allreduce_samples(p, plan.algorithms, plan.min_bytes, plan.max_bytes,
                                                    factor=plan.factor, repeats=plan.allreduce_repeats,
                                                    max_iterations=plan.max_iterations, timeout_s=timeout_s,
                                                    progress=say)
    raw["elapsed_s"] = time.monotonic() - t_start
    return raw


def _checked_sessions(plan: CalibrationPlan, sessions: Sequence[Mapping[str, Any]],
                      host: str | None = None) -> list[dict[str, Any]]:
    """``sessions`` normalised (:func:`normalise_raw`); a session of another plan, or of another host than
    ``host`` when given, is a clear error."""
    out = [normalise_raw(r) for r in sessions]
    for r in out:
        if r.get("plan", plan.name) != plan.name:
            raise ConfigError(SOURCE, "earlier session plan", r.get("plan"), f"differs from this plan ({plan.name})")
        if host is not None and r.get("host", host) != host:
            raise ConfigError(SOURCE, "earlier session host", r.get("host"), f"is not this machine ({host})")
    return out


def fit_calibration(plan: CalibrationPlan, sessions: Sequence[Mapping[str, Any]], *,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fit every parameter (see the module docstring) to one or more sessions of :func:`measure_calibration`
    of the same plan on this host, merged with :func:`combine_sessions` (per measured item the geometric mean
    over the sessions), so that no one session's moment of a drifting host sets the whole calibration.

    Returns a JSON-ready report: ``machine``, ``device`` (peak, bandwidth, curves, layer overhead),
    ``compute_fit``, ``allreduce_fit``, ``overheads``, ``sessions`` and ``session_dates``, every session's raw
    documents (``raw_sessions``, oldest first) and ``elapsed_s`` (the last session's measuring time).
    :func:`write_spec` turns it into spec files.
    """
    say = progress or (lambda msg: None)
    if not sessions:
        raise ConfigError(SOURCE, "calibration sessions", 0, "nothing to fit")
    sessions = _checked_sessions(plan, sessions)
    last = sessions[-1]
    cores = int(last.get("cores") or os.cpu_count() or 1)
    date, host = str(last.get("date", "?")), str(last.get("host", "?"))
    if len(sessions) > 1:
        say(f"merging {len(sessions)} calibration sessions (geometric mean per measured item)")
    merged = {k: combine_sessions([merge_compute_docs(s["compute"][k]) for s in sessions if k in s["compute"]])
              for k in last["compute"]}
    if len(sessions) > 1:   # a difference of merged times is recomputed, not merged itself
        for doc in merged.values():
            for r in doc.get("bucketer", []):
                if {"plain_s", "bucketed_s", "overhead_s"} <= set(r):
                    r["overhead_s"] = r["bucketed_s"] - r["plain_s"]
    points: list[dict[str, Any]] = []
    for k, doc in merged.items():
        for r in doc["models"]:
            points.append({"model": r["model"], "share": k, "batch": r["batch"], "forward_s": r["forward_s"],
                           "backward_s": r["backward_s"], "step_s": r["step_s"],
                           "spread_step_s": r["spread_step_s"]})
    base = merged[plan.compute_ranks[0]]
    # the device's peak: the best aggregate GEMM rate over the measured layouts (one rank with every core, or
    # k ranks at once, each with its share of the cores: k x the slowest rank's rate)
    peak_k = {k: k * float(doc["gemm"]["flops"]) for k, doc in merged.items()}
    peak_from = max(peak_k, key=peak_k.get)
    peak = peak_k[peak_from]
    peak64 = max(k * float(doc["gemm_fp64"]["flops"]) for k, doc in merged.items())
    mem_bw = float(base["memory"]["triad_Bps"])
    gamma = float(base["reduce"]["gamma_s_per_B"])
    say("fitting the efficiency curves and the per-layer overhead")
    cfit = fit_compute(points, peak, mem_bw, cores)
    opt_rows = list(base["optimizers"])
    kfit = fit_kernel_launch(opt_rows, peak, mem_bw)
    sfit = fit_optimizer_sharing({k: doc.get("optimizers", []) for k, doc in merged.items()},
                                 kfit["kernel_launch_s"], peak, mem_bw)
    bfit = fit_bucketer(base["bucketer"], mem_bw)

    rows: list[dict[str, Any]] = []
    for p in last["allreduce"]:
        rows += combine_sessions([s["allreduce"][p]["typical"] for s in sessions if p in s["allreduce"]])
    say("fitting the allreduce models")
    afit = fit_collectives(rows, gamma)

    step_s = float(base.get("loop", {}).get("step_s", 0.0))
    jitter = compute_jitter(points)
    tail = compute_step_tail(points)
    # host speed probe references: per rank count, the median over the chosen rows (each row's probe travels
    # with its round), and per model
    probe: dict[int, float] = {}
    probe_model: dict[int, dict[str, float]] = {}
    for k, doc in merged.items():
        probed = [r for r in doc["models"] if r.get("probe_s")]
        if probed:
            probe[k] = float(np.median([r["probe_s"] for r in probed]))
            probe_model[k] = {m: float(np.median([r["probe_s"] for r in probed if r["model"] == m]))
                              for m in sorted({r["model"] for r in probed})}
    kfac = {k: {f: doc["kfac"][f] for f in ("model", "batch", "factor_s", "reduce_scatter_s", "inversion_s", "step_s")}
            for k, doc in merged.items() if "kfac" in doc}
    loop = fit_loop_compute(sessions, bfit, mem_bw, tail)
    return {
        "kind": "calibration", "plan": plan.name, "date": date, "host": host,
        "machine": {"cpu_count": cores, "cpu_mhz": _cpu_mhz(), "mem_total_GiB": _mem_total_gib(),
                    "platform": platform.platform(), "python": platform.python_version(),
                    "torch": base.get("torch")},
        "device": {"peak_flops_fp32": peak, "peak_flops_fp64": peak64, "memory_bw_Bps": mem_bw,
                   "copy_bw_Bps": float(base["memory"]["copy_Bps"]), "reduce_gamma_s_per_B": gamma,
                   "gemm_n": base["gemm"]["n"], "peak_from_ranks": peak_from,
                   "gemm_aggregate_flops_by_ranks": peak_k, "layer_overhead_s": cfit["layer_overhead_s"],
                   "curves": cfit["curves"], "workload_scale": cfit["workload_scale"],
                   "workload_scale_batch": cfit["workload_scale_batch"]},
        "compute_fit": {k: cfit[k] for k in ("rms_rel_err", "max_abs_rel_err", "generic_rms_rel_err",
                                             "generic_max_abs_rel_err", "points")},
        "allreduce_fit": afit, "allreduce_samples": rows, "jitter_cv": jitter, "step_tail": tail,
        "speed_probe_s": probe, "speed_probe_model_s": probe_model,
        "kfac": kfac, "loop_compute": loop,
        "overheads": {"step_s": step_s, "bucketer_s": bfit["bucketer_s"], "grad_hook_s": bfit["grad_hook_s"],
                      "kernel_launch_s": kfit["kernel_launch_s"],
                      "optimizer_traffic_scale": kfit["optimizer_traffic_scale"], "optimizer_fit": kfit,
                      "optimizer_sharing": sfit,
                      "bucketer_fit": bfit},
        "sessions": len(sessions), "session_dates": [str(r.get("date", "?")) for r in sessions],
        "elapsed_s": float(last.get("elapsed_s", 0.0)),
        "raw_sessions": sessions,
    }


def calibrate(plan: CalibrationPlan = FULL, *, progress: Callable[[str], None] | None = None,
              timeout_s: float = 900.0, earlier: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Measure one session of ``plan`` on this machine and fit every parameter to it, together with the
    ``earlier`` sessions' raw documents if given (see :func:`fit_calibration`).

    The compute jobs (one per rank count) are repeated ``plan.compute_rounds`` times and merged with
    :func:`merge_compute_docs` (the fastest round per item).
    """
    earlier = _checked_sessions(plan, earlier, host=platform.node() or "unknown-host")   # before measuring
    raw = measure_calibration(plan, progress=progress, timeout_s=timeout_s)
    return fit_calibration(plan, [*earlier, raw], progress=progress)


# ==========================================================================================================
# spec files
# ==========================================================================================================
def _f(x: float, digits: int = 6) -> str:
    """A TOML float."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"not a finite number: {x}")
    s = f"{x:.{digits}g}"
    if "e" not in s and "." not in s and "inf" not in s:
        s += ".0"
    return s


def _s(text: str) -> str:
    """A TOML basic string."""
    return json.dumps(str(text), ensure_ascii=True)


def render_device_toml(report: Mapping[str, Any], device_id: str = "local-cpu") -> str:
    """The calibrated device file (TOML text) of a :func:`calibrate` report."""
    d, m = report["device"], report["machine"]
    when = f"measured by perfmodel calibrate on {report['date']}, {report['host']}"
    cores = int(m["cpu_count"])
    mhz = m.get("cpu_mhz") or 1000.0
    mem_gib = m.get("mem_total_GiB") or 1.0
    curves = {int(k): v for k, v in d["curves"].items()}
    base = curves[min(curves)]
    lines = [
        f"# Calibrated by `perfmodel calibrate` ({report['plan']}) on {report['date']} on {report['host']}.",
        "# The device is this machine's CPU with all its cores; ranks of a run share it (see [shared_efficiency]).",
        f"id = {_s(device_id)}",
        f"name = {_s(f'Local CPU ({cores} cores, calibrated)')}",
        'kind = "cpu"',
        f"notes = {_s('calibrated: peak = GEMM with every core; efficiency fitted to whole-model training steps')}",
        f"cores = {cores}",
        f"clock_GHz = {_f(mhz / 1000.0, 5)}",
        f"peak_tflops_fp32 = {_f(d['peak_flops_fp32'] / 1e12)}",
        f"peak_tflops_fp64 = {_f(d['peak_flops_fp64'] / 1e12)}",
        f"layer_overhead_us = {_f(d['layer_overhead_s'] * 1e6)}",
        "",
        "[memory.dram]",
        f"capacity_GiB = {_f(mem_gib, 5)}",
        f"bw_GBps = {_f(d['memory_bw_Bps'] / 1e9)}",
        "",
        "[efficiency.fp32]",
        f"eff_max = {_f(base['eff_max'])}",
        f"batch_half_images = {_f(base['batch_half'])}",
    ]
    for k in sorted(curves):
        if k <= 1:
            continue
        lines += ["", f"[shared_efficiency.fp32.ranks_{k}]", f"eff_max = {_f(curves[k]['eff_max'])}",
                  f"batch_half_images = {_f(curves[k]['batch_half'])}"]
    scales = {int(k): v for k, v in (d.get("workload_scale") or {}).items()}
    for k in sorted(scales):
        lines += ["", f"[workload_scale.ranks_{k}]"] + [f"{m} = {_f(v, 4)}" for m, v in sorted(scales[k].items())]
    batch_scales = {int(k): v for k, v in (d.get("workload_scale_batch") or {}).items()}
    for k in sorted(batch_scales):
        for m, pts in sorted(batch_scales[k].items()):
            lines += ["", f"[workload_scale_batch.ranks_{k}.{m}]", f"batch = [{', '.join(_f(p[0]) for p in pts)}]",
                      f"factor = [{', '.join(_f(p[1], 4) for p in pts)}]"]
    fit = report["compute_fit"]
    models = sorted({p["model"] for p in fit["points"]})
    fitted = (f"{when}: least squares of log forward/backward times of {', '.join(models)} at several per-rank "
              f"batches (step rms error {fit['generic_rms_rel_err']:.1%}, max {fit['generic_max_abs_rel_err']:.1%})")
    src = {
        "cores": f"{when}: os.cpu_count()",
        "clock_GHz": f"{when}: /proc/cpuinfo 'cpu MHz' (nominal; the peak below is measured)",
        "peak_tflops_fp32": f"{when}: fp32 GEMM n={d['gemm_n']} (torch.mm), best aggregate rate over one rank with "
                            f"{cores} threads and k ranks at once (k x the slowest rank; here k = "
                            f"{d.get('peak_from_ranks', 1)}); fastest of samples taken before, during and after "
                            f"the model measurements",
        "peak_tflops_fp64": f"{when}: fp64 GEMM (torch.mm), best aggregate rate as for fp32 (fastest repetition)",
        "layer_overhead_us": f"{fitted}; per layer and pass",
        "memory.dram.capacity_GiB": f"{when}: /proc/meminfo MemTotal",
        "memory.dram.bw_GBps": f"{when}: STREAM-like triad on float32 arrays with {cores} threads (best rate)",
        "efficiency.fp32.eff_max": f"{fitted}; one rank with {cores} threads",
        "efficiency.fp32.batch_half_images": f"{fitted}; one rank with {cores} threads",
    }
    for k in sorted(curves):
        if k > 1:
            for key in ("eff_max", "batch_half_images"):
                src[f"shared_efficiency.fp32.ranks_{k}.{key}"] = (f"{fitted}; {k} ranks at once with "
                                                                  f"{max(1, cores // k)} thread(s) each")
    for k in sorted(scales):
        for m in sorted(scales[k]):
            src[f"workload_scale.ranks_{k}.{m}"] = (
                f"{when}: EMPIRICAL factor, geometric median of measured / modelled step times of {m} with {k} "
                f"rank(s) sharing the CPU (with it: step rms error {fit['rms_rel_err']:.1%}, max "
                f"{fit['max_abs_rel_err']:.1%})")
    for k in sorted(batch_scales):
        for m in sorted(batch_scales[k]):
            src[f"workload_scale_batch.ranks_{k}.{m}.batch"] = src[f"workload_scale_batch.ranks_{k}.{m}.factor"] = (
                f"{when}: EMPIRICAL factor per benchmarked per-rank batch, geometric median of measured / modelled "
                f"step times of {m} at that batch with {k} rank(s) sharing the CPU (interpolated in log batch)")
    lines += ["", "[sources]"] + [f"{_s(k)} = {_s(v)}" for k, v in src.items()]
    return "\n".join(lines) + "\n"


def _sessions_note(report: Mapping[str, Any]) -> str:
    n = int(report.get("sessions", 1))
    if n <= 1:
        return ""
    return (f"; {n} sessions ({', '.join(report.get('session_dates', []))}) merged by the geometric mean of "
            f"every measured time")


def render_system_toml(report: Mapping[str, Any], device_ref: str, system_id: str = "local") -> str:
    """The calibrated system file (TOML text) of a :func:`calibrate` report, referring to ``device_ref``."""
    m, ov = report["machine"], report["overheads"]
    when = f"measured by perfmodel calibrate on {report['date']}, {report['host']}"
    mem_gib = m.get("mem_total_GiB") or 1.0
    afit = report["allreduce_fit"]
    # intra-node link (used only for algorithms without a calibration): from the 2-rank ring profile
    ring2 = afit.get("ring", {}).get("profiles", {}).get(2) or next(
        (e["profiles"][p] for e in afit.values() for p in sorted(e["profiles"])), None)
    lat_us = ring2["alpha_s"] / 2 * 1e6 if ring2 else 1.0
    link = (1e-9 / ring2["beta_s_per_B"]) if ring2 and ring2["beta_s_per_B"] > 0 else 10.0
    lines = [
        f"# Calibrated by `perfmodel calibrate` ({report['plan']}) on {report['date']} on {report['host']}.",
        "# One node; its CPU is one device shared by the ranks of a run. [calibration] holds the measured",
        "# allreduce costs (preferred by the predictor over the link parameters) and the executor's overheads.",
        f"id = {_s(system_id)}",
        f"name = {_s('This machine (' + str(report['host']) + ', calibrated)')}",
        f"notes = {_s('calibrated by perfmodel calibrate; see [calibration]')}",
        "max_nodes = 1",
        "",
        "[node]",
        f"device = {_s(device_ref)}",
        "devices_per_node = 1",
        "nics_per_node = 1",
        f"host_memory_GiB = {_f(mem_gib, 5)}",
        "",
        "[node.intra]",
        'kind = "shared-memory"',
        f"link_GBps = {_f(max(link, 1e-3))}",
        f"latency_us = {_f(max(lat_us, 0.0))}",
        "",
        "[network]",
        'fabric = "loopback"',
        "link_Gbps = 40",
        "latency_us = 10.0",
        "",
        "[network.topology]",
        'kind = "single-switch"',
        "ports = 1",
        "",
        "[calibration]",
        f"date = {_s(report['date'])}",
        f"host = {_s(report['host'])}",
        "notes = " + _s(f"plan {report['plan']}{_sessions_note(report)}; allreduce: typical of repeated "
                        "OSU-style blocks; fits on the relative error"),
    ]
    src: dict[str, str] = {
        "max_nodes": "this machine is one node",
        "node.devices_per_node": "the CPU with all its cores is one device; ranks share it",
        "node.nics_per_node": "loopback only (one node)",
        "node.host_memory_GiB": f"{when}: /proc/meminfo MemTotal",
        "node.intra.link_GBps": f"{when}: 1 / beta of the 2-rank ring allreduce profile (used only for algorithms "
                                "without a calibration)",
        "node.intra.latency_us": f"{when}: half the alpha of the 2-rank ring allreduce profile",
        "network.link_Gbps": "unused: one node (loopback placeholder)",
        "network.latency_us": "unused: one node (loopback placeholder)",
        "network.topology.ports": "one node",
    }
    for alg, e in afit.items():
        cf = e.get("closed_form")
        if cf:
            lines += ["", f"[calibration.allreduce.{alg}]", f"alpha_us = {_f(cf['alpha_s'] * 1e6)}",
                      f"beta_ns_per_B = {_f(cf['beta_s_per_B'] * 1e9)}",
                      f"gamma_ns_per_B = {_f(cf['gamma_s_per_B'] * 1e9)}"]
            how = (f"{when}, ranks {','.join(map(str, cf['ranks']))}: least squares of the {alg} closed form on the "
                   f"relative error (rms {cf['rms_rel_err']:.1%}, max {cf['max_abs_rel_err']:.1%})")
            src[f"calibration.allreduce.{alg}.alpha_us"] = how
            src[f"calibration.allreduce.{alg}.beta_ns_per_B"] = how
            src[f"calibration.allreduce.{alg}.gamma_ns_per_B"] = (
                f"{when}: reduction cost per byte of numpy.add on float32 (fixed in the fit)" if cf["gamma_fixed"]
                else how)
    for alg, e in afit.items():
        for p, prof in sorted(e["profiles"].items(), key=lambda kv: int(kv[0])):
            if int(p) < 2:
                continue
            key = f"calibration.allreduce_measured.{alg}.ranks_{int(p)}"
            lines += ["", f"[{key}]", f"alpha_us = {_f(prof['alpha_s'] * 1e6)}",
                      f"beta_ns_per_B = {_f(prof['beta_s_per_B'] * 1e9)}"]
            how = (f"{when}, {int(p)} ranks: alpha + beta n fitted to bench allreduce (rms {prof['rms_rel_err']:.1%}, "
                   f"max {prof['max_abs_rel_err']:.1%})")
            src[f"{key}.alpha_us"] = how
            src[f"{key}.beta_ns_per_B"] = how

    def per_ranks(table: str, values: Mapping[Any, float], scale: float, how: Callable[[int], str]) -> None:
        """``[calibration.<table>]`` with ``ranks_<k> = value * scale`` and a source per key."""
        if not values:
            return
        lines.extend(["", f"[calibration.{table}]"] + [f"ranks_{int(k)} = {_f(v * scale)}" for k, v in values.items()])
        for k in values:
            src[f"calibration.{table}.ranks_{int(k)}"] = how(int(k))

    per_ranks("jitter", report.get("jitter_cv") or {}, 1.0,
              lambda k: f"{when}: compute-time CV of one rank with {k} rank(s) sharing the CPU: median over the "
                        "benchmarked workloads of range / (d_n x median) of the repeated steps")
    per_ranks("step_tail", report.get("step_tail") or {}, 1.0,
              lambda k: f"{when}: EMPIRICAL, a step's mean over its typical time with {k} rank(s) sharing the CPU: "
                        "median over the benchmarked workloads of median / typical of the repeated steps")
    per_ranks("loop_compute", (report.get("loop_compute") or {}).get("scale") or {}, 1.0,
              lambda k: f"{when}: EMPIRICAL, compute inside the executor's loop over bench compute with {k} rank(s): "
                        "a real run of the loop reference (its bucketer hooks removed) over the same model and "
                        "batch benchmarked, speed-probe normalised, median over the sessions")
    per_ranks("optimizer_traffic", ((report.get("overheads") or {}).get("optimizer_sharing") or {}).get("scale")
              or {}, 1.0,
              lambda k: f"{when}: EMPIRICAL, the optimizer step's memory traffic over the cost models' count with {k} "
                        "ranks stepping at once (each at its share of the bandwidth; launch cost as at one rank): "
                        "step() + zero_grad() of the memory-bound optimizer rows, barrier-synchronised")
    for k, r in (report.get("kfac") or {}).items():
        key = f"calibration.kfac.ranks_{int(k)}"
        lines += ["", f"[{key}]", f"model = {_s(r['model'])}", f"per_rank_batch = {int(r['batch'])}",
                  f"factor_ms = {_f(r['factor_s'] * 1e3)}", f"exchange_ms = {_f(r['reduce_scatter_s'] * 1e3)}",
                  f"inversion_ms = {_f(r['inversion_s'] * 1e3)}"]
        how = (f"{when}: the executor's K-FAC on {r['model']} at per-rank batch {int(r['batch'])} with {int(k)} "
               "rank(s), median of the refresh steps, slowest rank (bench compute --kfac)")
        for f in ("per_rank_batch", "factor_ms", "exchange_ms", "inversion_ms"):
            src[f"{key}.{f}"] = how
    per_ranks("speed_probe_ms", report.get("speed_probe_s") or {}, 1e3,
              lambda k: f"{when}: host speed probe (executor.speed_probe) with {k} rank(s) sharing the CPU, sampled "
                        "after every timed whole-model step: median over the measured (model, batch) rows")
    for k, by_model in (report.get("speed_probe_model_s") or {}).items():
        key = f"calibration.speed_probe_model_ms.ranks_{int(k)}"
        lines += ["", f"[{key}]"] + [f"{m} = {_f(v * 1e3)}" for m, v in by_model.items()]
        for m in by_model:
            src[f"{key}.{m}"] = (f"{when}: host speed probe sampled after the timed steps of {m} with {int(k)} "
                                 "rank(s) sharing the CPU: median over its batches")
    lines += ["", "[calibration.overheads]", f"step_us = {_f(ov['step_s'] * 1e6)}",
              f"bucketer_us = {_f(ov['bucketer_s'] * 1e6)}", f"grad_hook_us = {_f(ov['grad_hook_s'] * 1e6)}",
              f"kernel_launch_us = {_f(ov['kernel_launch_s'] * 1e6)}",
              f"optimizer_traffic_scale = {_f(max(1.0, ov.get('optimizer_traffic_scale', 1.0)))}"]
    src["calibration.overheads.step_us"] = f"{when}: the executor's batch fetch and loop bookkeeping per step"
    bm = ", ".join(sorted({r["model"] for r in ov["bucketer_fit"]["rows"]})) or "none"
    src["calibration.overheads.bucketer_us"] = (f"{when}: gradient bucketer (null engine) overhead on {bm}, less the "
                                                "bucket copies at the triad bandwidth; fixed part (EMPIRICAL)")
    src["calibration.overheads.grad_hook_us"] = (f"{when}: gradient bucketer overhead on {bm}; per parameterised "
                                                 "layer (EMPIRICAL)")
    om = ", ".join(sorted({f"{r['optimizer']}/{r['model']}" for r in ov["optimizer_fit"]["rows"]})) or "none"
    src["calibration.overheads.kernel_launch_us"] = (f"{when}: optimizer step() + zero_grad() of {om} against the "
                                                     "optimizer cost models; per kernel (EMPIRICAL)")
    src["calibration.overheads.optimizer_traffic_scale"] = (
        f"{when}: optimizer step() + zero_grad() of {om}: measured memory traffic over the cost models' count, "
        "fitted jointly with kernel_launch_us (1 without a memory-bound step; EMPIRICAL)")
    lines += ["", "[sources]"] + [f"{_s(k)} = {_s(v)}" for k, v in src.items()]
    return "\n".join(lines) + "\n"


def write_spec(report: Mapping[str, Any], out: str | os.PathLike) -> tuple[Path, Path]:
    """Write the calibrated system file ``out`` and its device file ``<stem>-cpu.toml`` next to it,
    atomically: both are rendered into a temporary folder beside ``out``, loaded and validated there,
    then moved into place (device first). Returns (system path, device path)."""
    from hardware.catalog import load_system

    out = Path(out).expanduser()
    if out.suffix != ".toml":
        raise ConfigError("--out", "out", str(out), "the spec file name must end in .toml")
    out.parent.mkdir(parents=True, exist_ok=True)
    dev_name = f"{out.stem}-cpu.toml"
    sys_text = render_system_toml(report, dev_name, system_id=re.sub(r"[^A-Za-z0-9._-]", "-", out.stem) or "local")
    dev_text = render_device_toml(report, device_id=f"{out.stem}-cpu")
    tmp = Path(tempfile.mkdtemp(prefix=".calibrate-", dir=out.parent))
    try:
        (tmp / dev_name).write_text(dev_text, encoding="utf-8")
        (tmp / out.name).write_text(sys_text, encoding="utf-8")
        load_system(tmp / out.name)  # validates both files
        for name in (dev_name, out.name):
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp / dev_name, out.parent / dev_name)
        os.replace(tmp / out.name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, out.parent / dev_name


if __name__ == "__main__":
    if "--allreduce-worker" in sys.argv[1:]:
        from executor.mpi_utils import run_guarded
        sys.exit(run_guarded(_allreduce_worker, sys.argv[1:]))
    print("usage: perfmodel calibrate [--quick] [--out FILE.toml]  (this module is the library)", file=sys.stderr)
    sys.exit(2)
