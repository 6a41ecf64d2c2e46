"""Running MPI jobs across the emulated cluster: which hosts, the ``mpiexec`` command and its environment.

How ranks get into the namespaces
---------------------------------
``mpiexec`` (MPICH's hydra) itself runs inside the namespace of the first host used
(``ip netns exec <prefix>h0 mpiexec ...``). Its host file names the hosts by their addresses
(``10.77.0.<i+1>:<ranks per host>``) and ``-launcher rsh -launcher-exec <state>/hydra-rsh.sh`` starts the
proxy of every other host through a script that maps the address to the namespace and runs the proxy
there (``ip netns exec <ns> sh -c "<proxy command>"``, as rsh would on a real host); hydra forks the proxy
of its own host directly. The proxies connect back to hydra over the emulated network, and hydra tells
each rank which host (node) it is on, so ranks on different emulated hosts are on different MPI nodes.

Transport
---------
``MPIR_CVAR_CH4_NETMOD=ofi`` with ``FI_PROVIDER=tcp`` and ``FI_TCP_IFACE=ttt0``: MPICH's libfabric netmod
over TCP on the emulated interface. Ranks on different hosts have no shared memory path (MPICH uses shared
memory only between ranks that hydra placed on the same host); ranks on the same emulated host share
memory, as on a real node. (The ``mpich`` wheel's default netmod, UCX, finds the other "hosts" on the same
machine and moves data through shared memory, bypassing the network: hence ofi.) torch.distributed
(gloo) uses ``GLOO_SOCKET_IFNAME=ttt0`` and ``MASTER_ADDR`` = the first host's address.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from executor.cluster.netns import ClusterError
from executor.cluster.plan import HOST_IFACE
from executor.cluster.state import load_state, state_dir
from hardware.errors import ConfigError, InfeasibleError

__all__ = ["EMULATED_ID", "TRANSPORT_ENV", "LAUNCHER_SCRIPT", "require_cluster", "is_emulated_system",
           "placement", "hostfile_lines", "mpiexec_command", "launcher_script_text", "switch_alive"]

#: the system id ``cluster up`` registers
EMULATED_ID = "emulated"
#: environment of every rank on the emulated cluster (``MASTER_ADDR`` is added per job)
TRANSPORT_ENV: dict[str, str] = {
    "MPIR_CVAR_CH4_NETMOD": "ofi",
    "FI_PROVIDER": "tcp",
    "FI_TCP_IFACE": HOST_IFACE,
    "GLOO_SOCKET_IFNAME": HOST_IFACE,
    "TP_SOCKET_IFNAME": HOST_IFACE,
}
#: file name of the hydra launcher script in the state folder
LAUNCHER_SCRIPT = "hydra-rsh.sh"


def switch_alive(state: dict[str, Any]) -> bool:
    """Whether the userspace switch recorded in ``state`` still runs (True for the kernel engine)."""
    sw = state.get("switch")
    if not sw:
        return True
    from executor.cluster.manage import process_matches

    return process_matches(int(sw["pid"]), sw.get("starttime"), "executor.cluster.switch")


def require_cluster() -> dict[str, Any]:
    """The state of the running emulated cluster; ClusterError (one line) when none is up or it is broken."""
    state = load_state()
    if state is None:
        raise ClusterError("no emulated cluster is up: start one with 'perfmodel cluster up --hosts N "
                           "--link-gbps X --latency-us Y'")
    if "corrupt" in state:
        raise ClusterError(f"the emulated cluster's state is unreadable ({state['corrupt']}); "
                           "run 'perfmodel cluster down'")
    if state.get("status") != "up":
        raise ClusterError("the emulated cluster is not completely up (status "
                           f"'{state.get('status')}'); run 'perfmodel cluster down' and 'up' again")
    if not switch_alive(state):
        raise ClusterError(f"the emulated cluster's switch (pid {state['switch']['pid']}) is not running; run "
                           "'perfmodel cluster down' and 'up' again")
    return state


def is_emulated_system(system: Any) -> bool:
    """Whether ``system`` (a system id or spec path, as in ``--system``) names the emulated cluster's spec."""
    if system is None:
        return False
    s = str(system)
    if s == EMULATED_ID:
        return True
    if not (s.endswith(".toml") or os.sep in s):
        return False
    state = load_state()
    spec = (state or {}).get("spec", {}).get("system_file")
    try:
        return bool(spec) and Path(s).expanduser().resolve() == Path(spec).resolve()
    except OSError:
        return False


def placement(ranks: int, hosts_up: int, *, ranks_per_node: int | None = None,
              nodes: int | None = None) -> tuple[int, int]:
    """``(hosts, ranks_per_host)`` for ``ranks`` ranks on a cluster of ``hosts_up`` hosts.

    ``ranks_per_node`` fixes the ranks per host; else ``nodes > 1`` fixes the hosts; else the ranks are
    spread one per host while there are enough hosts, and evenly over all hosts beyond that. Block
    placement: ranks ``0..k-1`` on the first host, and so on (as :func:`perfmodel.network.rank_endpoints`).
    """
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
        raise ConfigError("--ranks", "ranks", ranks, "must be an integer >= 1")
    if ranks_per_node:
        if ranks % ranks_per_node:
            raise ConfigError("--ranks-per-node", "ranks_per_node", ranks_per_node,
                              f"does not divide the {ranks} ranks")
        n, rph = ranks // ranks_per_node, int(ranks_per_node)
    elif nodes and nodes > 1:
        if ranks % nodes:
            raise ConfigError("--nodes", "nodes", nodes, f"does not divide the {ranks} ranks")
        n, rph = int(nodes), ranks // nodes
    else:
        n = min(ranks, hosts_up)
        if ranks % n:
            raise ConfigError("--ranks", "ranks", ranks, f"cannot be spread evenly over the emulated cluster's "
                              f"{hosts_up} hosts (give --ranks-per-node)")
        rph = ranks // n
    if n > hosts_up:
        raise InfeasibleError(f"{n} hosts needed for {ranks} ranks ({rph} per host), but the emulated cluster has "
                              f"{hosts_up}")
    return n, rph


def hostfile_lines(state: dict[str, Any], hosts: Sequence[int], ranks_per_host: int) -> list[str]:
    """Hydra host-file lines ``<address>:<slots>`` of the given host indices."""
    return [f"{state['hosts'][i]['ip']}:{ranks_per_host}" for i in hosts]


def launcher_script_text(hosts: Sequence[dict[str, Any]], ip_tool: str) -> str:
    """The ``-launcher-exec`` script: ``script HOST COMMAND...`` runs COMMAND in HOST's namespace."""
    cases = "\n".join(f"  {h['ip']}) ns='{h['netns']}' ;;" for h in hosts)
    return f"""#!/bin/sh
# hydra launcher of the emulated cluster (written by 'perfmodel cluster up'; see executor/cluster/hydra.py):
# called by mpiexec as '<this script> HOST PROXY-COMMAND...', like rsh; runs the command in HOST's namespace.
host="$1"; shift
case "$host" in
{cases}
  *) echo "emulated cluster: unknown host '$host'" >&2; exit 1 ;;
esac
exec {ip_tool} netns exec "$ns" /bin/sh -c "$*"
"""


def mpiexec_command(prog: Sequence[str], ranks: int, run_dir: str | os.PathLike, *,
                    hosts: Sequence[int] | None = None, ranks_per_host: int | None = None,
                    ranks_per_node: int | None = None, nodes: int | None = None,
                    state: dict[str, Any] | None = None) -> tuple[list[str], dict[str, str]]:
    """Command and extra environment that run ``prog`` as ``ranks`` MPI ranks across the emulated cluster.

    Parameters
    ----------
    prog : sequence of str
        The program of every rank (``[python, -m, executor.rank_main, SPEC]``).
    ranks : int
    run_dir : path
        Folder for the job's host file.
    hosts : sequence of int, optional
        Host indices to use, in rank order (default: :func:`placement`'s first hosts).
    ranks_per_host : int, optional
        With ``hosts``: ranks per host (default ``ranks / len(hosts)``).
    ranks_per_node, nodes : int, optional
        Placement options (see :func:`placement`), when ``hosts`` is not given.
    state : dict, optional
        The cluster state (default: :func:`require_cluster`).

    Returns
    -------
    (list of str, dict)
        The command (``ip netns exec <first host> mpiexec -launcher rsh -launcher-exec ... -f HOSTFILE -n
        ranks PROG``) and the variables to add to the job's environment.
    """
    from executor.cluster.netns import tool
    from executor.launch import find_mpiexec

    state = require_cluster() if state is None else state
    n_up = len(state["hosts"])
    if hosts is None:
        n, rph = placement(ranks, n_up, ranks_per_node=ranks_per_node, nodes=nodes)
        hosts = list(range(n))
    else:
        hosts = [int(h) for h in hosts]
        if not hosts or any(not 0 <= h < n_up for h in hosts):
            raise ConfigError("emulated cluster", "hosts", hosts, f"host indices must be in 0..{n_up - 1}")
        rph = ranks_per_host or ranks // len(hosts)
        if rph * len(hosts) != ranks:
            raise ConfigError("emulated cluster", "ranks", ranks, f"is not {len(hosts)} hosts x {rph} ranks")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    hostfile = run_dir / "emulated-hosts.txt"
    hostfile.write_text("\n".join(hostfile_lines(state, hosts, rph)) + "\n")
    script = Path(state.get("launcher_script") or state_dir() / LAUNCHER_SCRIPT)
    first = state["hosts"][hosts[0]]
    cmd = [tool("ip"), "netns", "exec", first["netns"], find_mpiexec(), "-launcher", "rsh", "-launcher-exec",
           str(script), "-f", str(hostfile), "-n", str(ranks), *prog]
    env = dict(TRANSPORT_ENV)
    env["MASTER_ADDR"] = first["ip"]
    return cmd, env
