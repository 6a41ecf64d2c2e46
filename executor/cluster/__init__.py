"""The emulated cluster: hosts as network namespaces on this machine, joined by links of a set rate and
delay, so that the executor runs across "hosts" over real TCP and the network models can be validated.

    perfmodel cluster up --hosts 4 --link-gbps 1 --latency-us 100 [--topology two-level --hosts-per-switch 2
                         --uplink-gbps 1]
    perfmodel run ... --system emulated --ranks 4       perfmodel bench allreduce --system emulated --ranks 4
    perfmodel cluster down

Modules: :mod:`~executor.cluster.plan` (what the options mean; hosts, links, paths),
:mod:`~executor.cluster.manage` (up, down, status), :mod:`~executor.cluster.switch` (the userspace switch),
:mod:`~executor.cluster.hydra` (running MPI jobs in the namespaces), :mod:`~executor.cluster.measure`
(link calibration), :mod:`~executor.cluster.spec` (the ``emulated`` system spec),
:mod:`~executor.cluster.probe` (ping and TCP probes), :mod:`~executor.cluster.netns` (iproute2 helpers,
privileges), :mod:`~executor.cluster.state` (the state file). Nothing here imports torch or mpi4py.
"""
from __future__ import annotations

from executor.cluster.hydra import (
           EMULATED_ID,
           is_emulated_system,
           mpiexec_command,
           placement,
           require_cluster,
)
from executor.cluster.manage import ENGINES, down, status, up
from executor.cluster.netns import ClusterError, PrivilegeError, check_privileges
from executor.cluster.plan import (
           HOST_IFACE,
           TOPOLOGIES,
           ClusterConfig,
           ClusterPlan,
           make_plan,
)
from executor.cluster.state import load_state, state_dir

__all__ = ["ClusterConfig", "ClusterPlan", "make_plan", "TOPOLOGIES", "HOST_IFACE", "ENGINES", "up", "down",
           "status", "ClusterError", "PrivilegeError", "check_privileges", "load_state", "state_dir", "EMULATED_ID",
           "is_emulated_system", "mpiexec_command", "placement", "require_cluster"]
