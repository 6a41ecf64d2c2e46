"""Launching a real run: ``mpiexec -n N python -m executor.rank_main SPEC`` (MPICH from the ``mpich``
wheel, or any MPI on PATH), Slurm's ``srun``, or a single rank without any launcher.

Multi-host use
--------------
- MPICH/hydra with a host file: ``perfmodel run CONFIG --ranks 16 --hostfile hosts.txt`` where
  ``hosts.txt`` has lines ``host1:8`` (host name, slots). Every host needs the same Python environment at
  the same path (e.g. a shared file system) and password-less ssh; hydra starts the ranks.
- Slurm: inside an allocation (``salloc -N 2 --ntasks-per-node 8``), ``perfmodel run CONFIG --ranks 16
  --launcher srun`` runs ``srun -n 16 python -m executor.rank_main SPEC``; the MPI library must be built
  with Slurm/PMI support (the ``mpich`` wheel's hydra is used through ``--launcher mpiexec`` otherwise).

Emulated cluster
----------------
With the system ``emulated`` (``perfmodel cluster up``; :mod:`executor.cluster`), the launcher is
``emulated``: ``mpiexec`` runs inside the first host's network namespace and starts the other hosts' ranks
in theirs (:func:`executor.cluster.hydra.mpiexec_command`), MPICH over TCP (ofi netmod) and gloo on the
emulated interface; ranks are spread one per host (``--ranks-per-node`` or ``--nodes`` place them
otherwise), and every rank gets ``cores / ranks`` cores, since all "hosts" share this machine's CPU.

Faults: the launcher never hangs. A rank that raises prints ``rank R: <error>`` and aborts the job
(:func:`executor.mpi_utils.run_guarded`); a rank that dies is detected by the MPI launcher, which tears
the job down, and this module names the rank from the PID file each rank writes at start; a job that
outlives ``timeout_s`` is killed with its whole process group. Each case raises :class:`RunFailed`
with one line naming the rank and the reason. The measurement is written atomically by rank 0, so an
interrupted run leaves no half-written file.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hardware.errors import ConfigError, ToolkitError
from perfmodel.config import RunConfig

__all__ = ["RunFailed", "find_mpiexec", "launch", "cores_per_rank"]


class RunFailed(ToolkitError):
    """A real run failed: a rank raised or died, or the job timed out."""


def find_mpiexec() -> str:
    """``mpiexec`` next to this Python (the ``mpich`` wheel installs it there), else the one on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    if here.exists():
        return str(here)
    found = shutil.which("mpiexec")
    if not found:
        raise ConfigError("--launcher", "launcher", "mpiexec",
                          "no mpiexec found (pip install mpich, or put an MPI on PATH)")
    return found


def cores_per_rank(ranks_on_host: int) -> int:
    """CPU cores each rank gets when ``ranks_on_host`` ranks share this host (at least one)."""
    return max(1, (os.cpu_count() or 1) // max(1, ranks_on_host))


def _command(launcher: str, ranks: int, spec: str, hostfile: str | None, ranks_per_node: int | None) -> list[str]:
    prog = [sys.executable, "-m", "executor.rank_main", spec]
    if launcher == "none":
        if ranks != 1:
            raise ConfigError("--launcher", "launcher", launcher, f"runs one rank only, not {ranks}")
        return prog
    if launcher == "srun":
        if not shutil.which("srun"):
            raise ConfigError("--launcher", "launcher", launcher, "srun not found (not inside a Slurm installation)")
        return ["srun", "-n", str(ranks), *prog]
    if launcher == "mpiexec":
        cmd = [find_mpiexec(), "-n", str(ranks)]
        if hostfile:
            if not os.path.isfile(hostfile):
                raise ConfigError("--hostfile", "hostfile", hostfile, "no such file")
            cmd += ["-f", hostfile]
            if ranks_per_node:
                cmd += ["-ppn", str(ranks_per_node)]
        return cmd + prog
    raise ConfigError("--launcher", "launcher", launcher, "must be mpiexec, srun or none")


def _is_emulated(system: str | None) -> bool:
    """Whether ``system`` names the emulated cluster (``executor.cluster``; no cluster needed to ask)."""
    from executor.cluster.hydra import is_emulated_system
    return is_emulated_system(system)


def _rank_pids(run_dir: Path) -> dict[int, int]:
    """``{pid: rank}`` from the PID files the ranks write at start (``run_dir/pids/rank-R.pid``)."""
    pids = {}
    for f in (run_dir / "pids").glob("rank-*.pid"):
        try:
            pids[int(f.read_text().strip())] = int(f.stem.split("-")[1])
        except ValueError:
            continue
    return pids


class _DeathWatch:
    """Waits for the job while noting which local rank died first (Linux pidfds: woken at each death).

    When a rank is killed (SIGKILL leaves no report of its own), hydra stops the others at once, and its
    banner sometimes names one of those instead. The rank seen dead *alone*, before any other, is the one
    that failed. Only for launchers whose ranks run on this machine (their PIDs, from the ranks' PID files,
    are local). A rank that leaves ``pids/rank-R.done`` exited cleanly and is not a death.
    """

    def __init__(self, run_dir: Path, ranks: int):
        self.run_dir, self.ranks = run_dir, ranks
        self.fds: dict[int, tuple[int, int]] = {}     # pidfd -> (rank, pid)
        self.seen: set[int] = set()                   # ranks whose PID was taken up
        self.first: tuple[int, int] | None = None     # (rank, pid); None where none, or several at once
        self.decided = False

    def _dead(self, batch: list[tuple[int, int]]) -> None:
        batch = [(r, p) for r, p in batch if not (self.run_dir / "pids" / f"rank-{r}.done").exists()]
        if batch and not self.decided:
            self.first, self.decided = (batch[0] if len(batch) == 1 else None), True

    def wait(self, proc: subprocess.Popen, timeout_s: float) -> int:
        """``proc.wait`` with a deadline (raises ``subprocess.TimeoutExpired``), watching the ranks. Where
        pidfds are not permitted (old kernel, sandbox), a plain ``proc.wait`` without the watch."""
        import select

        deadline = time.monotonic() + timeout_s
        try:
            own = os.pidfd_open(proc.pid)
        except OSError:
            return proc.wait(timeout=timeout_s)
        poller = select.poll()
        poller.register(own, select.POLLIN)
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(proc.args, timeout_s)
                wait = left if len(self.seen) == self.ranks else min(left, 0.1)
                ready = {fd for fd, _ in poller.poll(wait * 1000.0)}
                died = [fd for fd in ready if fd in self.fds]
                batch = [self.fds[fd] for fd in died]
                for fd in died:
                    poller.unregister(fd)
                    os.close(fd)
                    del self.fds[fd]
                if len(self.seen) < self.ranks:   # ranks that wrote their PID file since; found dead: same batch
                    for pid, rank in _rank_pids(self.run_dir).items():
                        if rank in self.seen:
                            continue
                        self.seen.add(rank)
                        try:
                            fd = os.pidfd_open(pid)
                        except ProcessLookupError:
                            batch.append((rank, pid))
                            continue
                        except OSError:
                            continue   # not watchable (e.g. out of descriptors): that rank is not watched
                        self.fds[fd] = (rank, pid)
                        poller.register(fd, select.POLLIN)
                self._dead(batch)
                if own in ready:
                    return proc.wait()
        finally:
            os.close(own)
            for fd in self.fds:
                os.close(fd)
            self.fds.clear()


def _kill_job(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher's whole process group (it was started in a session of its own) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _diagnose(run_dir: Path, stderr: str, returncode: int, first_dead: tuple[int, int] | None = None) -> str:
    """One line naming the failing rank and the reason: from the ranks' own reports, else the rank seen
    to die first (``first_dead``: rank, pid), else hydra's banner and the ranks' PID files."""
    for f in sorted((run_dir / "errors").glob("rank-*.txt")):   # written by the failing rank itself
        line = f.read_text(errors="replace").strip()
        m = re.match(r"^rank (\d+): (.+)$", line)
        if m:
            return f"rank {m.group(1)} failed: {m.group(2).strip()}"
    m = re.search(r"^rank (\d+): (.+)$", stderr, flags=re.MULTILINE)
    if m:
        return f"rank {m.group(1)} failed: {m.group(2).strip()}"
    pids = _rank_pids(run_dir)
    m = re.search(r"PID (\d+) RUNNING AT (\S+)\s*\n=\s*EXIT CODE: (\d+)", stderr)
    sig = re.search(r"terminated with the exit string: (.+)", stderr, flags=re.IGNORECASE)
    if first_dead is not None and (not m or pids.get(int(m.group(1))) != first_dead[0]):
        rank, pid = first_dead
        why = sig.group(1).strip() if sig else (f"exit code {m.group(3)}" if m else f"exit code {returncode}")
        return f"rank {rank} (pid {pid}) died first, the others were stopped after it; the launcher says: {why}"
    if m:
        rank = pids.get(int(m.group(1)))
        who = f"rank {rank}" if rank is not None else f"process {m.group(1)}"
        why = sig.group(1).strip() if sig else f"exit code {m.group(3)}"
        return f"{who} (pid {m.group(1)} on {m.group(2)}) died: {why}"
    if returncode < 0:
        return f"the launcher was killed by signal {-returncode}"
    tail = [ln for ln in stderr.strip().splitlines() if ln.strip()][-1:] or ["no error output"]
    return f"exit code {returncode}: {tail[0][:300]}"


def launch(cfg: RunConfig, ranks: int, *, iterations: int | None = None, warmup_iterations: int | None = None,
           out: str | None = None, trace_dir: str | None = None, backend: str = "mpi",
           launcher: str | None = None, hostfile: str | None = None, timeout_s: float = 900.0,
           extra: dict[str, Any] | None = None, keep_run_dir: bool = False,
           run_dir: str | None = None) -> dict[str, Any]:
    """Run ``cfg`` for real on ``ranks`` ranks and return the measurement (also written to ``out``).

    Parameters
    ----------
    cfg : RunConfig
        The configuration (the same one ``predict`` takes).
    ranks : int
        Number of ranks (processes).
    iterations, warmup_iterations : int, optional
        Measured and warm-up iterations (default: the config's ``run`` section).
    out : str, optional
        Measurement file (JSON, written atomically by rank 0).
    trace_dir : str, optional
        Folder for one Chrome trace per rank.
    backend : str
        ``"mpi"`` (mpi4py, the toolkit's explicit algorithms or MPI's own) or ``"torch"``
        (torch.distributed: gloo on CPU, nccl on GPU).
    launcher : str, optional
        ``"mpiexec"`` (default for several ranks), ``"srun"``, ``"none"`` (default for one rank) or
        ``"emulated"`` (default when ``cfg.system`` is the emulated cluster's).
    timeout_s : float
        The whole job is killed after this many seconds.
    extra : dict, optional
        Further options for the rank program (e.g. ``until_top1``, ``max_epochs`` for time-to-accuracy).
    run_dir : str, optional
        Working folder of the job (spec, logs, one PID file per rank); default: a new temporary folder,
        removed after a successful run (a failed run keeps it: the error names it for its logs).
    """
    if not isinstance(ranks, int) or ranks < 1:
        raise ConfigError("--ranks", "ranks", ranks, "must be an integer >= 1")
    if cfg.batch % ranks:
        raise ConfigError(cfg.source, "training.batch", cfg.batch, f"global batch is not divisible by {ranks} ranks")
    if backend not in ("mpi", "torch"):
        raise ConfigError("--backend", "backend", backend, "must be 'mpi' or 'torch'")
    if cfg.dataset is None:  # the model's own dataset, as predict resolves it
        from perfmodel.workload import load_workload
        cfg = cfg.replace(dataset=load_workload(cfg.model).dataset)
    if launcher is None and _is_emulated(cfg.system):
        launcher = "emulated"
    launcher = launcher or ("none" if ranks == 1 and not hostfile else "mpiexec")
    made_run_dir = not run_dir
    run_dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="ttt-run-"))
    (run_dir / "pids").mkdir(parents=True, exist_ok=True)
    result_path = out or str(run_dir / "measurement.json")
    spec = {
        "config": cfg.to_dict(), "source": cfg.source, "ranks": ranks,
        "iterations": iterations or cfg.iterations,
        "warmup_iterations": cfg.warmup_iterations if warmup_iterations is None else warmup_iterations,
        "out": os.path.abspath(result_path), "trace_dir": os.path.abspath(trace_dir) if trace_dir else None,
        "backend": backend, "run_dir": str(run_dir), "launcher": launcher,
        "cores_per_rank": cores_per_rank(ranks if launcher == "emulated" or not hostfile
                                         else (cfg.ranks_per_node or ranks)),
        **(extra or {}),
    }
    spec_path = run_dir / "spec.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    if launcher == "emulated":
        from executor.cluster.hydra import mpiexec_command
        cmd, cluster_env = mpiexec_command([sys.executable, "-m", "executor.rank_main", str(spec_path)], ranks,
                                           run_dir, ranks_per_node=cfg.ranks_per_node, nodes=cfg.nodes)
        env.update(cluster_env)
    else:
        cmd = _command(launcher, ranks, str(spec_path), hostfile, cfg.ranks_per_node)
    env.setdefault("OMP_NUM_THREADS", str(spec["cores_per_rank"]))
    env["PYTHONUNBUFFERED"] = "1"
    env["TTT_RUN_DIR"] = str(run_dir)  # a failing rank leaves its one-line reason in run_dir/errors
    err_path, out_path = run_dir / "stderr.txt", run_dir / "stdout.txt"
    start = time.monotonic()
    with open(err_path, "w") as err, open(out_path, "w") as sout:
        proc = subprocess.Popen(cmd, stdout=sout, stderr=err, env=env, start_new_session=True)
        local = launcher in ("mpiexec", "emulated") and not hostfile and ranks > 1 and hasattr(os, "pidfd_open")
        watch = _DeathWatch(run_dir, ranks) if local else None
        try:
            rc = watch.wait(proc, timeout_s) if watch else proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_job(proc)
            raise RunFailed(f"run timed out after {timeout_s:g} s and was killed ({ranks} ranks; "
                            f"logs in {run_dir})") from None
        except BaseException:   # KeyboardInterrupt, or an unexpected error while waiting: never leave the job
            _kill_job(proc)
            raise
    # hydra prints its "BAD TERMINATION" banner on stdout; the ranks' own reports go to stderr
    stderr = err_path.read_text(errors="replace") + "\n" + out_path.read_text(errors="replace")
    if rc != 0:
        why = _diagnose(run_dir, stderr, rc, watch.first if watch else None)
        raise RunFailed(f"run failed after {time.monotonic() - start:.1f} s: {why} (logs in {run_dir})")
    try:
        with open(result_path, encoding="utf-8") as fh:
            result = json.load(fh)
    except (OSError, ValueError) as exc:
        raise RunFailed(f"run ended without a measurement ({exc}); logs in {run_dir}") from None
    if not keep_run_dir and (out or made_run_dir):  # a failed run keeps its folder: the error names it
        shutil.rmtree(run_dir, ignore_errors=True)
    return result
