"""Toolkit exceptions.

Every input problem raises a :class:`ToolkitError` whose message is one line naming the source (file or
flag), the field and the offending value. The command line prints that line and exits non-zero; it never
shows a traceback for bad input.
"""
from __future__ import annotations

__all__ = ["ToolkitError", "SpecError", "ConfigError", "InfeasibleError"]


class ToolkitError(Exception):
    """Base class of every error the toolkit raises on purpose (bad input, infeasible configuration)."""


class SpecError(ToolkitError):
    """A hardware spec or data file is malformed.

    Parameters
    ----------
    source : str
        File path (or catalog id) the value came from.
    field : str
        Dotted key of the offending field, e.g. ``network.link_Gbps``.
    value : object
        The offending value (``None`` for a missing field).
    reason : str
        What is wrong, e.g. ``"must be > 0"``.
    """

    def __init__(self, source: str, field: str, value: object, reason: str):
        self.source, self.field, self.value, self.reason = str(source), field, value, reason
        shown = "<missing>" if value is None else repr(value)
        super().__init__(f"{self.source}: field '{field}' = {shown}: {reason}")


class ConfigError(SpecError):
    """A run configuration (TOML file or command-line flag) is invalid."""


class InfeasibleError(ToolkitError):
    """A valid configuration that cannot run (does not fit in memory, more nodes than the system has...)."""
