"""Workload tables: per-layer compute, memory and gradient sizes of a network, loaded from cached JSON.

The tables are produced by :mod:`executor.workload_extract` (PyTorch on the meta device; regenerate them with
``python scripts/extract_workloads.py``) and stored in ``perfmodel/data/workloads/<model>.json``. This module
only reads them: it never imports torch, so every cost model can run without it.

File format (schema ``ttt-workload/1``; every number per image, fp32, FLOP and bytes)::

    {"schema": "ttt-workload/1", "model": "resnet50", "dataset": "imagenet", "input_shape": [3, 224, 224],
     "num_classes": 1000, "per": "image", "extracted_with": {"torch": "2.13.0"},
     "totals": {"params", "param_bytes", "flops_fwd", "flops_bwd_input", "flops_bwd_weight", "flops_bwd",
                "act_bytes", "mem_bytes_fwd", "mem_bytes_bwd"},
     "layers": [{"name", "type", "params", "param_bytes", "flops_fwd", "flops_bwd_input", "flops_bwd_weight",
                 "act_out_bytes", "mem_bytes_fwd", "mem_bytes_bwd", "grad_ready_index", "shape"}, ...]}

Layers are in forward order. ``grad_ready_index`` numbers the layers with trainable parameters in the order
backward produces their gradients (0 first; the extractor uses reverse forward order) and is ``null`` for the
others. What each number means and how it is counted (FLOP = 2 x multiply-adds for convolutions and fully
connected layers; batch-norm, activations, pools, residual adds) is documented in
:mod:`executor.workload_extract`. A hand-written or third-party table in the same schema loads the same way
(``load_workload("path/to/table.json")``); loading validates it and raises :class:`~hardware.errors.SpecError`
naming the file, the field and the value on any problem.

Public API::

    load_workload(name_or_path) -> WorkloadTable     (cached per file and modification time)
    list_workloads() -> list[str]
    parse_workload(data, source) -> WorkloadTable
    WorkloadTable, LayerCost, WorkloadTotals
"""
from __future__ import annotations

import functools

import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hardware.errors import ConfigError, SpecError

__all__ = ["SCHEMA", "WORKLOAD_DIR", "LAYER_KEYS", "TOTAL_KEYS", "LayerCost", "WorkloadTotals", "WorkloadTable",
           "load_workload", "list_workloads", "parse_workload", "resolve_workload_path"]

SCHEMA = "ttt-workload/1"
#: the catalog of cached tables
WORKLOAD_DIR = Path(__file__).resolve().parent / "data" / "workloads"
#: per-layer keys, in file order
LAYER_KEYS = ("name", "type", "params", "param_bytes", "flops_fwd", "flops_bwd_input", "flops_bwd_weight",
              "act_out_bytes", "mem_bytes_fwd", "mem_bytes_bwd", "grad_ready_index", "shape")
#: totals keys, in file order
TOTAL_KEYS = ("params", "param_bytes", "flops_fwd", "flops_bwd_input", "flops_bwd_weight", "flops_bwd",
              "act_bytes", "mem_bytes_fwd", "mem_bytes_bwd")
_NUMERIC_LAYER_KEYS = ("params", "param_bytes", "flops_fwd", "flops_bwd_input", "flops_bwd_weight",
                       "act_out_bytes", "mem_bytes_fwd", "mem_bytes_bwd")
#: totals key -> layer key it sums (flops_bwd is checked separately)
_TOTAL_OF = {"params": "params", "param_bytes": "param_bytes", "flops_fwd": "flops_fwd",
             "flops_bwd_input": "flops_bwd_input", "flops_bwd_weight": "flops_bwd_weight",
             "act_bytes": "act_out_bytes", "mem_bytes_fwd": "mem_bytes_fwd", "mem_bytes_bwd": "mem_bytes_bwd"}

Number = int | float


@dataclass(frozen=True)
class LayerCost:
    """One row of a workload table: one call of one layer, per image.

    Attributes
    ----------
    name, type : str
        Module path (``layer1.0.conv2``) and class name (``Conv2d``).
    params : int
        Parameters owned by the layer; ``param_bytes`` = 4 x params (fp32).
    flops_fwd, flops_bwd_input, flops_bwd_weight : int or float
        FLOP of the forward pass, of the input gradient and of the weight gradient.
    act_out_bytes : int or float
        Bytes of the output activation.
    mem_bytes_fwd, mem_bytes_bwd : int or float
        Activation bytes read plus written in forward / backward (parameters excluded).
    grad_ready_index : int or None
        Position of this layer's gradient in backward's production order (0 first), None without trainable
        parameters.
    shape : mapping
        Geometry for optimizer cost models (Conv: in/out channels, kernel_size, stride, padding, groups,
        bias, in_hw, out_hw; Linear: in/out features, bias; BatchNorm: num_features, hw; all: out_shape).
    """

    name: str
    type: str
    params: int
    param_bytes: Number
    flops_fwd: Number
    flops_bwd_input: Number
    flops_bwd_weight: Number
    act_out_bytes: Number
    mem_bytes_fwd: Number
    mem_bytes_bwd: Number
    grad_ready_index: int | None
    shape: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def flops_bwd(self) -> Number:
        """Backward FLOP (input gradient + weight gradient)."""
        return self.flops_bwd_input + self.flops_bwd_weight

    @property
    def has_gradient(self) -> bool:
        """Whether the layer produces a parameter gradient (that data parallelism must allreduce)."""
        return self.grad_ready_index is not None

    def to_dict(self) -> dict[str, Any]:
        """The layer record as in the JSON file."""
        return {k: (dict(self.shape) if k == "shape" else getattr(self, k)) for k in LAYER_KEYS}


@dataclass(frozen=True)
class WorkloadTotals:
    """Whole-network sums of a table, per image (``totals`` of the file)."""

    params: int
    param_bytes: Number
    flops_fwd: Number
    flops_bwd_input: Number
    flops_bwd_weight: Number
    flops_bwd: Number
    act_bytes: Number
    mem_bytes_fwd: Number
    mem_bytes_bwd: Number

    def __getitem__(self, key: str) -> Number:
        if key not in TOTAL_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    @property
    def flops_fwd_bwd(self) -> Number:
        """Forward plus backward FLOP per image (one training step's compute per image)."""
        return self.flops_fwd + self.flops_bwd

    def to_dict(self) -> dict[str, Number]:
        """The totals record as in the JSON file."""
        return {k: getattr(self, k) for k in TOTAL_KEYS}


_ARRAYS = ("flops_fwd", "flops_bwd_input", "flops_bwd_weight", "flops_bwd", "param_bytes", "act_out_bytes",
           "mem_bytes_fwd", "mem_bytes_bwd")


@dataclass(frozen=True, repr=False)
class WorkloadTable:
    """A network's per-layer costs, per image, in forward order.

    Attributes
    ----------
    model, dataset : str
    input_shape : tuple of int
        One sample (C, H, W).
    num_classes : int
    layers : tuple of LayerCost
        Forward order.
    per : str
        Always ``"image"``: every number is per sample; multiply by the batch.
    extracted_with : mapping
        Software versions of the extraction (``{"torch": "2.13.0"}``).
    source : str
        File the table was loaded from ("" when built in memory).
    flops_fwd, flops_bwd_input, flops_bwd_weight, flops_bwd, param_bytes, act_out_bytes, mem_bytes_fwd,
    mem_bytes_bwd : numpy.ndarray
        Read-only float64 arrays over ``layers`` (forward order) for vectorised cost models.
    grad_ready_index : numpy.ndarray
        int64 array over ``layers``; -1 where a layer has no gradient.
    """

    model: str
    dataset: str
    input_shape: tuple[int, ...]
    num_classes: int
    layers: tuple[LayerCost, ...]
    per: str = "image"
    extracted_with: Mapping[str, Any] = field(default_factory=dict, hash=False)
    source: str = field(default="", compare=False)
    flops_fwd: np.ndarray = field(init=False, repr=False, compare=False, hash=False)
    flops_bwd_input: np.ndarray = field(init=False, repr=False, compare=False, hash=False)
    flops_bwd_weight: np.ndarray = field(init=False, repr=False, compare=False, hash=False)
    flops_bwd: np.ndarray = field(init=False, repr=False, compare=False, hash=False)
    param_bytes: np.ndarray = field(init=False, repr=False, compare=False, hash=False)
    act_out_bytes: np.ndarray = field(init=False, repr=False, compare=False, hash=False)
    mem_bytes_fwd: np.ndarray = field(init=False, repr=False, compare=False, hash=False)
    mem_bytes_bwd: np.ndarray = field(init=False, repr=False, compare=False, hash=False)
    grad_ready_index: np.ndarray = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        for key in _ARRAYS:
            arr = np.array([float(getattr(layer, key)) for layer in self.layers], dtype=np.float64)
            arr.flags.writeable = False
            object.__setattr__(self, key, arr)
        gri = np.array([-1 if layer.grad_ready_index is None else layer.grad_ready_index for layer in self.layers],
                       dtype=np.int64)
        gri.flags.writeable = False
        object.__setattr__(self, "grad_ready_index", gri)

    def __repr__(self) -> str:
        t = self.totals
        return (f"WorkloadTable(model={self.model!r}, dataset={self.dataset!r}, input_shape={self.input_shape}, "
                f"num_classes={self.num_classes}, layers={len(self.layers)}, params={t.params}, "
                f"flops_fwd={t.flops_fwd}, source={self.source!r})")

    # ----------------------------------------------------------------------------------------- totals
    @functools.cached_property
    def totals(self) -> WorkloadTotals:
        """Whole-network sums per image (computed once; the table is immutable)."""
        s = {k: sum(getattr(layer, v) for layer in self.layers) for k, v in _TOTAL_OF.items()}
        s["flops_bwd"] = s["flops_bwd_input"] + s["flops_bwd_weight"]
        return WorkloadTotals(**s)

    @property
    def params(self) -> int:
        """Total parameters."""
        return sum(layer.params for layer in self.layers)

    @property
    def gradient_bytes(self) -> float:
        """Bytes of one full gradient (fp32) = bytes data parallelism allreduces per step."""
        return float(self.param_bytes.sum())

    @property
    def n_layers(self) -> int:
        """Rows of the table."""
        return len(self.layers)

    # ------------------------------------------------------------------------------ backward order
    def ready_order(self) -> np.ndarray:
        """Forward-order indices of the layers with a gradient, in the order their gradients become ready."""
        idx = np.flatnonzero(self.grad_ready_index >= 0)
        return idx[np.argsort(self.grad_ready_index[idx], kind="stable")]

    def gradient_sizes_in_ready_order(self) -> np.ndarray:
        """Gradient bytes (fp32) of each parameterised layer, in the order backward makes them ready.

        The sum is :attr:`gradient_bytes`. Feed this to a bucketing/overlap model.
        """
        return self.param_bytes[self.ready_order()].copy()

    def backward_flops_in_ready_order(self) -> np.ndarray:
        """Backward FLOP per image that must run before each gradient (in ready order) becomes ready, counted
        since the previous one became ready.

        Entry ``i`` is the backward work (input + weight gradient) of the ``i``-th ready layer plus that of
        the parameter-free layers backward passes through between the previous ready layer and it. The first
        entry also holds the layers after the last parameterised layer in forward order; the last entry also
        holds any layers before the first parameterised one (run after the last gradient is ready; usually
        zero work). The entries sum to ``totals.flops_bwd``. Assumes backward visits layers in reverse of
        forward order, as the extractor's ``grad_ready_index`` does.
        """
        order = self.ready_order()
        if len(order) == 0:
            return np.zeros(0)
        per_layer = self.flops_bwd
        out = np.empty(len(order))
        # in reverse forward order, a segment ends at (and includes) each ready layer
        upper = len(self.layers)
        for i, idx in enumerate(order):
            out[i] = per_layer[idx:upper].sum()
            upper = idx
        out[-1] += per_layer[:upper].sum()
        return out

    def layer(self, name: str) -> LayerCost:
        """The row named ``name`` (KeyError when absent)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The table in the JSON schema (as the file holds it)."""
        return {"schema": SCHEMA, "model": self.model, "dataset": self.dataset,
                "input_shape": list(self.input_shape), "num_classes": self.num_classes, "per": self.per,
                "extracted_with": dict(self.extracted_with), "totals": self.totals.to_dict(),
                "layers": [layer.to_dict() for layer in self.layers]}


# ------------------------------------------------------------------------------------------ parsing
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_count(source: str, fld: str, v: Any, integer: bool = False) -> Number:
    if v is None:
        raise SpecError(source, fld, None, "missing")
    if integer and (isinstance(v, bool) or not isinstance(v, int)):
        raise SpecError(source, fld, v, "must be a non-negative integer")
    if not _is_number(v) or v < 0:
        raise SpecError(source, fld, v, "must be a finite number >= 0")
    return v


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def parse_workload(data: Any, source: str = "<table>") -> WorkloadTable:
    """Validate a decoded ``ttt-workload/1`` document and build the table.

    Raises
    ------
    SpecError
        ``"<source>: field '<field>' = <value>: <reason>"`` for a wrong schema, a missing or invalid key,
        a ``grad_ready_index`` that is not a permutation, or totals that disagree with the layers.
    """
    if not isinstance(data, dict):
        raise SpecError(source, "(top level)", type(data).__name__, "must be a JSON object")
    if data.get("schema") != SCHEMA:
        raise SpecError(source, "schema", data.get("schema"), f"must be {SCHEMA!r}")
    for key in ("model", "dataset"):
        if not isinstance(data.get(key), str) or not data.get(key):
            raise SpecError(source, key, data.get(key), "must be a non-empty string")
    shape = data.get("input_shape")
    if not isinstance(shape, list) or not shape or \
            any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape):
        raise SpecError(source, "input_shape", shape, "must be a list of positive integers, e.g. [3, 224, 224]")
    num_classes = _check_count(source, "num_classes", data.get("num_classes"), integer=True)
    per = data.get("per", "image")
    if per != "image":
        raise SpecError(source, "per", per, "must be 'image' (all numbers per sample)")
    extracted = data.get("extracted_with", {})
    if not isinstance(extracted, dict):
        raise SpecError(source, "extracted_with", extracted, "must be an object")
    raw_layers = data.get("layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise SpecError(source, "layers", raw_layers if raw_layers != [] else "[]", "must be a non-empty list")

    layers = []
    for i, raw in enumerate(raw_layers):
        where = f"layers[{i}]"
        if not isinstance(raw, dict):
            raise SpecError(source, where, type(raw).__name__, "must be an object")
        for key in ("name", "type"):
            if not isinstance(raw.get(key), str) or not raw.get(key):
                raise SpecError(source, f"{where}.{key}", raw.get(key), "must be a non-empty string")
        nums = {k: _check_count(source, f"{where}.{k}", raw.get(k), integer=(k == "params"))
                for k in _NUMERIC_LAYER_KEYS}
        if "grad_ready_index" not in raw:
            raise SpecError(source, f"{where}.grad_ready_index", None, "missing (use null for no gradient)")
        gri = raw["grad_ready_index"]
        if gri is not None and (isinstance(gri, bool) or not isinstance(gri, int) or gri < 0):
            raise SpecError(source, f"{where}.grad_ready_index", gri, "must be null or an integer >= 0")
        if gri is not None and nums["params"] == 0:
            raise SpecError(source, f"{where}.grad_ready_index", gri, "a layer without parameters has no "
                            "gradient; must be null")
        shape_info = raw.get("shape", {})
        if not isinstance(shape_info, dict):
            raise SpecError(source, f"{where}.shape", shape_info, "must be an object")
        layers.append(LayerCost(name=raw["name"], type=raw["type"], grad_ready_index=gri, shape=shape_info,
                                **nums))

    indices = sorted(layer.grad_ready_index for layer in layers if layer.grad_ready_index is not None)
    if indices != list(range(len(indices))):
        bad = next((i for i, v in enumerate(indices) if v != i), len(indices))
        raise SpecError(source, "layers[*].grad_ready_index", indices[bad] if bad < len(indices) else None,
                        f"must number the {len(indices)} layers with gradients 0..{len(indices) - 1} "
                        "exactly once")

    table = WorkloadTable(model=data["model"], dataset=data["dataset"], input_shape=tuple(shape),
                          num_classes=int(num_classes), layers=tuple(layers), per=per,
                          extracted_with=dict(extracted), source=str(source))
    totals = data.get("totals")
    if not isinstance(totals, dict):
        raise SpecError(source, "totals", totals, "must be an object")
    computed = table.totals
    for key in TOTAL_KEYS:
        value = _check_count(source, f"totals.{key}", totals.get(key), integer=(key == "params"))
        if not _close(value, computed[key]):
            raise SpecError(source, f"totals.{key}", value,
                            f"does not match the sum over layers ({computed[key]})")
    return table


# ------------------------------------------------------------------------------------------ loading
def _squash(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def list_workloads() -> list[str]:
    """Names of the cached tables in the catalog (``perfmodel/data/workloads``), in natural order
    (``resnet18`` before ``resnet101``)."""
    if not WORKLOAD_DIR.is_dir():
        return []

    def natural(name: str) -> list:
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
    return sorted((p.stem for p in WORKLOAD_DIR.glob("*.json")), key=natural)


def resolve_workload_path(name_or_path: str | os.PathLike) -> Path:
    """File of a catalog name (case, '-' and '_' ignored: ``ResNet-50`` -> ``resnet50.json``) or of a path.

    Raises
    ------
    ConfigError
        Unknown name or missing file (source ``--model``).
    """
    text = os.fspath(name_or_path)
    looks_like_path = isinstance(name_or_path, os.PathLike) or text.endswith(".json") or os.sep in text \
        or (os.altsep is not None and os.altsep in text)
    if looks_like_path:
        path = Path(text).expanduser()
        if not path.is_file():
            raise ConfigError("--model", "model", text, "no such workload file")
        return path
    names = list_workloads()
    by_squash = {_squash(n): n for n in names}
    key = text if text in names else by_squash.get(_squash(text))
    if key is None:
        if Path(text).is_file():
            return Path(text)
        raise ConfigError("--model", "model", text,
                          f"unknown model; known: {', '.join(names) or '(none cached)'}; or give a table file "
                          "(perfmodel workload extract writes one)")
    return WORKLOAD_DIR / f"{key}.json"


@lru_cache(maxsize=64)
def _load_file(path: str, mtime_ns: int, size: int) -> WorkloadTable:  # noqa: ARG001 - cache key
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(path, "(file)", None, f"cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(path, "(file)", f"line {exc.lineno} column {exc.colno}", f"not valid JSON: {exc.msg}") \
            from None
    return parse_workload(data, path)


def load_workload(name_or_path: str | os.PathLike) -> WorkloadTable:
    """Load a workload table by catalog name (``resnet50``) or from a JSON file in the same schema.

    Loads are cached per file path, modification time and size (a regenerated file is re-read).

    Raises
    ------
    ConfigError
        Unknown name or missing file.
    SpecError
        The file is not a valid ``ttt-workload/1`` table (names the file, the field and the value).
    """
    path = resolve_workload_path(name_or_path).resolve()
    st = path.stat()
    return _load_file(str(path), st.st_mtime_ns, st.st_size)
