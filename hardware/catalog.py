"""Load and validate device and system spec files (TOML) into the SI dataclasses of :mod:`hardware.specs`.

The catalog lives in ``hardware/data/devices/<id>.toml`` and ``hardware/data/systems/<id>.toml``. Anywhere
a catalog id is accepted, a path to a user's own spec file is accepted too; a system's ``node.device`` is a
catalog id or a path relative to the system file.

Validation is declarative: each section has a schema table (key -> type, range, required) checked by one
walker; a few cross-field rules follow it. Every problem raises :class:`hardware.errors.SpecError` naming
the file, the dotted field, the value and the reason. Rules:

- unknown keys (typos such as ``link_Gbs``), missing required fields, wrong types, values out of range,
  unknown enum values, NaN/inf, TOML syntax errors, unreadable files and unknown ids are rejected;
- every numeric field must have an entry in the file's ``[sources]`` table (dotted key -> citation), and
  every entry there must name a field that exists;
- units are in the key names and are converted once, here, with :func:`hardware.units.to_si`.

Loaded files are cached on (resolved path, mtime, size).

The ``local`` system
--------------------
The catalog's ``local`` system is a placeholder with estimated numbers. ``perfmodel calibrate`` measures
this machine and writes a calibrated spec; the id ``local`` then resolves (for systems) to, in order:

1. the file named by the environment variable ``TTT_LOCAL_SPEC`` (an empty value switches the lookup off
   and gives the catalog placeholder; a value naming a missing file is an error);
2. ``$XDG_CONFIG_HOME/ttt-perfmodel/local.toml`` (default ``~/.config/ttt-perfmodel/local.toml``), where
   ``perfmodel calibrate`` writes without ``--out``, if it exists;
3. the catalog placeholder ``hardware/data/systems/local.toml``.

User systems
------------
A system id that is not in the catalog is looked up in the user's system registry, the folder named by
``TTT_SYSTEMS_DIR`` (default ``$XDG_CONFIG_HOME/ttt-perfmodel/systems``, i.e.
``~/.config/ttt-perfmodel/systems``): ``<id>.toml`` there. ``perfmodel cluster up`` registers the emulated
cluster there as ``emulated`` (and ``perfmodel cluster down`` removes it). Catalog ids cannot be shadowed.

A calibrated system file may carry a ``[calibration]`` table (measured allreduce costs, the executor's
overheads) and its device file ``layer_overhead_us`` and ``[shared_efficiency.<precision>.ranks_<k>]``
curves; see :mod:`hardware.specs`.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from hardware.errors import SpecError
from hardware.specs import (CALIBRATED_ALGORITHMS, CLOSED_FORM_ALGORITHMS, DEVICE_KINDS, INTRA_KINDS,
                            MEMORY_MODES, PRECISIONS, CalibratedCollective, Calibration, KfacMeasured,
                            DeviceSpec, EfficiencyCurve, ExecutorOverheads, FrozenMap, IntraNodeSpec, MemorySpec,
                            NetworkSpec, NodeSpec, SystemSpec)
from hardware.units import to_si

__all__ = [
    "CATALOG_DIR", "DEVICES_DIR", "SYSTEMS_DIR", "list_devices", "list_systems", "load_device",
    "load_system", "load_any", "spec_to_dict", "is_path_like", "DEVICE_SCHEMA", "SYSTEM_SCHEMA",
    "LOCAL_SPEC_ENV", "user_local_spec_path", "calibrated_local_spec", "SYSTEMS_DIR_ENV", "user_systems_dir",
]

CATALOG_DIR = Path(__file__).resolve().parent / "data"
DEVICES_DIR = CATALOG_DIR / "devices"
SYSTEMS_DIR = CATALOG_DIR / "systems"


# ==========================================================================================================
# Declarative schema
# ==========================================================================================================
@dataclass(frozen=True)
class Leaf:
    """A scalar field. ``type``: 'str', 'int', 'float', 'bool', 'enum', 'int_list' or 'float_list' (the bounds
    apply to every item of a list).

    Numeric bounds: ``gt``/``ge`` (lower, exclusive/inclusive), ``lt``/``le`` (upper).
    """

    type: str
    required: bool = True
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None


@dataclass(frozen=True)
class Table:
    """A table with fixed keys."""

    fields: Mapping[str, Any]
    required: bool = True


@dataclass(frozen=True)
class MapOf:
    """A table whose keys are names chosen by the file (``[memory.<name>]``), each value a ``Table`` (or
    another ``MapOf`` for two levels of names)."""

    value: Any
    required: bool = True
    key_choices: tuple[str, ...] = ()
    key_pattern: str = r"^[a-z][a-z0-9_]*$"
    min_items: int = 1
    max_items: int | None = None


@dataclass(frozen=True)
class Tagged:
    """A table whose allowed keys depend on its ``tag`` field (``[network.topology] kind = ...``)."""

    tag: str
    variants: Mapping[str, Mapping[str, Any]]
    required: bool = True


def _pos(**kw) -> Leaf:
    return Leaf("float", gt=0, **kw)


def _count(**kw) -> Leaf:
    return Leaf("int", ge=1, **kw)


_ID = Leaf("str", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: ``ranks_<k>`` with k >= 2 (calibrated tables per rank count)
_RANKS_KEY = r"^ranks_([2-9]|[1-9][0-9]+)$"
_CURVE = Table({"eff_max": Leaf("float", gt=0, le=1), "batch_half_images": Leaf("float", ge=0)})

DEVICE_SCHEMA: dict[str, Any] = {
    "id": _ID,
    "name": Leaf("str"),
    "kind": Leaf("enum", choices=DEVICE_KINDS),
    "notes": Leaf("str", required=False),
    "cores": _count(),
    "clock_GHz": _pos(le=10),
    "peak_tflops_fp64": _pos(le=1e4),
    "peak_tflops_fp32": _pos(le=1e4),
    "peak_tflops_fp16": _pos(le=1e4, required=False),
    "peak_tflops_bf16": _pos(le=1e4, required=False),
    "memory_mode": Leaf("enum", choices=MEMORY_MODES, required=False),
    "memory": MapOf(Table({"capacity_GiB": _pos(), "bw_GBps": _pos()}), max_items=2),
    "efficiency": MapOf(_CURVE, key_choices=PRECISIONS),
    # calibrated devices only (perfmodel calibrate): see DeviceSpec.layer_overhead_s / shared_efficiency
    "layer_overhead_us": Leaf("float", ge=0, le=1e6, required=False),
    "shared_efficiency": MapOf(MapOf(_CURVE, key_pattern=_RANKS_KEY), key_choices=PRECISIONS, required=False),
    "workload_scale": MapOf(MapOf(Leaf("float", gt=0, le=100)), key_pattern=r"^ranks_[1-9][0-9]*$", required=False),
    "workload_scale_batch": MapOf(MapOf(Table({"batch": Leaf("float_list", gt=0),
                                               "factor": Leaf("float_list", gt=0, le=100)})),
                                  key_pattern=r"^ranks_[1-9][0-9]*$", required=False),
}

_TOPOLOGY_VARIANTS: dict[str, dict[str, Any]] = {
    "fat-tree": {
        "levels": _count(le=5, required=False),
        "nodes_per_leaf": _count(),
        "uplinks_per_leaf": _count(required=False),
        "oversubscription": _pos(required=False),
        "spine_switches": _count(required=False),
        "switch_radix": Leaf("int", ge=2, required=False),
    },
    "single-switch": {"ports": _count(required=False)},
    "torus": {"dims": Leaf("int_list", ge=1)},
    "dragonfly": {
        "nodes_per_router": _count(),
        "routers_per_group": _count(),
        "groups": _count(),
        "global_links_per_router": _count(required=False),
    },
}

SYSTEM_SCHEMA: dict[str, Any] = {
    "id": _ID,
    "name": Leaf("str"),
    "notes": Leaf("str", required=False),
    "max_nodes": _count(),
    "node": Table({
        "device": Leaf("str"),
        "devices_per_node": _count(le=1024),
        "nics_per_node": _count(le=64),
        "host_memory_GiB": _pos(),
        "memory_mode": Leaf("enum", choices=MEMORY_MODES, required=False),
        "intra": Table({
            "kind": Leaf("enum", choices=INTRA_KINDS),
            "link_GBps": _pos(),
            "latency_us": Leaf("float", ge=0),
            "links_per_device": _count(required=False),
        }),
    }),
    "network": Table({
        "fabric": Leaf("str", pattern=r"^[a-z0-9][a-z0-9._-]*$"),
        "link_Gbps": _pos(),
        "latency_us": Leaf("float", ge=0),
        "topology": Tagged("kind", _TOPOLOGY_VARIANTS),
        # EMPIRICAL, optional: measured time of one exchange step between two nodes by message size (the
        # emulated cluster's link calibration, executor/cluster/measure.py); see NetworkSpec.exchange_profile
        "exchange_profile": Table({"bytes": Leaf("int_list", ge=1), "seconds": Leaf("float_list", gt=0)},
                                  required=False),
        # EMPIRICAL, optional: measured time of one ring step (every node sends to the next) by message
        # size, on all the nodes (the same calibration); see NetworkSpec.ring_profile
        "ring_profile": Table({"bytes": Leaf("int_list", ge=1), "seconds": Leaf("float_list", gt=0)},
                              required=False),
    }),
    # written by `perfmodel calibrate` (hardware.specs.Calibration); catalog systems have none.
    # beta/gamma keys are seconds per byte in ns/B (converted here, see _per_byte).
    "calibration": Table({
        "date": Leaf("str"),
        "host": Leaf("str"),
        "notes": Leaf("str", required=False),
        "allreduce": MapOf(Table({"alpha_us": Leaf("float", ge=0), "beta_ns_per_B": Leaf("float", ge=0),
                                  "gamma_ns_per_B": Leaf("float", ge=0)}),
                           key_choices=CLOSED_FORM_ALGORITHMS, required=False),
        "allreduce_measured": MapOf(MapOf(Table({"alpha_us": Leaf("float", ge=0),
                                                 "beta_ns_per_B": Leaf("float", ge=0)}), key_pattern=_RANKS_KEY),
                                    key_choices=CALIBRATED_ALGORITHMS, required=False),
        "jitter": MapOf(Leaf("float", ge=0, le=1), key_pattern=r"^ranks_[1-9][0-9]*$", required=False),
        "loop_compute": MapOf(Leaf("float", gt=0, le=10), key_pattern=r"^ranks_[1-9][0-9]*$", required=False),
        "optimizer_traffic": MapOf(Leaf("float", gt=0, le=100), key_pattern=r"^ranks_[1-9][0-9]*$",
                                   required=False),
        "step_tail": MapOf(Leaf("float", ge=1, le=10), key_pattern=r"^ranks_[1-9][0-9]*$", required=False),
        "kfac": MapOf(Table({"model": Leaf("str"), "per_rank_batch": Leaf("int", ge=1),
                             "factor_ms": Leaf("float", ge=0, le=1e7), "exchange_ms": Leaf("float", ge=0, le=1e7),
                             "inversion_ms": Leaf("float", ge=0, le=1e7),
                             "nodes": Leaf("int", ge=1, required=False)}),
                      key_pattern=r"^ranks_[1-9][0-9]*$", required=False),
        "speed_probe_ms": MapOf(Leaf("float", gt=0, le=1e5), key_pattern=r"^ranks_[1-9][0-9]*$", required=False),
        "nodes_per_machine": Leaf("int", ge=1, required=False),
        "speed_probe_model_ms": MapOf(MapOf(Leaf("float", gt=0, le=1e5), key_pattern=r"^[A-Za-z0-9_.-]+$"),
                                      key_pattern=r"^ranks_[1-9][0-9]*$", required=False),
        "overheads": Table({"step_us": Leaf("float", ge=0, le=1e7), "bucketer_us": Leaf("float", ge=0, le=1e7),
                            "grad_hook_us": Leaf("float", ge=0, le=1e6),
                            "kernel_launch_us": Leaf("float", ge=0, le=1e6),
                            "optimizer_traffic_scale": Leaf("float", ge=1, le=100, required=False)},
                           required=False),
    }, required=False),
}


# ==========================================================================================================
# Schema walker
# ==========================================================================================================
def _type_name(v: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "table"}.get(type(v), type(v).__name__)


def _check_leaf(spec: Leaf, value: Any, path: str, src: str) -> Any:
    def fail(reason: str):
        raise SpecError(src, path, value, reason)

    if spec.type == "str" or spec.type == "enum":
        if not isinstance(value, str):
            fail(f"expected a string, got {_type_name(value)}")
        if not value.strip():
            fail("must not be empty")
        if spec.type == "enum" and value not in spec.choices:
            fail(f"unknown value (known: {', '.join(spec.choices)})")
        if spec.pattern and not re.match(spec.pattern, value):
            fail(f"must match {spec.pattern}")
        return value
    if spec.type == "bool":
        if not isinstance(value, bool):
            fail(f"expected true or false, got {_type_name(value)}")
        return value
    if spec.type in ("int_list", "float_list"):
        kind = spec.type.split("_")[0]
        if not isinstance(value, list) or not value:
            fail(f"expected a non-empty array of {'integers' if kind == 'int' else 'numbers'}, got {_type_name(value)}")
        for i, item in enumerate(value):
            _check_number(Leaf(kind, ge=spec.ge, gt=spec.gt, le=spec.le, lt=spec.lt), item, f"{path}[{i}]", src)
        return tuple(value) if kind == "int" else tuple(float(x) for x in value)
    return _check_number(spec, value, path, src)


def _check_number(spec: Leaf, value: Any, path: str, src: str):
    def fail(reason: str):
        raise SpecError(src, path, value, reason)

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(f"expected {'an integer' if spec.type == 'int' else 'a number'}, got {_type_name(value)}")
    if spec.type == "int" and not isinstance(value, int):
        fail("expected an integer")
    if not math.isfinite(value):
        fail("must be finite")
    if spec.gt is not None and not value > spec.gt:
        fail(f"must be > {spec.gt:g}")
    if spec.ge is not None and not value >= spec.ge:
        fail(f"must be >= {spec.ge:g}")
    if spec.lt is not None and not value < spec.lt:
        fail(f"must be < {spec.lt:g}")
    if spec.le is not None and not value <= spec.le:
        fail(f"must be <= {spec.le:g}")
    return value


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _check_table(fields: Mapping[str, Any], data: Any, path: str, src: str) -> dict:
    if not isinstance(data, dict):
        raise SpecError(src, path, data, f"expected a table, got {_type_name(data)}")
    for key in data:
        if key not in fields:
            raise SpecError(src, _join(path, key), data[key],
                            f"unknown key (known here: {', '.join(fields)})")
    out = {}
    for key, spec in fields.items():
        p = _join(path, key)
        if key not in data:
            if spec.required:
                raise SpecError(src, p, None, "required field is missing")
            continue
        out[key] = _check_node(spec, data[key], p, src)
    return out


def _check_node(spec: Any, value: Any, path: str, src: str) -> Any:
    if isinstance(spec, Leaf):
        return _check_leaf(spec, value, path, src)
    if isinstance(spec, Table):
        return _check_table(spec.fields, value, path, src)
    if isinstance(spec, MapOf):
        if not isinstance(value, dict):
            raise SpecError(src, path, value, f"expected a table, got {_type_name(value)}")
        if len(value) < spec.min_items:
            raise SpecError(src, path, None, f"needs at least {spec.min_items} entry")
        if spec.max_items is not None and len(value) > spec.max_items:
            raise SpecError(src, path, list(value), f"at most {spec.max_items} entries allowed")
        out = {}
        for name, sub in value.items():
            if spec.key_choices and name not in spec.key_choices:
                raise SpecError(src, _join(path, name), sub, f"unknown key (known here: {', '.join(spec.key_choices)})")
            if not re.match(spec.key_pattern, name):
                raise SpecError(src, _join(path, name), sub, f"name must match {spec.key_pattern}")
            out[name] = _check_node(spec.value, sub, _join(path, name), src)
        return out
    if isinstance(spec, Tagged):
        if not isinstance(value, dict):
            raise SpecError(src, path, value, f"expected a table, got {_type_name(value)}")
        tag_path = _join(path, spec.tag)
        if spec.tag not in value:
            raise SpecError(src, tag_path, None, "required field is missing")
        tag = _check_leaf(Leaf("enum", choices=tuple(spec.variants)), value[spec.tag], tag_path, src)
        fields = {spec.tag: Leaf("str"), **spec.variants[tag]}
        return _check_table(fields, value, path, src)
    raise TypeError(f"bad schema node {spec!r}")  # programming error


def _numeric_paths(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted paths of every numeric leaf (ints, floats, integer arrays) of validated data."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        p = _join(prefix, key)
        if isinstance(value, dict):
            out.update(_numeric_paths(value, p))
        elif isinstance(value, (tuple, list)) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            out[p] = value
    return out


def _all_paths(data: Mapping[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in data.items():
        p = _join(prefix, key)
        if isinstance(value, dict):
            out |= _all_paths(value, p)
        else:
            out.add(p)
    return out


def _flatten_sources(data: Any, src: str, prefix: str = "") -> dict[str, str]:
    """``[sources]`` as dotted key -> citation (quoted dotted keys and nested tables both accepted)."""
    if not isinstance(data, dict):
        raise SpecError(src, prefix or "sources", data, f"expected a table, got {_type_name(data)}")
    out: dict[str, str] = {}
    for key, value in data.items():
        p = _join(prefix, key)
        if isinstance(value, dict):
            out.update(_flatten_sources(value, src, p))
        elif isinstance(value, str) and value.strip():
            out[p] = value.strip()
        else:
            raise SpecError(src, f'sources."{p}"', value, "a source must be a non-empty string (a citation)")
    return out


def _validate(schema: Mapping[str, Any], raw: dict, src: str) -> tuple[dict, dict[str, str]]:
    """Check ``raw`` against ``schema`` and its ``[sources]`` table; return (data, sources)."""
    if "sources" not in raw:
        raise SpecError(src, "sources", None, "required table is missing (every number must cite its source)")
    body = {k: v for k, v in raw.items() if k != "sources"}
    data = _check_table(schema, body, "", src)
    sources = _flatten_sources(raw["sources"], src)
    existing = _all_paths(data)
    for key, citation in sources.items():
        if key not in existing:
            raise SpecError(src, f'sources."{key}"', citation, "no such field in this file")
    for path, value in _numeric_paths(data).items():
        if path not in sources:
            raise SpecError(src, path, list(value) if isinstance(value, tuple) else value,
                            "no entry in [sources] (every number must cite its source)")
    return data, sources


# ==========================================================================================================
# Files and ids
# ==========================================================================================================
def is_path_like(ref: str) -> bool:
    """True when ``ref`` names a file rather than a catalog id (has a separator, ends in .toml, or exists)."""
    return ("/" in ref or os.sep in ref or ref.endswith(".toml") or ref.startswith(".")
            or os.path.isfile(ref))


def _ids(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.toml")) if directory.is_dir() else []


def list_devices() -> list[str]:
    """Catalog device ids (sorted)."""
    return _ids(DEVICES_DIR)


def list_systems() -> list[str]:
    """Catalog system ids (sorted)."""
    return _ids(SYSTEMS_DIR)


def _known_ids() -> str:
    return f"known devices: {', '.join(list_devices())}; known systems: {', '.join(list_systems())}"


def _read_toml(path: Path) -> dict:
    src = str(path)
    try:
        raw_bytes = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(src, "path", src, "file not found") from None
    except IsADirectoryError:
        raise SpecError(src, "path", src, "is a directory, not a spec file") from None
    except PermissionError:
        raise SpecError(src, "path", src, "permission denied") from None
    except OSError as exc:
        raise SpecError(src, "path", src, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(src, "path", src, f"not UTF-8 text (byte {exc.start}); is this a TOML file?") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else "invalid TOML"
        m = re.search(r"line (\d+)", msg)
        if m:
            lineno = int(m.group(1))
            lines = text.splitlines()
            line = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
            raise SpecError(src, f"line {lineno}", line, f"TOML syntax error: {msg}") from None
        raise SpecError(src, "<toml>", None, f"TOML syntax error: {msg}") from None


#: environment variable naming the calibrated spec that the system id ``local`` resolves to
LOCAL_SPEC_ENV = "TTT_LOCAL_SPEC"


def user_local_spec_path() -> Path:
    """Where ``perfmodel calibrate`` writes the calibrated ``local`` system without ``--out``:
    ``$XDG_CONFIG_HOME/ttt-perfmodel/local.toml`` (default ``~/.config/ttt-perfmodel/local.toml``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "ttt-perfmodel" / "local.toml"


def calibrated_local_spec() -> Path | None:
    """The calibrated spec the system id ``local`` resolves to, or None for the catalog placeholder (see the
    module docstring for the lookup order)."""
    env = os.environ.get(LOCAL_SPEC_ENV)
    if env is not None:
        if not env.strip():
            return None
        p = Path(env).expanduser()
        if not p.is_file():
            raise SpecError(LOCAL_SPEC_ENV, LOCAL_SPEC_ENV, env, "no such spec file (unset it, or set it empty "
                            "for the catalog's placeholder)")
        return p.resolve()
    p = user_local_spec_path()
    return p.resolve() if p.is_file() else None


#: environment variable naming the user's system registry (folder of ``<id>.toml`` system specs)
SYSTEMS_DIR_ENV = "TTT_SYSTEMS_DIR"


def user_systems_dir() -> Path:
    """The user's system registry: ``$TTT_SYSTEMS_DIR``, else ``$XDG_CONFIG_HOME/ttt-perfmodel/systems``
    (default ``~/.config/ttt-perfmodel/systems``). Ids not in the catalog resolve to ``<id>.toml`` there."""
    env = os.environ.get(SYSTEMS_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return user_local_spec_path().parent / "systems"


def _resolve(ref: Any, kind: str, base: Path | None = None, src: str = "catalog", field_: str = "id") -> Path:
    """Map a catalog id or a path to an existing file path. ``kind``: 'device', 'system' or 'any'."""
    if isinstance(ref, Path):
        ref = str(ref)
    if not isinstance(ref, str) or not ref.strip():
        raise SpecError(src, field_, ref, "expected a catalog id or a file path")
    if ref == "local" and kind in ("system", "any") and base is None:
        calibrated = calibrated_local_spec()
        if calibrated is not None:
            return calibrated
    if is_path_like(ref):
        p = Path(ref).expanduser()
        if base is not None and not p.is_absolute():
            p = base / p
        if not p.exists():
            raise SpecError(str(p), "path", ref, "file not found")
        return p.resolve()
    dirs = {"device": [DEVICES_DIR], "system": [SYSTEMS_DIR], "any": [SYSTEMS_DIR, DEVICES_DIR]}[kind]
    if kind in ("system", "any") and base is None:
        dirs = [*dirs, user_systems_dir()]   # user systems after the catalog (see "User systems")
    for d in dirs:
        p = d / f"{ref}.toml"
        if p.is_file():
            return p.resolve()
    what = {"device": "device", "system": "system", "any": "device or system"}[kind]
    raise SpecError(src, field_, ref, f"unknown {what} id ({_known_ids()})")


def _stamp(p: Path) -> tuple[str, int, int]:
    try:
        st = p.stat()
    except OSError:
        return str(p), 0, 0  # _read_toml reports the problem
    return str(p), st.st_mtime_ns, st.st_size


# ==========================================================================================================
# Devices
# ==========================================================================================================
def _build_device(data: dict, sources: dict[str, str], src: str) -> DeviceSpec:
    memories = {name: MemorySpec(name, to_si("capacity_GiB", m["capacity_GiB"]), to_si("bw_GBps", m["bw_GBps"]))
                for name, m in data["memory"].items()}
    mode = data.get("memory_mode")
    if len(memories) == 2 and mode is None:
        raise SpecError(src, "memory_mode", None, "required for a device with two memory pools "
                        f"(one of: {', '.join(MEMORY_MODES)})")
    if len(memories) == 1 and mode is not None:
        raise SpecError(src, "memory_mode", mode, "only allowed for a device with two memory pools")
    if len(memories) == 2:
        bws = [m.bw_Bps for m in memories.values()]
        if bws[0] == bws[1]:
            raise SpecError(src, "memory", list(memories), "two memory pools need different bandwidths "
                            "(the faster one is the cache / fast pool)")
    peaks = {p: to_si(f"peak_tflops_{p}", data[f"peak_tflops_{p}"]) for p in PRECISIONS
             if f"peak_tflops_{p}" in data}
    eff = {}
    for prec, e in data["efficiency"].items():
        if prec not in peaks:
            raise SpecError(src, f"efficiency.{prec}", e, f"no peak_tflops_{prec} for this precision")
        eff[prec] = EfficiencyCurve(float(e["eff_max"]), float(e["batch_half_images"]))
    if "fp32" not in eff:
        raise SpecError(src, "efficiency.fp32", None, "required field is missing")
    shared = {}
    for prec, by_k in data.get("shared_efficiency", {}).items():
        if prec not in peaks:
            raise SpecError(src, f"shared_efficiency.{prec}", list(by_k), f"no peak_tflops_{prec} for this precision")
        shared[prec] = FrozenMap({int(k.split("_")[1]): EfficiencyCurve(float(e["eff_max"]),
                                                                         float(e["batch_half_images"]))
                                  for k, e in sorted(by_k.items(), key=lambda kv: int(kv[0].split("_")[1]))})
    return DeviceSpec(
        id=data["id"], name=data["name"], kind=data["kind"], cores=data["cores"],
        clock_hz=to_si("clock_GHz", data["clock_GHz"]), peak_flops=FrozenMap(peaks),
        memories=FrozenMap(memories), memory_mode=mode, efficiency=FrozenMap(eff),
        sources=FrozenMap(sources), source_file=src, notes=data.get("notes", ""),
        layer_overhead_s=to_si("layer_overhead_us", data.get("layer_overhead_us", 0.0)),
        shared_efficiency=FrozenMap(shared),
        workload_scale=FrozenMap({int(k.split("_")[1]): FrozenMap({m: float(v) for m, v in by_model.items()})
                                  for k, by_model in sorted(data.get("workload_scale", {}).items(),
                                                            key=lambda kv: int(kv[0].split("_")[1]))}),
        workload_scale_batch=FrozenMap(_workload_scale_batch(data.get("workload_scale_batch", {}), src)))


def _workload_scale_batch(tables: dict, src: str) -> dict[int, FrozenMap]:
    """``[workload_scale_batch.ranks_<k>.<model>]`` as ``{k: {model: ((batch, factor), ...)}}``: two arrays
    of one length, batches strictly increasing."""
    out = {}
    for key, by_model in tables.items():
        models = {}
        for m, t in by_model.items():
            path = f"workload_scale_batch.{key}.{m}"
            if len(t["batch"]) != len(t["factor"]):
                raise SpecError(src, f"{path}.factor", list(t["factor"]),
                                f"needs one factor per batch ({len(t['batch'])} batches)")
            if any(b <= a for a, b in zip(t["batch"], t["batch"][1:])):
                raise SpecError(src, f"{path}.batch", list(t["batch"]), "batches must be strictly increasing")
            models[m] = tuple((float(b), float(f)) for b, f in zip(t["batch"], t["factor"]))
        out[int(key.split("_")[1])] = FrozenMap(models)
    return dict(sorted(out.items()))


@functools.lru_cache(maxsize=256)
def _device_cached(path: str, mtime_ns: int, size: int) -> DeviceSpec:
    raw = _read_toml(Path(path))
    if "network" in raw or "node" in raw:
        raise SpecError(path, "network", None, "this is a system spec, not a device spec (use it as --system)")
    data, sources = _validate(DEVICE_SCHEMA, raw, path)
    return _build_device(data, sources, path)


def load_device(id_or_path: str | os.PathLike, memory_mode: str | None = None) -> DeviceSpec:
    """Load a device by catalog id or file path.

    Parameters
    ----------
    id_or_path : str or path
        Catalog id (``"v100-sxm2"``) or path to a device TOML file.
    memory_mode : {"flat", "cache"}, optional
        Override the memory mode of a two-pool device (KNL).

    Raises
    ------
    SpecError
        Unknown id, unreadable or malformed file.
    """
    dev = _device_cached(*_stamp(_resolve(id_or_path, "device")))
    return dev.with_memory_mode(memory_mode) if memory_mode is not None else dev


# ==========================================================================================================
# Systems
# ==========================================================================================================
def _exchange_profile(table: dict | None, src: str,
                      path: str = "network.exchange_profile") -> tuple[tuple[float, float], ...]:
    """``[network.exchange_profile]`` (or the table at ``path`` of the same form, e.g.
    ``[network.ring_profile]``) as ``((bytes, seconds), ...)`` by increasing size (empty when absent): two
    arrays of one length, at least two sizes, strictly increasing."""
    if not table:
        return ()
    sizes, times = table["bytes"], table["seconds"]
    if len(sizes) != len(times):
        raise SpecError(src, f"{path}.seconds", list(times), f"needs one time per size ({len(sizes)} sizes)")
    if len(sizes) < 2:
        raise SpecError(src, f"{path}.bytes", list(sizes), "needs at least two sizes")
    if any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise SpecError(src, f"{path}.bytes", list(sizes), "sizes must be strictly increasing")
    return tuple((float(n), float(t)) for n, t in zip(sizes, times))


def _topology_params(topo: dict, nics_per_node: int, src: str) -> dict[str, Any]:
    params = {k: v for k, v in topo.items() if k != "kind"}
    if topo["kind"] == "fat-tree":
        params.setdefault("levels", 2)
        up, over = params.get("uplinks_per_leaf"), params.get("oversubscription")
        if up is None and over is None:
            raise SpecError(src, "network.topology.oversubscription", None,
                            "a fat tree needs uplinks_per_leaf or oversubscription (1 for full bisection)")
        if up is not None:
            derived = params["nodes_per_leaf"] * nics_per_node / up
            if over is not None and not math.isclose(derived, over, rel_tol=0.01):
                raise SpecError(src, "network.topology.oversubscription", over,
                                f"inconsistent with nodes_per_leaf * nics_per_node / uplinks_per_leaf = {derived:.4g}")
            params["oversubscription"] = float(over if over is not None else derived)
        else:
            params["oversubscription"] = float(over)
        radix = params.get("switch_radix")
        if radix is not None and up is not None and params["nodes_per_leaf"] * nics_per_node + up > radix:
            raise SpecError(src, "network.topology.switch_radix", radix,
                            "leaf switch has fewer ports than nodes_per_leaf * nics_per_node + uplinks_per_leaf")
    return params


def _per_byte(key: str, value: float) -> float:
    """``*_ns_per_B`` (nanoseconds per byte) -> seconds per byte (the one unit :mod:`hardware.units` does
    not spell as a key suffix)."""
    if not key.endswith("_ns_per_B"):  # programming error: only called for those keys
        raise ValueError(key)
    return float(value) * 1e-9


def _build_calibration(cal: dict, src: str) -> Calibration:
    """The ``[calibration]`` table as a :class:`Calibration` (SI units)."""
    fits = cal.get("allreduce", {})
    measured = cal.get("allreduce_measured", {})
    allreduce = {}
    for name in [a for a in CALIBRATED_ALGORITHMS if a in fits or a in measured]:
        f = fits.get(name)
        prof = {int(k.split("_")[1]): (to_si("alpha_us", v["alpha_us"]), _per_byte("beta_ns_per_B", v["beta_ns_per_B"]))
                for k, v in measured.get(name, {}).items()}
        allreduce[name] = CalibratedCollective(
            algorithm=name,
            alpha_s=to_si("alpha_us", f["alpha_us"]) if f else None,
            beta_s_per_B=_per_byte("beta_ns_per_B", f["beta_ns_per_B"]) if f else None,
            gamma_s_per_B=_per_byte("gamma_ns_per_B", f["gamma_ns_per_B"]) if f else None,
            profiles=FrozenMap(dict(sorted(prof.items()))))
    ov = cal.get("overheads")
    overheads = None
    if ov is not None:
        overheads = ExecutorOverheads(step_s=to_si("step_us", ov.get("step_us", 0.0)),
                                      bucketer_s=to_si("bucketer_us", ov.get("bucketer_us", 0.0)),
                                      grad_hook_s=to_si("grad_hook_us", ov.get("grad_hook_us", 0.0)),
                                      kernel_launch_s=to_si("kernel_launch_us", ov.get("kernel_launch_us", 0.0)),
                                      optimizer_traffic_scale=float(ov.get("optimizer_traffic_scale", 1.0)))
    jitter = {int(k.split("_")[1]): float(v) for k, v in cal.get("jitter", {}).items()}
    loop = {int(k.split("_")[1]): float(v) for k, v in cal.get("loop_compute", {}).items()}
    traffic = {int(k.split("_")[1]): float(v) for k, v in cal.get("optimizer_traffic", {}).items()}
    tail = {int(k.split("_")[1]): float(v) for k, v in cal.get("step_tail", {}).items()}
    probe = {int(k.split("_")[1]): float(v) * 1e-3 for k, v in cal.get("speed_probe_ms", {}).items()}
    probe_model = {int(k.split("_")[1]): FrozenMap({m: float(x) * 1e-3 for m, x in v.items()})
                   for k, v in cal.get("speed_probe_model_ms", {}).items()}
    kfac = {int(k.split("_")[1]): KfacMeasured(model=v["model"], per_rank_batch=int(v["per_rank_batch"]),
                                               factor_s=v["factor_ms"] * 1e-3, exchange_s=v["exchange_ms"] * 1e-3,
                                               inversion_s=v["inversion_ms"] * 1e-3, nodes=int(v.get("nodes", 1)))
            for k, v in cal.get("kfac", {}).items()}
    return Calibration(date=cal["date"], host=cal["host"], allreduce=FrozenMap(allreduce), overheads=overheads,
                       jitter_cv=FrozenMap(dict(sorted(jitter.items()))),
                       loop_compute_scale=FrozenMap(dict(sorted(loop.items()))),
                       optimizer_traffic=FrozenMap(dict(sorted(traffic.items()))),
                       step_tail=FrozenMap(dict(sorted(tail.items()))),
                       speed_probe_s=FrozenMap(dict(sorted(probe.items()))),
                       speed_probe_model_s=FrozenMap(dict(sorted(probe_model.items()))),
                       kfac=FrozenMap(dict(sorted(kfac.items()))),
                       nodes_per_machine=int(cal.get("nodes_per_machine", 1)), notes=cal.get("notes", ""))


def _build_system(data: dict, sources: dict[str, str], path: Path) -> SystemSpec:
    src = str(path)
    node, intra, net = data["node"], data["node"]["intra"], data["network"]
    dev_path = _resolve(node["device"], "device", base=path.parent, src=src, field_="node.device")
    device = _device_cached(*_stamp(dev_path))
    if "memory_mode" in node:
        if len(device.memories) < 2:
            raise SpecError(src, "node.memory_mode", node["memory_mode"],
                            f"device '{device.id}' has a single memory pool; memory modes need two")
        device = device.with_memory_mode(node["memory_mode"])
    if intra["kind"].startswith("nv") and device.kind != "gpu":
        raise SpecError(src, "node.intra.kind", intra["kind"], f"NVLink needs GPUs; device '{device.id}' is a {device.kind}")
    return SystemSpec(
        id=data["id"], name=data["name"],
        node=NodeSpec(
            device=device, devices_per_node=node["devices_per_node"], nics_per_node=node["nics_per_node"],
            host_memory_bytes=to_si("host_memory_GiB", node["host_memory_GiB"]),
            intra=IntraNodeSpec(intra["kind"], to_si("link_GBps", intra["link_GBps"]),
                                to_si("latency_us", intra["latency_us"]), intra.get("links_per_device")),
            device_ref=node["device"]),
        max_nodes=data["max_nodes"],
        network=NetworkSpec(
            fabric=net["fabric"], link_bw_Bps=to_si("link_Gbps", net["link_Gbps"]),
            latency_s=to_si("latency_us", net["latency_us"]), topology_kind=net["topology"]["kind"],
            topology_params=FrozenMap(_topology_params(net["topology"], node["nics_per_node"], src)),
            exchange_profile=_exchange_profile(net.get("exchange_profile"), src),
            ring_profile=_exchange_profile(net.get("ring_profile"), src, "network.ring_profile")),
        sources=FrozenMap(sources), source_file=src, notes=data.get("notes", ""),
        calibration=_build_calibration(data["calibration"], src) if "calibration" in data else None)


@functools.lru_cache(maxsize=128)
def _system_cached(path: str, mtime_ns: int, size: int, dev_stamp: tuple) -> SystemSpec:
    raw = _read_toml(Path(path))
    if "network" not in raw:
        raise SpecError(path, "network", None, "required table is missing (is this a device spec?)")
    data, sources = _validate(SYSTEM_SCHEMA, raw, path)
    return _build_system(data, sources, Path(path))


def _device_stamp_of(path: Path) -> tuple:
    """Stamp of the device file a system refers to (so editing the device invalidates the cache)."""
    try:
        ref = tomllib.loads(path.read_text("utf-8")).get("node", {}).get("device")
        if isinstance(ref, str) and ref.strip():
            return _stamp(_resolve(ref, "device", base=path.parent))
    except (OSError, ValueError, SpecError, AttributeError):
        pass  # the full load reports the problem
    return ()


def load_system(id_or_path: str | os.PathLike) -> SystemSpec:
    """Load a system by catalog id or file path (its device is resolved and loaded too).

    Raises
    ------
    SpecError
        Unknown id, unreadable or malformed file, reference to a device that does not exist.
    """
    p = _resolve(id_or_path, "system")
    return _system_cached(*_stamp(p), _device_stamp_of(p))


def load_any(id_or_path: str | os.PathLike) -> DeviceSpec | SystemSpec:
    """Load a device or a system; a file with a ``[network]`` table is a system."""
    p = _resolve(id_or_path, "any")
    raw = _read_toml(p)
    return load_system(p) if "network" in raw else load_device(p)


# ==========================================================================================================
# JSON
# ==========================================================================================================
def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def spec_to_dict(spec: DeviceSpec | SystemSpec | Any) -> dict:
    """JSON-ready dict of a spec: every dataclass field in SI units, plus ``type`` ("device"/"system"),
    the sources, and derived quantities (``compute_memory`` for devices; ``max_devices``,
    ``node_injection_bw_Bps`` and ``memory_per_device_bytes`` for systems)."""
    out = _plain(spec)
    if isinstance(spec, DeviceSpec):
        out = {"type": "device", **out, "compute_memory": _plain(spec.compute_memory)}
    elif isinstance(spec, SystemSpec):
        out = {"type": "system", **out, "max_devices": spec.max_devices,
               "node_injection_bw_Bps": spec.node_injection_bw_Bps,
               "memory_per_device_bytes": spec.memory_per_device_bytes}
        out["node"]["device"] = spec_to_dict(spec.node.device)
    return out
