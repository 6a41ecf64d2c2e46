"""The flat algorithms that the two-level algorithms (hierarchical, 2D torus) can run inside one phase.

Internal module: a name -> instance map independent of the package registry (avoids an import cycle).
"""
from __future__ import annotations

from hardware.errors import ConfigError

from .base import FlatAlgorithm
from .halving_doubling import HalvingDoubling
from .recursive_doubling import RecursiveDoubling
from .ring import Ring
from .tree import BinaryTree, DoubleBinaryTree

__all__ = ["FLAT_ALGORITHMS", "get_flat"]

FLAT_ALGORITHMS: dict[str, FlatAlgorithm] = {
    a.name: a for a in (Ring(), RecursiveDoubling(), HalvingDoubling(), BinaryTree(), DoubleBinaryTree())
}


def get_flat(name: str | FlatAlgorithm, source: str, field: str) -> FlatAlgorithm:
    """Return the flat algorithm ``name`` (or ``name`` itself if it is one); ConfigError otherwise."""
    if isinstance(name, FlatAlgorithm):
        return name
    try:
        return FLAT_ALGORITHMS[name]
    except (KeyError, TypeError):
        raise ConfigError(source, field, name,
                          f"unknown flat algorithm; known: {', '.join(FLAT_ALGORITHMS)}") from None
