"""The run configuration: one file (TOML) or the same command-line flags drive ``predict``, ``simulate`` and
``run``, so that a prediction and a measurement of the same configuration are comparable.

File layout (every section and key optional; defaults below)::

    [workload]       model = "resnet50", dataset (default: the model's own), precision = "fp32" | "fp16"
    [training]       batch = 256 (global), optimizer = "sgd" | "lars" | "kfac",
                     epochs = 90.0  or  target_top1 = 75.9 (percent), warmup_epochs = 5.0,
                     eval_every_epochs = 1.0
    [training.optimizer_options]   free-form table handed to the optimizer model / implementation
    [system]         system = "big-basin-p100" (catalog id or spec path), nodes = 1, ranks_per_node (default:
                     the system's devices per node)
    [communication]  allreduce = "auto" | algorithm name, bucket_mb = 25.0, overlap = true
    [run]            iterations = 20, warmup_iterations = 3, data = "synthetic" | "digits" | path, seed = 0
    [simulation]     iterations = 50, jitter = "none" | "normal" | "lognormal", jitter_cv = 0.0,
                     straggler_prob = 0.0, straggler_slowdown = 1.0, background_gbps = 0.0,
                     max_inflight_buckets = 1, network = "auto" | "flows"   (``perfmodel simulate``; its flags win)

Command-line flags override file values: ``--model --dataset --precision --batch --optimizer --epochs
--target-top1 --system --nodes --ranks-per-node --allreduce --bucket-mb --no-overlap``.

Assumptions: when neither ``epochs`` nor ``target_top1`` is given, the target defaults to the model's
reference accuracy handled by the convergence model; ``bucket_mb`` uses MB = 1e6 bytes (as PyTorch DDP's
``bucket_cap_mb`` is treated in its docs as megabytes).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from hardware.errors import ConfigError
from perfmodel.datasets import DATASETS

__all__ = ["RunConfig", "DATASETS", "load_config", "add_config_arguments", "config_from_args"]


PRECISIONS = ("fp32", "fp16")
OPTIMIZER_NAMES = ("sgd", "lars", "kfac")


@dataclass(frozen=True)
class RunConfig:
    """A fully resolved run configuration (immutable). Units: batch in images, bucket size in bytes."""

    model: str = "resnet50"
    dataset: str | None = None
    precision: str = "fp32"
    batch: int = 256
    optimizer: str = "sgd"
    epochs: float | None = None
    target_top1: float | None = None
    warmup_epochs: float = 5.0
    eval_every_epochs: float = 1.0
    optimizer_options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    system: str = "big-basin-p100"
    nodes: int = 1
    ranks_per_node: int | None = None
    allreduce: str = "auto"
    bucket_bytes: float = 25e6
    overlap: bool = True
    iterations: int = 20
    warmup_iterations: int = 3
    data: str = "synthetic"
    seed: int = 0
    simulation: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    source: str = "<defaults>"

    # ---- derived -------------------------------------------------------------------------------------
    @property
    def train_images(self) -> int:
        """Training images per epoch (the dataset must be resolved)."""
        return DATASETS[self.dataset].train_images

    @property
    def val_images(self) -> int:
        """Validation images per evaluation (the dataset must be resolved)."""
        return DATASETS[self.dataset].val_images

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (what predictions and measurements record)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "source"}
        d["optimizer_options"] = dict(self.optimizer_options)
        d["simulation"] = dict(self.simulation)
        return d

    @property
    def config_hash(self) -> str:
        """Stable 16-hex-digit hash of the configuration (independent of where it was read from)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def replace(self, **changes: Any) -> "RunConfig":
        """A validated copy with ``changes`` applied."""
        return _validated(dataclasses.replace(self, **changes))


# key in file -> (section, attribute, type, converter)
_SCHEMA: dict[str, dict[str, tuple[str, type | tuple[type, ...]]]] = {
    "workload": {"model": ("model", str), "dataset": ("dataset", str), "precision": ("precision", str)},
    "training": {"batch": ("batch", int), "optimizer": ("optimizer", str), "epochs": ("epochs", (int, float)),
                 "target_top1": ("target_top1", (int, float)), "warmup_epochs": ("warmup_epochs", (int, float)),
                 "eval_every_epochs": ("eval_every_epochs", (int, float)),
                 "optimizer_options": ("optimizer_options", dict)},
    "system": {"system": ("system", str), "nodes": ("nodes", int), "ranks_per_node": ("ranks_per_node", int)},
    "communication": {"allreduce": ("allreduce", str), "bucket_mb": ("bucket_bytes", (int, float)),
                      "overlap": ("overlap", bool)},
    "run": {"iterations": ("iterations", int), "warmup_iterations": ("warmup_iterations", int),
            "data": ("data", str), "seed": ("seed", int)},
    # every key of [simulation] lands in RunConfig.simulation (ranges are checked by perfmodel.simulate)
    "simulation": {"iterations": ("simulation", int), "jitter": ("simulation", str),
                   "jitter_cv": ("simulation", (int, float)), "straggler_prob": ("simulation", (int, float)),
                   "straggler_slowdown": ("simulation", (int, float)),
                   "background_gbps": ("simulation", (int, float)),
                   "max_inflight_buckets": ("simulation", int), "network": ("simulation", str)},
}


def _check_type(source: str, key: str, value: Any, typ) -> None:
    ok = isinstance(value, typ) and not (isinstance(value, bool) and typ is not bool and bool not in
                                          (typ if isinstance(typ, tuple) else (typ,)))
    if not ok:
        names = "/".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))
        raise ConfigError(source, key, value, f"must be of type {names}")


def _validated(cfg: RunConfig) -> RunConfig:
    """Check ranges and enums; return ``cfg`` (unchanged) or raise ConfigError naming the field."""
    src = cfg.source
    if cfg.dataset is not None and cfg.dataset not in DATASETS:
        raise ConfigError(src, "workload.dataset", cfg.dataset, f"unknown dataset; known: {', '.join(DATASETS)}")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(src, "workload.precision", cfg.precision, f"must be one of {', '.join(PRECISIONS)}")
    if cfg.batch < 1:
        raise ConfigError(src, "training.batch", cfg.batch, "must be >= 1")
    if cfg.optimizer not in OPTIMIZER_NAMES:
        raise ConfigError(src, "training.optimizer", cfg.optimizer,
                          f"unknown optimizer; known: {', '.join(OPTIMIZER_NAMES)}")
    if cfg.epochs is not None and not 0 < cfg.epochs < float("inf"):
        raise ConfigError(src, "training.epochs", cfg.epochs, "must be finite and > 0")
    if cfg.target_top1 is not None and not 0 < cfg.target_top1 < 100:
        raise ConfigError(src, "training.target_top1", cfg.target_top1, "must be a percentage in (0, 100)")
    if cfg.warmup_epochs < 0:
        raise ConfigError(src, "training.warmup_epochs", cfg.warmup_epochs, "must be >= 0")
    if not cfg.eval_every_epochs > 0:
        raise ConfigError(src, "training.eval_every_epochs", cfg.eval_every_epochs, "must be > 0")
    if cfg.nodes < 1:
        raise ConfigError(src, "system.nodes", cfg.nodes, "must be >= 1")
    if cfg.ranks_per_node is not None and cfg.ranks_per_node < 1:
        raise ConfigError(src, "system.ranks_per_node", cfg.ranks_per_node, "must be >= 1")
    if not cfg.bucket_bytes > 0:
        raise ConfigError(src, "communication.bucket_mb", cfg.bucket_bytes / 1e6, "must be > 0")
    if cfg.iterations < 1:
        raise ConfigError(src, "run.iterations", cfg.iterations, "must be >= 1")
    if cfg.warmup_iterations < 0:
        raise ConfigError(src, "run.warmup_iterations", cfg.warmup_iterations, "must be >= 0")
    if cfg.ranks_per_node is not None:
        ranks = cfg.nodes * cfg.ranks_per_node
        if cfg.batch % ranks:
            raise ConfigError(src, "training.batch", cfg.batch,
                              f"global batch is not divisible by the {ranks} ranks "
                              f"({cfg.nodes} nodes x {cfg.ranks_per_node} ranks per node)")
    return cfg


def load_config(path: str | Path | None = None, **overrides: Any) -> RunConfig:
    """Read a run config TOML (or start from defaults when ``path`` is None) and apply ``overrides``
    (attribute names of :class:`RunConfig`; ``None`` values are ignored)."""
    values: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(source, "<file>", str(path), "no such config file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(source, "<file>", str(path), f"cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(source, "<toml>", None, f"TOML syntax error: {exc}") from None
        for section, table in data.items():
            if section not in _SCHEMA:
                raise ConfigError(source, section, table if not isinstance(table, dict) else "{...}",
                                  f"unknown section; known: {', '.join(_SCHEMA)}")
            if not isinstance(table, dict):
                raise ConfigError(source, section, table, "must be a table")
            for key, value in table.items():
                if key not in _SCHEMA[section]:
                    raise ConfigError(source, f"{section}.{key}", value,
                                      f"unknown key; known in [{section}]: {', '.join(_SCHEMA[section])}")
                attr, typ = _SCHEMA[section][key]
                _check_type(source, f"{section}.{key}", value, typ)
                if attr == "simulation":
                    values.setdefault("simulation", {})[key] = float(value) if typ == (int, float) else value
                    continue
                if attr == "bucket_bytes":
                    value = float(value) * 1e6
                elif attr == "optimizer_options":
                    value = MappingProxyType(dict(value))
                elif typ == (int, float):
                    value = float(value)
                values[attr] = value
    if "simulation" in values:
        values["simulation"] = MappingProxyType(values["simulation"])
    for k, v in overrides.items():
        if v is not None:
            values[k] = MappingProxyType(dict(v)) if k in ("optimizer_options", "simulation") else v
    # --epochs overrides a file's target and --target-top1 a file's epochs (the flag wins).
    if overrides.get("epochs") is not None and overrides.get("target_top1") is None:
        values["target_top1"] = None
    if overrides.get("target_top1") is not None and overrides.get("epochs") is None:
        values["epochs"] = None
    if path is None and any(v is not None for v in overrides.values()):
        source = "command line"
    try:
        cfg = RunConfig(source=source, **values)
    except TypeError as exc:  # pragma: no cover - programming error in overrides
        raise ConfigError(source, "<overrides>", sorted(overrides), str(exc)) from None
    return _validated(cfg)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the common run-config flags (same meaning as the config keys) and the positional CONFIG."""
    parser.add_argument("config", nargs="?", metavar="CONFIG.toml", help="run configuration file")
    g = parser.add_argument_group("run configuration (override the file)")
    g.add_argument("--model")
    g.add_argument("--dataset")
    g.add_argument("--precision", choices=PRECISIONS)
    g.add_argument("--batch", type=int, help="global batch size (images)")
    g.add_argument("--optimizer")
    g.add_argument("--epochs", type=float, help="train for this many epochs (overrides the convergence model)")
    g.add_argument("--target-top1", type=float, help="target top-1 accuracy in percent")
    g.add_argument("--system", help="catalog id or path to a system spec file")
    g.add_argument("--nodes", type=int)
    g.add_argument("--ranks-per-node", type=int)
    g.add_argument("--allreduce", help="allreduce algorithm or 'auto'")
    g.add_argument("--bucket-mb", type=float, help="gradient bucket size in MB (1e6 bytes)")
    g.add_argument("--no-overlap", action="store_true", help="do not overlap allreduce with backward")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Build the RunConfig from a parsed namespace produced by :func:`add_config_arguments`."""
    overrides = dict(model=args.model, dataset=args.dataset, precision=args.precision, batch=args.batch,
                     optimizer=args.optimizer, epochs=args.epochs, target_top1=args.target_top1,
                     system=args.system, nodes=args.nodes, ranks_per_node=args.ranks_per_node,
                     allreduce=args.allreduce,
                     bucket_bytes=None if args.bucket_mb is None else args.bucket_mb * 1e6,
                     overlap=False if args.no_overlap else None)
    return load_config(args.config, **overrides)
