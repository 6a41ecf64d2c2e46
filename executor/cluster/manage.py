"""Bring the emulated cluster up and down, and report on it.

``up`` creates, in order, and records each object in the state file (:mod:`executor.cluster.state`) right
after creating it, so that ``down`` (or ``up``'s own roll-back on any failure) removes exactly what was made
and nothing else:

1. one network namespace per host (``<prefix>h<i>``), loopback up;
2. the links, by one of two engines:

   - ``netem`` (when the kernel has the ``netem`` qdisc): a switch namespace ``<prefix>sw`` with one Linux
     bridge per switch (``br<leaf>``, and ``brs`` for the spine), a veth pair per host (``ttt0`` in the host,
     ``h<i>`` on its leaf bridge) and per uplink (``ul<leaf>`` on the leaf, ``us<leaf>`` on the spine), and
     on every veth end ``tc qdisc ... root netem delay <d> rate <r> 24`` (per-packet serialisation at the
     line rate with 24 bytes of Ethernet overhead, then the delay; segmentation offload off, so packets are
     Ethernet-sized);
   - ``userspace`` (any kernel with TUN/TAP): a persistent TAP ``ttt0`` in every host and the switch process
     of :mod:`executor.cluster.switch`, which forwards frames between the TAPs with the same link model;

3. addresses ``10.77.0.<i+1>/24``, fixed MACs, static neighbour entries, IPv6 off on ``ttt0``, and TCP tuned
   as on an HPC cluster (no slow start after idle, buffers up to 64 MiB) with loss-based congestion control
   (``reno``: :data:`executor.cluster.plan.CONGESTION_CONTROL`);
4. a connectivity check (ICMP from host 0 to every host), the hydra launcher script, the link calibration
   (:mod:`executor.cluster.measure`, unless ``measure=False``) and the system spec ``emulated``
   (:mod:`executor.cluster.spec`) in the user's system registry (:func:`hardware.catalog.user_systems_dir`).

The namespaces have no interface but their own (``lo`` and ``ttt0``) and no route out, so no traffic of the
cluster can leave them. ``down`` stops the switch process, ends any process still inside the cluster's
namespaces (a hung rank), deletes the namespaces (which deletes their interfaces, bridges and qdiscs) and the
spec files, then the state file; without a recorded cluster it does nothing.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from executor.cluster import netns as nx
from executor.cluster.hydra import LAUNCHER_SCRIPT, launcher_script_text
from executor.cluster.netns import ClusterError
from executor.cluster.plan import CONGESTION_CONTROL, HOST_IFACE, ClusterConfig, ClusterPlan, make_plan
from executor.cluster.state import (
    clear_state_dir,
    load_state,
    save_state,
    state_dir,
    state_path,
)

__all__ = ["ENGINES", "SATURATION", "up", "down", "status", "process_matches", "process_starttime", "ROOT"]

#: link engines of ``cluster up --engine``
ENGINES: tuple[str, ...] = ("auto", "netem", "userspace")
#: below this fraction of the configured payload rate, the measured link counts as saturated (a warning)
SATURATION = 0.8
#: link calibrations at most at bring-up: an impossible one (executor.cluster.measure.link_problems) is
#: measured again
LINK_ATTEMPTS = 3
#: the repository root (put on PYTHONPATH of the processes started inside the namespaces)
ROOT = str(Path(__file__).resolve().parents[2])
_STATE_FILES = ["switch.json", "switch-stats.json", "switch.log", "switch.ready", LAUNCHER_SCRIPT]
_SYSCTLS = [("net.ipv4.tcp_congestion_control", CONGESTION_CONTROL), ("net.ipv4.tcp_slow_start_after_idle", "0"),
            ("net.ipv4.tcp_rmem", "4096 131072 67108864"),
            ("net.ipv4.tcp_wmem", "4096 65536 67108864"), ("net.core.rmem_max", "67108864"),
            ("net.core.wmem_max", "67108864"), (f"net.ipv6.conf.{HOST_IFACE}.disable_ipv6", "1"),
            ("net.ipv6.conf.all.disable_ipv6", "1"), ("net.ipv6.conf.default.disable_ipv6", "1")]

Progress = Callable[[str], None] | None


# ==========================================================================================================
# processes
# ==========================================================================================================
def process_starttime(pid: int) -> int | None:
    """Start time of ``pid`` (clock ticks since boot, ``/proc/<pid>/stat`` field 22); None when it does not
    exist or is a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] == "Z":
        return None
    return int(fields[19])


def process_matches(pid: int, starttime: int | None, needle: str) -> bool:
    """Whether ``pid`` is alive, started at ``starttime`` and has ``needle`` in its command line (so a
    recycled PID is never mistaken for ours)."""
    st = process_starttime(pid)
    if st is None or (starttime is not None and st != starttime):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return needle.encode() in fh.read()
    except OSError:
        return False


def _end_process(pid: int, grace_s: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; reaps it when it is our child."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        if process_starttime(pid) is None:
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _netns_pids(ns: str) -> list[int]:
    out = nx.run(["ip", "netns", "pids", ns], check=False, what="list processes")
    return [int(x) for x in out.split() if x.isdigit()]


# ==========================================================================================================
# up
# ==========================================================================================================
def _batch(ns: str | None, commands: list[str], what: str) -> None:
    """Run ``ip [-n ns] -batch -`` with ``commands`` (one per line)."""
    args = [nx.tool("ip")] + (["-n", ns] if ns else []) + ["-batch", "-"]
    proc = subprocess.run(args, input="\n".join(commands) + "\n", capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}").splitlines()[0]
        raise ClusterError(f"{what}: {msg}")


def _host_commands(plan: ClusterPlan, i: int, tap: bool) -> list[str]:
    h = plan.hosts[i]
    cmds = ["link set lo up"]
    if tap:
        cmds.append(f"tuntap add mode tap vnet_hdr name {HOST_IFACE}")
    cmds += [f"link set dev {HOST_IFACE} address {h.mac} mtu 1500",
             f"link set dev {HOST_IFACE} txqueuelen 10000",
             f"addr add {h.ip}/24 dev {HOST_IFACE}",
             f"link set dev {HOST_IFACE} up"]
    cmds += [f"neigh replace {o.ip} lladdr {o.mac} dev {HOST_IFACE} nud permanent" for o in plan.hosts if o.index != i]
    return cmds


def _sysctls(ns: str) -> None:
    script = "; ".join(f"p=/proc/sys/{k.replace('.', '/')}; [ -e $p ] && echo '{v}' > $p" for k, v in _SYSCTLS)
    subprocess.run([nx.tool("ip"), "netns", "exec", ns, "sh", "-c", script + "; true"], capture_output=True,
                   timeout=30)


def _read_sysctl(ns: str, key: str) -> str | None:
    """The value of ``key`` inside namespace ``ns`` (None when unreadable)."""
    proc = subprocess.run([nx.tool("ip"), "netns", "exec", ns, "cat", "/proc/sys/" + key.replace(".", "/")],
                          capture_output=True, text=True, timeout=30)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def _netem(ns: str, dev: str, rate_bps: float, delay_s: float) -> str:
    delay = f"delay {delay_s * 1e6:.3f}us " if delay_s > 0 else ""
    return f"qdisc replace dev {dev} root netem {delay}rate {int(rate_bps)}bit 24 limit 1000000"


def _make_netem_links(plan: ClusterPlan, state: dict[str, Any]) -> None:
    """Kernel engine: switch namespace, bridges, veth pairs, netem on every end (module docstring)."""
    sw = plan.switch_netns
    nx.run(["ip", "netns", "add", sw], what="create the switch namespace")
    state["namespaces"].append(sw)
    save_state(state)
    cfg = plan.config
    cmds = ["link set lo up"]
    bridges = [f"br{leaf}" for leaf in range(cfg.leaves)] + (["brs"] if cfg.topology == "two-level" else [])
    for br in bridges:
        cmds += [f"link add {br} type bridge", f"link set dev {br} up"]
    _batch(sw, cmds, "create the bridges")
    for h in plan.hosts:
        nx.run(["ip", "link", "add", HOST_IFACE, "netns", h.netns, "type", "veth", "peer", "name", f"h{h.index}",
                "netns", sw], what=f"create the link of host {h.index}")
    sw_cmds: list[str] = []
    tc_sw: list[str] = []
    for h in plan.hosts:
        port = f"h{h.index}"
        sw_cmds += [f"link set dev {port} master br{h.leaf}", f"link set dev {port} gso_max_segs 1",
                    f"link set dev {port} up"]
        down_link = plan.links[plan.link_index(f"l{h.leaf}>h{h.index}")]
        tc_sw.append(_netem(sw, port, down_link.rate_bps, down_link.delay_s))
        up_link = plan.links[plan.link_index(f"h{h.index}>l{h.leaf}")]
        _batch(h.netns, [f"link set dev {HOST_IFACE} gso_max_segs 1"], f"configure host {h.index}")
        nx.run(["tc", "-n", h.netns] + _netem(h.netns, HOST_IFACE, up_link.rate_bps, up_link.delay_s).split(),
               what=f"shape the link of host {h.index}")
    if cfg.topology == "two-level":
        for leaf in range(cfg.leaves):
            a, b = f"ul{leaf}", f"us{leaf}"
            sw_cmds += [f"link add {a} type veth peer name {b}", f"link set dev {a} master br{leaf}",
                        f"link set dev {b} master brs", f"link set dev {a} gso_max_segs 1",
                        f"link set dev {b} gso_max_segs 1", f"link set dev {a} up", f"link set dev {b} up"]
            upl, dnl = plan.links[plan.link_index(f"l{leaf}>s")], plan.links[plan.link_index(f"s>l{leaf}")]
            tc_sw += [_netem(sw, a, upl.rate_bps, upl.delay_s), _netem(sw, b, dnl.rate_bps, dnl.delay_s)]
    _batch(sw, sw_cmds, "attach the links to the bridges")
    for c in tc_sw:
        nx.run(["tc", "-n", sw] + c.split(), what="shape a switch port")


def _start_switch(plan: ClusterPlan, state: dict[str, Any]) -> None:
    """Userspace engine: start the switch daemon and wait until it has attached every TAP."""
    d = state_dir()
    conf = {"config": plan.config.to_dict(), "stats_file": str(d / "switch-stats.json"),
            "ready_file": str(d / "switch.ready"), "buffer_bytes": None}
    (d / "switch.json").write_text(json.dumps(conf))
    ready = d / "switch.ready"
    if ready.exists():
        ready.unlink()
    env = {**os.environ, "PYTHONPATH": ROOT + (os.pathsep + os.environ["PYTHONPATH"]
                                              if os.environ.get("PYTHONPATH") else "")}
    with open(d / "switch.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "executor.cluster.switch", str(d / "switch.json")], cwd=ROOT,
                                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    st = process_starttime(proc.pid)
    state["switch"] = {"pid": proc.pid, "starttime": st, "log": str(d / "switch.log"),
                       "stats_file": conf["stats_file"]}
    save_state(state)
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        if ready.exists():
            text = ready.read_text().strip()
            if text == "ok":
                return
            if text:
                raise ClusterError(f"the emulated switch could not start: {text}")
        if proc.poll() is not None:
            tail = (d / "switch.log").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise ClusterError(f"the emulated switch exited at start (code {proc.returncode}): {tail[0][:300]}")
        time.sleep(0.02)
    raise ClusterError("the emulated switch did not attach its interfaces within 20 s")


def _ping(src_ns: str, dst_ip: str, count: int = 3) -> list[float]:
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([nx.tool("ip"), "netns", "exec", src_ns, sys.executable, "-m", "executor.cluster.probe",
                           "ping", dst_ip, str(count), "0.01"], capture_output=True, text=True, timeout=60,
                          env=env, cwd=ROOT)
    if proc.returncode != 0:
        return []
    try:
        return list(json.loads(proc.stdout.strip().splitlines()[-1])["rtt_s"])
    except (ValueError, KeyError, IndexError):
        return []


def _missing_dirs(path: Path) -> list[str]:
    """``path`` and those of its ancestors that do not exist yet, outermost first (what creating it makes)."""
    out: list[str] = []
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        out.append(str(p))
        p = p.parent
    return out[::-1]


def up(cfg: ClusterConfig, *, base_system: str = "local", engine: str = "auto", measure: bool = True,
       progress: Progress = None) -> dict[str, Any]:
    """Create the emulated cluster of ``cfg`` and register its system spec (module docstring).

    Parameters
    ----------
    cfg : ClusterConfig
    base_system : str
        System whose device (and executor overheads) the hosts share (default ``local``: the calibrated
        spec when ``perfmodel calibrate`` has run).
    engine : {"auto", "netem", "userspace"}
        How links are made; ``auto``: netem when the kernel has it.
    measure : bool
        Measure the link (MPI latency and rate) for the spec; False: use the configured values.
    progress : callable, optional
        Receives one line per step.

    Returns
    -------
    dict
        The state (``status: "up"``): hosts, namespaces, engine, measured link, spec paths.

    Raises
    ------
    PrivilegeError
        Not root (CAP_NET_ADMIN, CAP_SYS_ADMIN) or iproute2 missing.
    ClusterError
        A cluster is already up, a namespace of that name exists, or a step failed (everything made so far
        is removed again).
    """
    say = progress or (lambda msg: None)
    if engine not in ENGINES:
        raise ClusterError(f"--engine: unknown engine '{engine}' (known: {', '.join(ENGINES)})")
    nx.check_privileges()
    old = load_state()
    if old is not None:
        if "corrupt" in old:
            raise ClusterError(f"a cluster state exists but is unreadable ({old['corrupt']}); run 'perfmodel "
                               "cluster down' first")
        c = old.get("config", {})
        raise ClusterError(f"an emulated cluster is already up ({c.get('hosts')} hosts, created "
                           f"{old.get('created', '?')}, state in {state_path()}); run 'perfmodel cluster down' first")
    plan = make_plan(cfg)
    existing = set(nx.list_netns())
    clash = [n for n in [*plan.namespaces, plan.switch_netns] if n in existing]
    if clash:
        raise ClusterError(f"namespace '{clash[0]}' exists but was not made by this cluster (no state recorded); "
                           f"remove it ('ip netns del {clash[0]}') if it is a leftover, or use another prefix")
    if engine == "userspace" and not os.path.exists("/dev/net/tun"):
        raise ClusterError("the userspace engine needs /dev/net/tun (TUN/TAP support)")
    from executor.cluster.spec import DEVICE_FILE
    from hardware.catalog import user_systems_dir

    made_dirs = _missing_dirs(state_dir()) + [d for d in _missing_dirs((user_systems_dir() / DEVICE_FILE).parent)]
    state: dict[str, Any] = {
        "version": 1, "status": "creating", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": cfg.to_dict(), "description": cfg.describe(), "engine": None, "namespaces": [], "files": [],
        "dirs": made_dirs, "switch": None,
        "hosts": [{"index": h.index, "netns": h.netns, "ip": h.ip, "mac": h.mac, "leaf": h.leaf, "iface": HOST_IFACE}
                  for h in plan.hosts],
    }
    save_state(state)
    try:
        _create(plan, state, base_system, engine, measure, say)
    except BaseException:
        say("bring-up failed: removing what was made")
        try:
            _teardown(state)
        except ClusterError:
            pass
        raise
    return state


def _create(plan: ClusterPlan, state: dict[str, Any], base_system: str, engine: str, measure: bool, say) -> None:
    from hardware.catalog import load_system, user_systems_dir

    load_system(base_system)   # fail early on a bad --base-system
    cfg = plan.config
    say(f"creating {cfg.hosts} host namespaces ({plan.hosts[0].netns} ...)")
    for h in plan.hosts:
        nx.run(["ip", "netns", "add", h.netns], what=f"create namespace {h.netns}")
        state["namespaces"].append(h.netns)
        save_state(state)
    if engine == "auto":
        engine = "netem" if nx.netem_available(plan.hosts[0].netns) else "userspace"
    elif engine == "netem" and not nx.netem_available(plan.hosts[0].netns):
        raise ClusterError("--engine netem: this kernel has no netem qdisc (sch_netem); use --engine userspace")
    state["engine"] = engine
    save_state(state)
    say(f"links: {engine} engine")
    for h in plan.hosts:
        if engine == "netem":
            _batch(h.netns, ["link set lo up"], f"configure host {h.index}")
        else:
            _batch(h.netns, _host_commands(plan, h.index, tap=True), f"configure host {h.index}")
        _sysctls(h.netns)
    state["tcp_congestion_control"] = _read_sysctl(plan.hosts[0].netns, "net.ipv4.tcp_congestion_control")
    save_state(state)
    if state["tcp_congestion_control"] != CONGESTION_CONTROL:
        state.setdefault("warnings", []).append(
            f"TCP congestion control in the hosts is {state['tcp_congestion_control']!r}, not {CONGESTION_CONTROL!r}: "
            "a collective step may cost what the connection's history makes it (executor.cluster.plan.CONGESTION_CONTROL)")
    if engine == "netem":
        _make_netem_links(plan, state)
        for h in plan.hosts:
            _batch(h.netns, _host_commands(plan, h.index, tap=False)[1:], f"address host {h.index}")
    else:
        _start_switch(plan, state)
    script = state_dir() / LAUNCHER_SCRIPT
    script.write_text(launcher_script_text(state["hosts"], nx.tool("ip")))
    script.chmod(0o755)
    state["launcher_script"] = str(script)
    say("checking connectivity")
    a, b = plan.farthest_pair()
    for h in plan.hosts[1:]:
        rtts = _ping(plan.hosts[0].netns, h.ip, 3 if h.index == b else 1)
        if not rtts:
            raise ClusterError(f"host {h.index} ({h.ip}) does not answer host 0: the emulated network is not working")
        if h.index == b:
            state["ping"] = {"hosts": [a, b], "rtt_s": rtts, "configured_rtt_s": 2 * plan.path_delay_s(a, b)}
    save_state(state)
    measured = None
    if measure and cfg.hosts >= 2:
        say(f"measuring the links (MPI exchanges on all {cfg.hosts} hosts; latency between hosts {a} and {b})")
        from executor.cluster.measure import link_problems, measure_link
        from executor.cluster.spec import TCP_PAYLOAD_FRACTION
        payload_Bps = cfg.link_gbps * 1e9 / 8 * TCP_PAYLOAD_FRACTION
        attempts: list[tuple[list[str], dict[str, Any]]] = []
        for attempt in range(LINK_ATTEMPTS):   # an impossible calibration is measured again
            try:
                doc = measure_link(state, a, b)
            except ClusterError as exc:
                raise ClusterError(f"{exc} (use --no-measure to register the configured values instead)") from None
            problems = link_problems(doc, payload_Bps)
            attempts.append((problems, doc))
            if not problems:
                break
            say(f"link calibration {attempt + 1}/{LINK_ATTEMPTS} is not consistent ({'; '.join(problems)})"
                + ("; measuring again" if attempt + 1 < LINK_ATTEMPTS else ""))
        problems, measured = min(attempts, key=lambda pd: len(pd[0]))   # the first with the fewest problems
        measured["attempts"] = len(attempts)
        if problems:
            measured["problems"] = problems
            state.setdefault("warnings", []).append(
                f"the link calibration stayed inconsistent after {len(attempts)} attempts ({'; '.join(problems)}): "
                "the spec records the attempt with the fewest problems")
        state["measured"] = measured
        if measured.get("rate_Bps") and measured["rate_Bps"] < SATURATION * payload_Bps:
            state.setdefault("warnings", []).append(
                f"the links carry {measured['rate_Bps'] * 8 / 1e9:.3g} Gbit/s of payload when every host exchanges, "
                f"{100 * measured['rate_Bps'] / payload_Bps:.0f} % of the {payload_Bps * 8 / 1e9:.3g} Gbit/s a "
                f"{cfg.link_gbps:g} Gbit/s link carries: this machine's CPU cannot emulate {cfg.hosts} hosts at that "
                "rate faithfully (the spec records the measured rate)")
    folder = user_systems_dir()
    from executor.cluster.spec import DEVICE_FILE, write_spec
    state["files"] = [str(folder / "emulated.toml"), str(folder / DEVICE_FILE)]
    save_state(state)
    say(f"registering the system spec 'emulated' in {folder}")
    state["spec"] = write_spec(folder, cfg, base_system, measured=measured, engine=engine)
    state["status"] = "up"
    save_state(state)


# ==========================================================================================================
# down, status
# ==========================================================================================================
def _teardown(state: dict[str, Any]) -> dict[str, Any]:
    """Remove everything ``state`` records (switch process, processes left in the namespaces, namespaces,
    files, then the state folder). Returns what was removed."""
    removed: dict[str, Any] = {"switch_pid": None, "namespaces": [], "files": [], "processes_ended": 0}
    sw = state.get("switch")
    if sw and process_matches(int(sw["pid"]), sw.get("starttime"), "executor.cluster.switch"):
        _end_process(int(sw["pid"]))
        removed["switch_pid"] = int(sw["pid"])
    existing = set(nx.list_netns())
    for ns in reversed(state.get("namespaces", [])):
        if ns not in existing:
            continue
        for pid in _netns_pids(ns):
            if pid != os.getpid():
                _end_process(pid, grace_s=2.0)
                removed["processes_ended"] += 1
        nx.run(["ip", "netns", "del", ns], check=False, what=f"delete namespace {ns}")
        removed["namespaces"].append(ns)
    for f in state.get("files", []):
        p = Path(f)
        if p.is_file():
            p.unlink()
            removed["files"].append(f)
    left = [ns for ns in state.get("namespaces", []) if ns in set(nx.list_netns())]
    if left:
        raise ClusterError(f"could not delete namespace(s) {', '.join(left)}; the state is kept in {state_path()}")
    clear_state_dir(_STATE_FILES)
    for d in reversed(state.get("dirs", [])):   # folders up made, innermost first, if they are empty
        try:
            Path(d).rmdir()
        except OSError:
            pass
    return removed


def down(progress: Progress = None) -> dict[str, Any]:
    """Remove the emulated cluster recorded in the state file, and only that.

    Returns
    -------
    dict
        ``removed`` (False when no cluster was recorded: a no-op), ``message``, and what was removed
        (``namespaces``, ``files``, ``switch_pid``, ``processes_ended``).
    """
    say = progress or (lambda msg: None)
    state = load_state()
    if state is None:
        return {"removed": False, "message": "no emulated cluster is up: nothing to remove"}
    nx.check_privileges()
    if "corrupt" in state:
        raise ClusterError(f"the cluster state is unreadable ({state['corrupt']}): nothing was removed; remove the "
                           "namespaces listed by 'ip netns list' that the cluster made, then that file")
    say(f"removing the emulated cluster ({state.get('description', '?')})")
    removed = _teardown(state)
    removed.update(removed=True, message=f"removed the emulated cluster: {len(removed['namespaces'])} namespaces, "
                                         f"{len(removed['files'])} spec files"
                                         + (", the switch process" if removed["switch_pid"] else ""))
    return removed


def status() -> dict[str, Any]:
    """The recorded state plus liveness: ``up`` (bool), ``switch_alive``, ``switch_stats`` and
    ``namespaces_present``; ``{"up": False}`` when no cluster is recorded."""
    state = load_state()
    if state is None:
        return {"up": False, "message": "no emulated cluster is up"}
    if "corrupt" in state:
        return {"up": False, "message": state["corrupt"]}
    out = dict(state)
    present = set(nx.list_netns()) if nx.missing_privileges() == [] else set()
    out["namespaces_present"] = [ns for ns in state.get("namespaces", []) if ns in present]
    sw = state.get("switch")
    if sw:
        out["switch_alive"] = process_matches(int(sw["pid"]), sw.get("starttime"), "executor.cluster.switch")
        try:
            out["switch_stats"] = json.loads(Path(sw["stats_file"]).read_text())
        except (OSError, ValueError):
            out["switch_stats"] = None
    out["up"] = state.get("status") == "up" and out.get("switch_alive", True) and \
        len(out["namespaces_present"]) == len(state.get("namespaces", []))
    return out
