"""Discrete-event simulation of data-parallel training (simpy): the engine (:mod:`.engine`), the flow-level
network with max-min fair link sharing (:mod:`.flows`), compute variability (:mod:`.variability`) and Chrome
trace output (:mod:`.trace`). The public entry point is :func:`perfmodel.simulate.simulate`.
"""
from __future__ import annotations

from perfmodel.sim.flows import CollectivePlan, FlowNetwork, collective_plan, max_min_rates, slowest_flow_gap
from perfmodel.sim.trace import TraceWriter
from perfmodel.sim.variability import DISTRIBUTIONS, NO_VARIABILITY, Variability

__all__ = ["CollectivePlan", "FlowNetwork", "collective_plan", "max_min_rates", "slowest_flow_gap", "TraceWriter",
           "DISTRIBUTIONS", "NO_VARIABILITY", "Variability"]
