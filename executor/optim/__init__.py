"""The executor's real optimizers (momentum SGD, LARS, K-FAC) and their learning-rate schedules.

Registry and entry points::

    OPTIMIZERS: dict[str, OptimizerEntry]      "sgd", "lars", "kfac"
    build_optimizer(name, model, lr, momentum, weight_decay, options, comm=None) -> torch.optim.Optimizer
    build_schedule(name, *, global_batch, iterations_per_epoch, epochs, warmup_epochs, options) -> LRSchedule
    set_lr(optimizer, lr)                      sets every param group's lr (call once per iteration)
    resolve_options(name, options) -> dict     validated options, defaults filled in

Typical loop::

    sched = build_schedule(cfg.optimizer, global_batch=cfg.batch, iterations_per_epoch=ipe,
                           epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs, options=cfg.optimizer_options)
    opt = build_optimizer(cfg.optimizer, model, sched(0), 0.9, 5e-5, cfg.optimizer_options, comm)
    for it in range(iterations):
        set_lr(opt, sched(it))
        loss = criterion(model(x), y); opt.zero_grad(); loss.backward()
        if not getattr(opt, "exchanges_gradients", False):
            allreduce_average(grads)        # the executor's bucketer; K-FAC's fused mode does it itself
        opt.step()

Options (``optimizer_options`` of the run config, one table shared with the cost model)
--------------------------------------------------------------------------------------
Accepted keys are the union of

- the cost model's keys (:data:`perfmodel.optimizers.OPTIMIZERS`, validated by the cost model's own
  checks); the real optimizer uses ``exclude_bn_bias`` (LARS) and ``refresh_interval``,
  ``refresh_schedule``, ``inverse``, ``grad_allgather``, ``factor_dtype_bytes`` (K-FAC), and ignores the
  pure cost-model knobs (``launch_overhead_s``, ``amortise_over_iterations``, ``inversion_efficiency``,
  ``factor_peak_flops``);
- the implementation's keys, :data:`EXECUTOR_OPTIONS` (``nesterov``; LARS ``eta``; K-FAC ``damping``,
  ``stat_decay``, ``damping_split``, ``kl_clip``, ``bn_fisher``, ``batch_averaged``);
- the schedule keys, :data:`SCHEDULE_OPTIONS` (used by :func:`build_schedule`, ignored by
  :func:`build_optimizer`).

Unknown keys and bad values raise :class:`~hardware.errors.ConfigError` with field
``optimizer_options.<key>``. Importing this package does not import torch (the optimizer classes are
loaded on first use), so the schedule can be used anywhere.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

from hardware.errors import ConfigError
from perfmodel.optimizers import OPTIMIZERS as COST_MODELS
from perfmodel.optimizers.base import OPTION_FIELD_PREFIX, check_bool, check_choice, check_float

from .schedule import DECAYS, GOYAL_BASE_BATCH, GOYAL_BASE_LR, LRSchedule, linear_scaled_lr

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "OptimizerEntry",
    "OPTIMIZERS",
    "EXECUTOR_OPTIONS",
    "SCHEDULE_OPTIONS",
    "COST_MODEL_ONLY_OPTIONS",
    "resolve_options",
    "build_optimizer",
    "build_schedule",
    "set_lr",
    "LRSchedule",
    "linear_scaled_lr",
    "LARS",
    "KFAC",
]

#: schedule keys (all optimizers): base rate and batch of the linear scaling rule, an explicit peak
#: (None: linear rule), the warmup's starting rate (None: ``lr_base``, Goyal), the decay policy
#: (None: the optimizer's default), step milestones (epochs) and factor, poly power and end rate
SCHEDULE_OPTIONS: Mapping[str, Any] = MappingProxyType({
    "lr_base": GOYAL_BASE_LR,
    "lr_base_batch": GOYAL_BASE_BATCH,
    "lr_peak": None,
    "lr_warmup_start": None,
    "lr_decay": None,
    "lr_milestones": (30.0, 60.0, 80.0),
    "lr_gamma": 0.1,
    "lr_power": 2.0,
    "lr_end": 0.0,
})

#: implementation-only keys per optimizer, with defaults
EXECUTOR_OPTIONS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "sgd": MappingProxyType({"nesterov": False}),
    "lars": MappingProxyType({"eta": 0.001}),
    "kfac": MappingProxyType({"nesterov": False, "damping": 1e-3, "stat_decay": 0.95, "damping_split": "pi",
                              "kl_clip": None, "bn_fisher": "diagonal", "batch_averaged": True}),
})

#: cost-model keys the real optimizers accept and ignore
COST_MODEL_ONLY_OPTIONS = ("launch_overhead_s", "amortise_over_iterations", "inversion_efficiency",
                           "factor_peak_flops")


@dataclass(frozen=True)
class OptimizerEntry:
    """One registry entry: the class (``"module:Class"``, loaded lazily) and the default LR decay."""

    name: str
    target: str
    default_decay: str
    description: str


#: registry name -> entry
OPTIMIZERS: Mapping[str, OptimizerEntry] = MappingProxyType({
    "sgd": OptimizerEntry("sgd", "torch.optim:SGD", "step", "momentum SGD (torch.optim.SGD), Goyal et al. 2017"),
    "lars": OptimizerEntry("lars", "executor.optim.lars:LARS", "poly", "LARS (You, Gitman, Ginsburg 2017)"),
    "kfac": OptimizerEntry("kfac", "executor.optim.kfac:KFAC", "poly",
                           "distributed K-FAC (Osawa et al. 2018)"),
})


def _field(key: str) -> str:
    return f"{OPTION_FIELD_PREFIX}.{key}"


def _lookup(name: Any, source: str) -> str:
    key = name.strip().lower() if isinstance(name, str) else None
    if key not in OPTIMIZERS:
        raise ConfigError(source, "optimizer", name, f"unknown optimizer (known: {', '.join(sorted(OPTIMIZERS))})")
    return key


def _check_executor_option(key: str, value: Any, source: str) -> Any:
    if key in ("nesterov", "batch_averaged"):
        return check_bool(source, key, value)
    if key in ("eta", "damping"):
        return check_float(source, key, value, minimum=0.0, inclusive_min=False)
    if key == "stat_decay":
        v = check_float(source, key, value, minimum=0.0, maximum=1.0)
        if v >= 1.0:
            raise ConfigError(source, _field(key), value, "must be a number >= 0 and < 1")
        return v
    if key == "damping_split":
        return check_choice(source, key, value, ("pi", "sqrt", "exact"))
    if key == "bn_fisher":
        return check_choice(source, key, value, ("diagonal", "none"))
    if key == "kl_clip":
        return None if value is None else check_float(source, key, value, minimum=0.0, inclusive_min=False)
    raise AssertionError(key)  # pragma: no cover - every key of EXECUTOR_OPTIONS is handled


def _check_schedule_option(key: str, value: Any, source: str) -> Any:
    if key in ("lr_peak", "lr_warmup_start"):
        return None if value is None else check_float(source, key, value, minimum=0.0)
    if key in ("lr_base", "lr_base_batch", "lr_power"):
        return check_float(source, key, value, minimum=0.0, inclusive_min=False)
    if key in ("lr_gamma", "lr_end"):
        return check_float(source, key, value, minimum=0.0)
    if key == "lr_decay":
        return None if value is None else check_choice(source, key, value, DECAYS)
    if key == "lr_milestones":
        if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
            raise ConfigError(source, _field(key), value, "must be a list of epochs")
        out = tuple(check_float(source, f"{key}[{i}]", v, minimum=0.0) for i, v in enumerate(value))
        if any(b <= a for a, b in zip(out, out[1:])):
            raise ConfigError(source, _field(key), value, "must be increasing")
        return out
    raise AssertionError(key)  # pragma: no cover


def resolve_options(name: str, options: Mapping[str, Any] | None = None, source: str = "--optimizer") -> dict[str, Any]:
    """All options of optimizer ``name`` (cost-model, executor and schedule keys), validated, defaults filled.

    Raises
    ------
    ConfigError
        Unknown optimizer, unknown key or bad value (field ``optimizer_options.<key>``).
    """
    key = _lookup(name, source)
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ConfigError(source, OPTION_FIELD_PREFIX, options, "must be a table of option = value")
    cost = COST_MODELS[key]
    out: dict[str, Any] = dict(cost.DEFAULT_OPTIONS)
    out.update(EXECUTOR_OPTIONS[key])
    out.update(SCHEDULE_OPTIONS)
    for k, v in options.items():
        if k in cost.DEFAULT_OPTIONS:
            out[k] = cost.check_option(k, v, source)
        elif k in EXECUTOR_OPTIONS[key]:
            out[k] = _check_executor_option(k, v, source)
        elif k in SCHEDULE_OPTIONS:
            out[k] = _check_schedule_option(k, v, source)
        else:
            known = ", ".join(sorted(set(cost.DEFAULT_OPTIONS) | set(EXECUTOR_OPTIONS[key]) | set(SCHEDULE_OPTIONS)))
            raise ConfigError(source, _field(str(k)), v, f"unknown option for optimizer '{key}' (known: {known})")
    if key == "kfac" and out["damping_split"] == "exact" and out["inverse"] != "eig":
        raise ConfigError(source, _field("damping_split"), "exact", "needs optimizer_options.inverse = 'eig'")
    return out


def _number(source: str, field: str, value: Any, *, minimum: float, inclusive: bool = True) -> float:
    """A finite number >= (or >) ``minimum``, else ConfigError naming the plain ``field``."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) \
        and (value >= minimum if inclusive else value > minimum)
    if not ok:
        raise ConfigError(source, field, value, f"must be a number {'>=' if inclusive else '>'} {minimum:g}")
    return float(value)


def _load(target: str) -> Any:
    mod, cls = target.split(":")
    return getattr(importlib.import_module(mod), cls)


def build_optimizer(name: str, model: Any, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                    options: Mapping[str, Any] | None = None, comm: Any = None, *,
                    source: str = "--optimizer") -> "torch.optim.Optimizer":
    """Build the real optimizer ``name`` for ``model``.

    Parameters
    ----------
    name : str
        ``"sgd"``, ``"lars"`` or ``"kfac"`` (case-insensitive).
    model : torch.nn.Module
        The network (its trainable parameters are optimised; K-FAC also hooks its layers).
    lr : float
        Initial learning rate (usually ``schedule(0)``; :func:`set_lr` changes it per iteration).
    momentum, weight_decay : float
        Momentum coefficient and L2 weight decay (>= 0).
    options : Mapping, optional
        ``optimizer_options`` (see the module docstring).
    comm : mpi4py communicator, optional
        Data-parallel communicator; used by K-FAC only (SGD and LARS work on gradients the executor has
        already averaged). None or size 1: single process.
    source : str
        Named in ConfigError.

    Returns
    -------
    torch.optim.Optimizer
        ``torch.optim.SGD``, :class:`executor.optim.lars.LARS` or :class:`executor.optim.kfac.KFAC`.
    """
    key = _lookup(name, source)
    for fld, v in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
        _number(source, fld, v, minimum=0.0)
    opts = resolve_options(key, options, source)
    cls = _load(OPTIMIZERS[key].target)
    params = [p for p in model.parameters() if p.requires_grad]
    if key == "sgd":
        nesterov = opts["nesterov"]
        if nesterov and momentum <= 0:
            raise ConfigError(source, _field("nesterov"), True, "needs momentum > 0")
        return cls(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if key == "lars":
        return cls(params, lr=lr, momentum=momentum, weight_decay=weight_decay, eta=opts["eta"],
                   exclude_bn_bias=opts["exclude_bn_bias"])
    return cls(model, lr=lr, momentum=momentum, weight_decay=weight_decay, damping=opts["damping"],
               stat_decay=opts["stat_decay"], refresh_interval=opts["refresh_interval"],
               refresh_schedule=opts["refresh_schedule"], inverse=opts["inverse"],
               damping_split=opts["damping_split"], kl_clip=opts["kl_clip"], bn_fisher=opts["bn_fisher"],
               batch_averaged=opts["batch_averaged"], nesterov=opts["nesterov"],
               grad_allgather=opts["grad_allgather"], factor_dtype_bytes=opts["factor_dtype_bytes"], comm=comm)


def build_schedule(name: str, *, global_batch: int, iterations_per_epoch: float, epochs: float,
                   warmup_epochs: float = 5.0, options: Mapping[str, Any] | None = None,
                   source: str = "--optimizer") -> LRSchedule:
    """Per-iteration learning rate of optimizer ``name``: linear scaling + gradual warmup + decay.

    Peak = ``lr_peak`` if set, else ``linear_scaled_lr(global_batch, lr_base, lr_base_batch)``; the warmup
    starts at ``lr_warmup_start`` (default ``lr_base``, Goyal et al.); decay ``lr_decay`` (default: step for
    SGD, poly power 2 for LARS and K-FAC).
    """
    key = _lookup(name, source)
    opts = resolve_options(key, options, source)
    _number(source, "batch", global_batch, minimum=1.0)
    _number(source, "iterations_per_epoch", iterations_per_epoch, minimum=0.0, inclusive=False)
    _number(source, "epochs", epochs, minimum=0.0, inclusive=False)
    _number(source, "warmup_epochs", warmup_epochs, minimum=0.0)
    peak = opts["lr_peak"] if opts["lr_peak"] is not None else \
        linear_scaled_lr(global_batch, opts["lr_base"], opts["lr_base_batch"])
    start = opts["lr_warmup_start"] if opts["lr_warmup_start"] is not None else opts["lr_base"]
    return LRSchedule(peak_lr=peak, iterations_per_epoch=float(iterations_per_epoch), epochs=float(epochs),
                      warmup_epochs=float(warmup_epochs), warmup_start_lr=start,
                      decay=opts["lr_decay"] or OPTIMIZERS[key].default_decay, milestones=opts["lr_milestones"],
                      gamma=opts["lr_gamma"], power=opts["lr_power"], end_lr=opts["lr_end"])


def set_lr(optimizer: Any, lr: float) -> None:
    """Set ``lr`` in every parameter group of ``optimizer``."""
    for group in optimizer.param_groups:
        group["lr"] = float(lr)


def __getattr__(name: str) -> Any:  # lazy exports: keep torch out of `import executor.optim`
    if name == "LARS":
        return _load(OPTIMIZERS["lars"].target)
    if name == "KFAC":
        return _load(OPTIMIZERS["kfac"].target)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
