"""What machines are: device and system specs (data files loaded into frozen SI dataclasses) and network
topologies as networkx graphs with rank placement and path queries."""
from hardware.errors import ConfigError, InfeasibleError, SpecError, ToolkitError

__all__ = ["ToolkitError", "SpecError", "ConfigError", "InfeasibleError"]
