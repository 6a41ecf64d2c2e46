"""Thin wrappers over ``ip`` and ``tc`` (iproute2) for the emulated cluster: run a command and raise one clear
line on failure, list and test namespaces, check privileges, and probe what the kernel offers.

Nothing here creates anything by itself; :mod:`executor.cluster.manage` decides what to create and records
it in the state file before it does.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from typing import Sequence

from hardware.errors import ToolkitError

__all__ = ["ClusterError", "PrivilegeError", "run", "tool", "list_netns", "netns_exists", "effective_capabilities",
           "missing_privileges", "check_privileges", "netem_available", "write_sysctl", "NEEDED_CAPS"]


class ClusterError(ToolkitError):
    """The emulated cluster cannot be created, used or removed (one line: what and why)."""


class PrivilegeError(ClusterError):
    """This process lacks the privileges to create namespaces, links and qdiscs."""


#: capabilities needed, by bit number (linux/capability.h)
NEEDED_CAPS: dict[str, int] = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21}


def tool(name: str) -> str:
    """Absolute path of an iproute2 tool (``ip``, ``tc``), or ClusterError naming the missing tool."""
    for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    found = shutil.which(name)
    if not found:
        raise ClusterError(f"'{name}' (iproute2) not found: install iproute2 to use the emulated cluster")
    return found


def run(args: Sequence[str], *, check: bool = True, timeout: float = 30.0, what: str | None = None) -> str:
    """Run a command (``args[0]`` is ``ip`` or ``tc``: resolved with :func:`tool`); return its stdout.

    Raises
    ------
    ClusterError
        Non-zero exit (with ``check``): ``<what>: <command> failed: <stderr's first line>``.
    """
    cmd = list(args)
    if cmd and cmd[0] in ("ip", "tc"):
        cmd[0] = tool(cmd[0])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"{what or 'command'}: {' '.join(args)} timed out after {timeout:g} s") from None
    if check and proc.returncode != 0:
        msg = (proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}").splitlines()[0]
        raise ClusterError(f"{what or 'command'}: '{' '.join(args)}' failed: {msg}")
    return proc.stdout


def list_netns() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    out = run(["ip", "netns", "list"], what="list namespaces")
    return [ln.split()[0] for ln in out.splitlines() if ln.strip()]


def netns_exists(name: str) -> bool:
    """Whether the named namespace exists."""
    return os.path.exists(f"/run/netns/{name}") or name in list_netns()


def effective_capabilities() -> int:
    """Bit mask of this process's effective capabilities (``CapEff`` of ``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def missing_privileges() -> list[str]:
    """What this process lacks to build the cluster: capability names and missing tools/devices."""
    caps = effective_capabilities()
    missing = [name for name, bit in NEEDED_CAPS.items() if not caps >> bit & 1]
    for t in ("ip", "tc"):
        try:
            tool(t)
        except ClusterError:
            missing.append(f"the '{t}' command (iproute2)")
    return missing


def check_privileges() -> None:
    """Raise :class:`PrivilegeError` (one clear line) unless namespaces, links and qdiscs can be created."""
    missing = missing_privileges()
    if missing:
        raise PrivilegeError("the emulated cluster needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN, to create network "
                             f"namespaces, links and traffic shaping); missing: {', '.join(missing)}. "
                             "Run as root, e.g. 'sudo perfmodel cluster up ...'")


def netem_available(netns: str) -> bool:
    """Whether the kernel has the ``netem`` qdisc: add one to the loopback of ``netns`` (a namespace this
    package created) and remove it again."""
    proc = subprocess.run([tool("tc"), "-n", netns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1us"],
                          capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        return False
    run(["tc", "-n", netns, "qdisc", "del", "dev", "lo", "root"], check=False)
    return True


def write_sysctl(netns: str, key: str, value: str) -> bool:
    """Set a per-namespace sysctl (``net.ipv4.tcp_slow_start_after_idle``) inside ``netns``; False when the
    key does not exist there."""
    path = "/proc/sys/" + key.replace(".", "/")
    proc = subprocess.run([tool("ip"), "netns", "exec", netns, "sh", "-c", f"test -e {path} && echo {shlex.quote(value)} > {path}"],
                          capture_output=True, text=True, timeout=10)
    return proc.returncode == 0
