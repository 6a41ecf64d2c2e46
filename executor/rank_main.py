"""The program every rank runs: ``python -m executor.rank_main SPEC.json`` (started by
:mod:`executor.launch` under mpiexec, srun, or alone for one rank).

Per iteration, on every rank: fetch this rank's shard of the global batch, forward, backward (gradient
hooks fill buckets and launch their allreduces on a communication thread), wait for the outstanding
allreduces (``comm_wait_s`` = exposed communication), optimizer step (SGD, LARS or K-FAC; K-FAC's factor
refresh and inversion every T steps). Timings are recorded per rank and gathered by rank 0, which writes
the measurement atomically. With ``until_top1`` in the spec (real data), training evaluates on the
validation split every ``eval_every_epochs`` of the config (fractions of an epoch allowed) and stops at the
first evaluation at or above the target (time to accuracy; ``epochs_to_target`` is then fractional).

Assumptions: synchronous data parallelism; the global batch is split evenly; a rank whose micro-batch is
smaller than its share (``micro_batch`` in the spec) accumulates gradients over several forward/backward
passes and reduces once.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from typing import Any

__all__ = ["main"]


def _init_mpi():
    import mpi4py

    mpi4py.rc.thread_level = "multiple"  # the communication thread progresses allreduces during backward
    from mpi4py import MPI

    return MPI


def _software(MPI) -> dict[str, str]:
    import mpi4py
    import torch

    from perfmodel.provenance import software_versions

    out = software_versions(("torch", "mpi4py", "mpich"))
    out["torch_runtime"] = torch.__version__
    out["mpi4py_runtime"] = mpi4py.__version__
    out["mpi_library"] = MPI.Get_library_version().splitlines()[0].strip()
    return out


def _trace_events(rank: int, records: list[dict], t0: float) -> list[dict]:
    """Chrome trace events (complete events "X", microseconds) for one rank: one track for compute and
    the optimizer, one for communication (per-bucket allreduces) and one for waiting."""
    ev: list[dict] = [{"name": "process_name", "ph": "M", "pid": rank, "tid": 0, "args": {"name": f"rank {rank}"}}]
    for tid, name in ((0, "compute"), (1, "communication"), (2, "waiting")):
        ev.append({"name": "thread_name", "ph": "M", "pid": rank, "tid": tid, "args": {"name": name}})
    for rec in records:
        for key, label, tid in (("data", "data", 0), ("forward", "forward", 0), ("backward", "backward", 0),
                                ("wait", "comm wait", 2), ("copy_out", "average + copy out", 0),
                                ("optimizer", "optimizer", 0)):
            if key not in rec["spans"]:
                continue
            s, e = rec["spans"][key]
            ev.append({"name": label, "ph": "X", "pid": rank, "tid": tid, "ts": (s - t0) * 1e6,
                       "dur": max(e - s, 0.0) * 1e6, "args": {"iteration": rec["iteration"]}})
        for b in rec.get("buckets", []):
            ev.append({"name": f"allreduce bucket {b['index']}", "ph": "X", "pid": rank, "tid": 1,
                       "ts": (b["start_s"] - t0) * 1e6, "dur": max(b["end_s"] - b["start_s"], 0.0) * 1e6,
                       "args": {"iteration": rec["iteration"], "bytes": b["nbytes"]}})
    return ev


def _train(spec: dict[str, Any], MPI) -> None:
    import torch
    import torch.nn.functional as F

    from executor.comm import buckets as bucket_mod
    from executor.data import make_data
    from executor.measurement import summarise, write_json_atomic
    from executor.models import build_model
    from executor.optim import build_optimizer, build_schedule, set_lr
    from perfmodel.config import load_config
    from perfmodel.datasets import DATASETS
    from executor.heap import keep_heap
    from perfmodel.provenance import machine_description

    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    with open(os.path.join(spec["run_dir"], "pids", f"rank-{rank}.pid"), "w") as fh:
        fh.write(str(os.getpid()))
    cfg = load_config(None, **{k: v for k, v in spec["config"].items()})
    heap = keep_heap()   # as the calibration's benchmarks do (executor.heap)
    torch.set_num_threads(int(spec.get("cores_per_rank", 1)))
    torch.manual_seed(cfg.seed)
    dataset = cfg.dataset
    info = DATASETS[dataset]
    if cfg.batch % world:
        raise ValueError(f"global batch {cfg.batch} is not divisible by {world} ranks")
    per_rank = cfg.batch // world
    micro = int(spec.get("micro_batch") or per_rank)
    accum = -(-per_rank // micro)

    t_setup = time.perf_counter()
    model = build_model(cfg.model, num_classes=info.num_classes)
    # identical initial parameters everywhere: broadcast rank 0's
    with torch.no_grad():
        for p in list(model.parameters()) + list(model.buffers()):
            if p.dtype.is_floating_point:
                arr = p.detach().numpy()
                comm.Bcast(arr, root=0)
    data = make_data(cfg.data, dataset, cfg.batch, rank, world, cfg.seed)
    ipe = getattr(data, "batches_per_epoch", max(1, info.train_images // cfg.batch))
    opts = dict(cfg.optimizer_options)
    # perfmodel.optimizers.base.COMMON_OPTION_KEYS: read here, not by the optimizer classes
    momentum = float(opts.pop("momentum", 0.9))
    wd = float(opts.pop("weight_decay", 5e-5 if cfg.optimizer == "lars" else 1e-4))
    epochs_for_schedule = float(spec.get("max_epochs") or cfg.epochs or 90.0)
    schedule = build_schedule(cfg.optimizer, global_batch=cfg.batch, iterations_per_epoch=ipe,
                              epochs=epochs_for_schedule, warmup_epochs=cfg.warmup_epochs, options=opts)
    opt = build_optimizer(cfg.optimizer, model, lr=schedule(0), momentum=momentum, weight_decay=wd,
                          options=opts, comm=comm if world > 1 else None, source=cfg.source)
    bucketer = None
    if world > 1:
        algorithm = "mpi" if cfg.allreduce == "auto" else cfg.allreduce
        if spec.get("backend") == "torch":
            from executor.comm.torch_dist import TorchDistEngine, init_from_mpi
            init_from_mpi(comm)
            bucketer = bucket_mod.GradientBucketer(model, cfg.bucket_bytes, overlap=cfg.overlap,
                                                   engine=TorchDistEngine(), close_engine=True)
        else:
            bucketer = bucket_mod.GradientBucketer(model, cfg.bucket_bytes, comm, algorithm, overlap=cfg.overlap)
    setup_s = time.perf_counter() - t_setup

    until_top1 = spec.get("until_top1")
    max_epochs = float(spec.get("max_epochs") or 0)
    warmup = int(spec["warmup_iterations"])
    total = warmup + int(spec["iterations"]) if until_top1 is None else None
    records: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    train_wall = 0.0
    t_origin = time.perf_counter()
    it = 0
    model.train()
    fault = spec.get("fault") or {}
    check_params = bool(spec.get("check_params"))
    probe = None
    if spec.get("speed_probe"):
        from executor.speed_probe import SpeedProbe, start_together
        probe = SpeedProbe()
    while True:
        if total is not None and it >= total:
            break
        if fault and fault.get("rank") == rank and fault.get("iteration") == it:
            _inject(fault)
        set_lr(opt, schedule(it))
        t0 = time.perf_counter()
        batch = data.next_batch()
        t1 = time.perf_counter()
        fwd = bwd = 0.0
        for m in range(accum):
            a = time.perf_counter()
            xs = batch.x[m * micro:(m + 1) * micro]
            ys = batch.y[m * micro:(m + 1) * micro]
            if bucketer is not None:
                bucketer.enabled = m == accum - 1
            loss = F.cross_entropy(model(xs), ys) * (len(xs) / per_rank)
            b = time.perf_counter()
            loss.backward()
            c = time.perf_counter()
            fwd, bwd = fwd + (b - a), bwd + (c - b)
        t3 = time.perf_counter()
        timing = bucketer.finish() if bucketer is not None else None
        t4 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=False)
        t5 = time.perf_counter()
        refresh = factor = 0.0
        lt = getattr(opt, "last_timings", None)
        if lt:
            refresh = float(sum(v for k, v in lt.items() if k in ("factor_s", "reduce_scatter_s", "inversion_s")))
            factor = float(lt.get("factor_s", 0.0))  # spent inside forward/backward hooks
        # finish(): the wait for the collectives, then averaging and copying back (executor work, not
        # communication: the cost models book it with the bucketer's overheads)
        t_wait = timing.waited_s if timing is not None and timing.waited_s is not None else t4
        rec = {"iteration": it, "warmup": it < warmup,
               "data_s": t1 - t0, "forward_s": fwd, "backward_s": bwd, "comm_wait_s": t_wait - t3,
               "copy_out_s": t4 - t_wait,
               "comm_total_s": timing.comm_total_s if timing else 0.0, "optimizer_s": t5 - t4,
               "kfac_refresh_s": refresh, "kfac_factor_s": factor, "iteration_s": t5 - t0, "loss": float(loss.detach()) * per_rank / max(1, len(xs)),
               "spans": {"data": (t0, t1), "forward": (t1, t1 + fwd), "backward": (t1 + fwd, t3),
                         "wait": (t3, t_wait), "copy_out": (t_wait, t4), "optimizer": (t4, t5)},
               "buckets": [{"index": bt.index, "nbytes": bt.nbytes, "ready_s": bt.ready_s, "start_s": bt.start_s,
                            "end_s": bt.end_s} for bt in timing.buckets] if timing else []}
        if check_params:
            rec["param_digest"] = _digest(model)
        if probe is not None:  # host speed now, outside the timed iteration (executor.speed_probe)
            if world > 1 and cfg.nodes > 1:   # every rank probes at once, as in the calibration
                start_together(comm)           # (a barrier over a network leaves them apart: executor.speed_probe)
            elif world > 1:
                comm.Barrier()
            rec["probe_cold_s"], rec["probe_s"] = probe.sample_pair()   # the warm sample is the statistic
        records.append(rec)
        train_wall += t5 - t0
        it += 1
        if until_top1 is not None and evaluation_due(it, ipe, cfg.eval_every_epochs):
            acc = _evaluate(model, data, comm, MPI)
            epoch = it / ipe
            evals.append({"epoch": epoch, "iteration": it, "top1": acc, "train_wall_s": train_wall,
                          "wall_s": time.perf_counter() - t_origin})
            model.train()
            if acc >= float(until_top1) or (max_epochs and epoch >= max_epochs - 1e-9):
                break
    wall = time.perf_counter() - t_origin
    if bucketer is not None:
        bucketer.close()
    if world > 1 and spec.get("backend") == "torch":
        # gloo's threads must stop before the interpreter exits: a rank that left its process group alive
        # aborted at exit ("terminate called without an active exception", 2 of 12 two-rank runs here)
        from executor.comm.torch_dist import destroy
        comm.Barrier()   # every rank's last torch.distributed operation has finished
        destroy()

    # --- gather and write (rank 0) -----------------------------------------------------------------------
    slim = [{k: v for k, v in r.items() if k not in ("spans", "buckets")} for r in records]
    if spec.get("trace_dir"):
        os.makedirs(spec["trace_dir"], exist_ok=True)
        write_json_atomic(os.path.join(spec["trace_dir"], f"trace-rank{rank}.json"),
                          {"traceEvents": _trace_events(rank, records, t_origin), "displayTimeUnit": "ms"})
    all_slim = comm.gather(slim, root=0)
    buckets0 = [r["buckets"] for r in records]
    if rank != 0:
        return
    summary = summarise(all_slim, cfg.batch) if any(not r["warmup"] for r in slim) else {}
    measurement = {
        "kind": "measurement", "method": "executor", "config": cfg.to_dict(), "config_hash": cfg.config_hash,
        "config_source": spec.get("source"), "ranks": world, "backend": spec.get("backend", "mpi"),
        "allreduce_algorithm": ("mpi" if cfg.allreduce == "auto" else cfg.allreduce) if world > 1 else None,
        "launcher": spec.get("launcher"), "cores_per_rank": spec.get("cores_per_rank"),
        "malloc_kept_heap": heap,
        "per_rank_batch": per_rank, "micro_batch": micro, "accumulation_steps": accum,
        "iterations_per_epoch": ipe, "warmup_iterations": warmup, "setup_s": setup_s, "wall_s": wall,
        "software": _software(MPI), "machine": machine_description(),
        **summary,
        "records": all_slim,
        "buckets_rank0": buckets0,
    }
    if probe is not None:
        from executor.bench_compute import typical

        per_iteration = _probe_slowest(all_slim)
        cold = _probe_slowest(all_slim, "probe_cold_s")
        measurement["speed_probe"] = {
            **probe.describe(),
            "median_s": statistics.median(per_iteration) if per_iteration else None,
            "typical_s": typical(per_iteration) if per_iteration else None,
            "cold_typical_s": typical(cold) if cold else None,
            "statistic": "per measured iteration the maximum over ranks of the warm sample (the second of a pair); "
                         "median_s their median, typical_s the median of their fastest half (the calibration's "
                         "statistic); cold_typical_s the same of the first samples"}
    if until_top1 is not None:
        reached = [e for e in evals if e["top1"] >= float(until_top1)]
        measurement.update({"until_top1": until_top1, "evaluations": evals,
                            "reached": bool(reached),
                            "time_to_accuracy_s": reached[0]["wall_s"] if reached else None,
                            "epochs_to_target": reached[0]["epoch"] if reached else None})
    if summary:
        measurement["time_to_train_s"] = None  # a fixed-iteration run measures iterations, not a whole run
    write_json_atomic(spec["out"], measurement)


def _probe_slowest(per_rank: list[list[dict[str, Any]]], key: str = "probe_s") -> list[float]:
    """Per measured iteration the slowest rank's speed-probe time ``key`` (seconds): a synchronous step waits
    for the slowest rank, and the calibration's compute times are maxima over ranks too."""
    n = min(len(r) for r in per_rank)
    return [max(r[i][key] for r in per_rank) for i in range(n)
            if not per_rank[0][i]["warmup"] and all(key in r[i] for r in per_rank)]


def _digest(model) -> str:
    """SHA-1 of all parameters' bytes: equal on every rank iff the parameters are bitwise identical."""
    import hashlib

    h = hashlib.sha1()
    for p in model.parameters():
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def _inject(fault: dict) -> None:
    """Fault injection for tests: die by a signal, or raise, at a given rank and iteration."""
    import signal

    if fault.get("kind") == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected fault at iteration {fault.get('iteration')}")


def evaluation_due(it: int, iterations_per_epoch: int, every_epochs: float) -> bool:
    """Whether a time-to-accuracy run evaluates after its ``it``-th iteration (counted from 1): each time
    training crosses a multiple of ``every_epochs`` epochs (fractions allowed, e.g. 0.25: four evaluations
    per epoch; at least one iteration apart), so ``every_epochs = 1`` evaluates at every epoch end."""
    step = every_epochs * iterations_per_epoch
    if step <= 1:
        return True
    return math.floor(it / step + 1e-9) > math.floor((it - 1) / step + 1e-9)


def _evaluate(model, data, comm, MPI) -> float:
    """Top-1 accuracy (percent) on the validation set, each rank scoring its shard; summed over ranks."""
    import numpy as np
    import torch

    model.eval()
    x, y = data.val_shard()
    with torch.no_grad():
        correct = int((model(x).argmax(dim=1) == y).sum()) if len(x) else 0
    tot = np.array([correct, len(x)], dtype=np.int64)
    comm.Allreduce(MPI.IN_PLACE, tot, op=MPI.SUM)
    return 100.0 * tot[0] / max(1, tot[1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0], encoding="utf-8") as fh:
        spec = json.load(fh)
    MPI = _init_mpi()
    from executor.mpi_utils import run_guarded

    run_guarded(_train, spec, MPI, comm=MPI.COMM_WORLD)
    # a clean exit is not a death: the launcher's death watch skips ranks that leave this mark
    with open(os.path.join(spec["run_dir"], "pids", f"rank-{MPI.COMM_WORLD.Get_rank()}.done"), "w"):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
