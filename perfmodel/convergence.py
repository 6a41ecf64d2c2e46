"""The convergence model: how many epochs a training run needs to reach a target top-1 accuracy, as a
function of the global batch and of the optimizer family; and its inverse, the accuracy reached after a
given number of epochs.

Form
----
The critical-batch model of McCandlish et al. 2018 ("An Empirical Model of Large-Batch Training"): the
number of training examples needed to reach a target is ``E = E_min (1 + B / B_noise)``. In epochs, per
optimizer family (``"sgd"`` = momentum SGD with linear scaling and gradual warmup, ``"lars"``, ``"kfac"``)::

    epochs(B, t) = e_min(t) * (1 + B / b_crit)                                  [epochs]
    e_min(t)     = e0 * ((a_max - a_ref) / (a_max - t)) ** k                    [epochs]

and the inverse (closed form, exactly consistent with the above)::

    top1_at(B, E) = a_max - (a_max - a_ref) * (e0 * (1 + B / b_crit) / E) ** (1 / k)

``t`` and ``a_*`` are top-1 accuracies in percent; ``B`` is the global batch in images; ``e0`` is the
number of epochs a small batch (``B << b_crit``) needs to reach the reference accuracy ``a_ref``;
``a_max`` is the accuracy ceiling of the model/optimizer (targets at or above it are unreachable at any
batch); ``k > 0`` sets how fast the epochs grow as the target approaches the ceiling; ``b_crit`` is the
critical batch (McCandlish's gradient noise scale ``B_noise``). In steps ``S = E N / B`` (``N`` training
images) the same model reads ``S = S_min (1 + b_crit / B)`` with ``S_min = e_min N / b_crit``, so
``(S / S_min - 1)(E / E_min - 1) = 1`` at every batch.

Why this form (assumptions, each an approximation)
--------------------------------------------------
- *Power law in the distance to a ceiling.* The gap to the asymptotic accuracy shrinks as a power of the
  (noise-free) training budget: ``a_max - t ∝ (E / (1 + B / b_crit)) ** (-1/k)``. Three parameters
  (``e0``, ``a_max``, ``k``) give the asymptote the model needs, and the fit on the public ResNet-50 SGD
  rows puts the ceiling at about 77 % top-1, which is what Codreanu et al. report for long (90-120 epoch)
  SGD runs of the unmodified ResNet-50. Far below the data (a few epochs) the power law is an
  extrapolation; :func:`top1_at` clips its result at 0 %.
- *Constant critical batch per optimizer.* A target-dependent ``b_crit(t) = b0 g(t) ** m`` was tried on
  the SGD rows: the extra exponent runs to its bound while the ceiling drifts to an implausible 94 % and
  the top-1 RMSE improves by only 0.02 points, so the data do not support it. McCandlish et al. observe
  that ``B_noise`` grows as training progresses; this model averages that over the targets of the data
  (about 66-76.5 % for SGD, 75-76.3 % for LARS and K-FAC).
- *The batch only costs epochs, never the ceiling.* Every batch reaches any ``t < a_max`` given enough
  epochs (``1 + B / b_crit`` times the small-batch epochs); Goyal et al.'s accuracy loss at 16k-64k with
  90 epochs is, in this model, the price of a fixed 90-epoch budget at a batch above ``b_crit``.
- *Optimizer families share the network's ceiling.* LARS and K-FAC data are censored at their targets
  (MLPerf runs stop at 75.9 %, the K-FAC results are all "epochs to 75 %"), so they cannot identify
  ``a_max`` and ``k``; their fits inherit both from SGD and fit ``e0`` and ``b_crit`` only. The optimizer
  changes the speed (``e_min``) and the critical batch, not the network's ceiling.
- *Recipe differences are noise.* Rows from different recipes of the same family (MLPerf ResNet-50 v1.5
  with label smoothing, Intel Caffe, Goyal's Caffe2) are fitted together; the residuals (RMSE about
  0.3-0.4 top-1 points, 5-10 % in epochs) are the spread between recipes.

The fitted parameters, the residuals and the list of published rows each fit uses live in
``perfmodel/data/convergence.toml``, written by ``scripts/fit_convergence.py`` from the package's copy of
the published results (``perfmodel/data/published_results.csv``).

Collapsed Ensemble (Codreanu et al. 2017) is a *schedule* rather than a convergence law: see
:func:`collapsed_ensemble_epochs`.
"""
from __future__ import annotations

import functools
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from hardware.errors import ConfigError, SpecError

__all__ = [
    "OPTIMIZER_FAMILIES", "IMAGENET_TRAIN_IMAGES", "DATA_DIR", "CONVERGENCE_TOML", "PUBLISHED_CSV",
    "ConvergenceRecord", "ConvergenceParams", "CollapsedEnsembleSchedule",
    "normalize_model", "normalize_optimizer", "load_convergence", "get_convergence", "reference_top1",
    "epochs_to_target", "top1_at", "min_epochs", "critical_batch", "steps_to_target", "min_steps",
    "fit_convergence", "convergence_residuals", "collapsed_ensemble_epochs",
]

#: optimizer families the ResNet-50 fit covers
OPTIMIZER_FAMILIES: tuple[str, ...] = ("sgd", "lars", "kfac")
#: ImageNet-1k training images (PAPERS.md); the default dataset size for step counts
IMAGENET_TRAIN_IMAGES: int = 1_281_167
DATA_DIR: Path = Path(__file__).resolve().parent / "data"
#: fitted parameters (written by scripts/fit_convergence.py)
CONVERGENCE_TOML: Path = DATA_DIR / "convergence.toml"
#: the package's copy of the published results the fit uses
PUBLISHED_CSV: Path = DATA_DIR / "published_results.csv"

#: names of the fittable parameters (keys of ``fixed`` / ``initial`` in :func:`fit_convergence`)
_PARAM_NAMES: tuple[str, ...] = ("e0_epochs", "a_max", "k", "b_crit")


# ---- data types --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvergenceRecord:
    """One observed training run: global ``batch`` (images), ``epochs`` trained, ``top1`` reached (%)."""

    batch: float
    epochs: float
    top1: float


@dataclass(frozen=True)
class ConvergenceParams:
    """Fitted convergence law of one model and optimizer family (see the module docstring for the form).

    Parameters
    ----------
    e0_epochs : float
        Epochs a small batch (``B << b_crit``) needs to reach ``a_ref`` (> 0).
    a_ref : float
        Reference top-1 accuracy, percent; only anchors ``e0_epochs`` (must be < ``a_max``).
    a_max : float
        Accuracy ceiling, percent, in (0, 100]; targets at or above it are unreachable.
    k : float
        Exponent of the epochs' growth towards the ceiling (> 0).
    b_crit : float
        Critical batch, images (> 0; ``inf`` means the batch costs no extra epochs).
    model, optimizer : str
        Labels used in messages (``"resnet50"``, ``"sgd"``); empty for ad-hoc fits.
    """

    e0_epochs: float
    a_ref: float
    a_max: float
    k: float
    b_crit: float
    model: str = ""
    optimizer: str = ""

    def __post_init__(self):
        src = f"convergence params {self.label}"
        for name in ("e0_epochs", "a_ref", "a_max", "k", "b_crit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise SpecError(src, name, value, "must be a number")
            object.__setattr__(self, name, float(value))
        if not (math.isfinite(self.e0_epochs) and self.e0_epochs > 0):
            raise SpecError(src, "e0_epochs", self.e0_epochs, "must be > 0 (epochs)")
        if not (math.isfinite(self.k) and self.k > 0):
            raise SpecError(src, "k", self.k, "must be > 0")
        if not self.b_crit > 0:
            raise SpecError(src, "b_crit", self.b_crit, "must be > 0 (images; inf allowed)")
        if not (math.isfinite(self.a_max) and 0 < self.a_max <= 100):
            raise SpecError(src, "a_max", self.a_max, "must be a percentage in (0, 100]")
        if not (math.isfinite(self.a_ref) and self.a_ref < self.a_max):
            raise SpecError(src, "a_ref", self.a_ref, f"must be below the ceiling a_max = {self.a_max}")

    @property
    def label(self) -> str:
        """``"model/optimizer"`` (or whichever of the two is set, or ``"(unnamed)"``)."""
        return "/".join(x for x in (self.model, self.optimizer) if x) or "(unnamed)"

    def to_dict(self) -> dict:
        """Plain dict of the fields (JSON-friendly)."""
        return {"model": self.model, "optimizer": self.optimizer, "e0_epochs": self.e0_epochs,
                "a_ref": self.a_ref, "a_max": self.a_max, "k": self.k, "b_crit": self.b_crit}


class CollapsedEnsembleSchedule(NamedTuple):
    """Result of :func:`collapsed_ensemble_epochs` (unpacks as ``total, snapshots, inference_factor``)."""

    total_epochs: float
    snapshots: int
    inference_cost_factor: float


# ---- names and loading --------------------------------------------------------------------------------
def normalize_model(model: str) -> str:
    """``"ResNet-50"`` -> ``"resnet50"``: lower case, ``-``, ``_`` and spaces removed."""
    return str(model).strip().lower().replace("-", "").replace("_", "").replace(" ", "")


def normalize_optimizer(optimizer: str) -> str:
    """``"K-FAC"`` -> ``"kfac"``: lower case, ``-``, ``_`` and spaces removed."""
    return str(optimizer).strip().lower().replace("-", "").replace("_", "").replace(" ", "")


def _num(src: str, table: Mapping, key: str, where: str) -> float:
    value = table.get(key)
    if value is None:
        raise SpecError(src, f"{where}.{key}", None, "missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(src, f"{where}.{key}", value, "must be a number")
    return float(value)


def _load_file(path: str) -> dict:
    try:
        mtime = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        raise SpecError(path, "<file>", None, "convergence parameter file not found") from None
    return _load_file_cached(path, mtime)


@functools.lru_cache(maxsize=8)
def _load_file_cached(path: str, mtime_ns: int) -> dict:
    """Parsed TOML, cached per (path, modification time) so a rewritten file is re-read."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise SpecError(path, "<file>", None, "convergence parameter file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(path, "<file>", None, f"not valid TOML ({exc})") from None


def _model_table(model: str, path: Path | str | None) -> tuple[str, str, Mapping]:
    src = str(path or CONVERGENCE_TOML)
    data = _load_file(src)
    name = normalize_model(model)
    table = data.get(name)
    if not isinstance(table, Mapping) or "optimizers" not in table:
        known = sorted(k for k, v in data.items() if isinstance(v, Mapping) and "optimizers" in v)
        raise ConfigError("--model", "model", model,
                          f"no fitted convergence model (known: {', '.join(known) or 'none'}; file {src})")
    return src, name, table


def load_convergence(model: str = "resnet50", path: Path | str | None = None) -> dict[str, ConvergenceParams]:
    """Fitted convergence parameters of ``model``, one entry per optimizer family.

    Parameters
    ----------
    model : str
        Model name (``"resnet50"``; ``"ResNet-50"`` works too).
    path : path, optional
        Parameter file; default ``perfmodel/data/convergence.toml``.

    Returns
    -------
    dict
        Optimizer name (``"sgd"``, ``"lars"``, ``"kfac"``) -> :class:`ConvergenceParams`.

    Raises
    ------
    ConfigError
        Unknown model (source ``--model``).
    SpecError
        Malformed parameter file (names the file and the key).
    """
    src, name, table = _model_table(model, path)
    out: dict[str, ConvergenceParams] = {}
    for opt in table["optimizers"]:
        sub = table.get(opt)
        if not isinstance(sub, Mapping):
            raise SpecError(src, f"{name}.{opt}", None, "optimizer listed in 'optimizers' has no table")
        where = f"{name}.{opt}"
        out[opt] = ConvergenceParams(
            e0_epochs=_num(src, sub, "e0_epochs", where), a_ref=_num(src, sub, "a_ref_top1", where),
            a_max=_num(src, sub, "a_max_top1", where), k=_num(src, sub, "k", where),
            b_crit=_num(src, sub, "b_crit_images", where), model=name, optimizer=opt)
    return out


def get_convergence(optimizer: str, model: str = "resnet50",
                    path: Path | str | None = None) -> ConvergenceParams:
    """Parameters of one optimizer family; unknown names raise :class:`ConfigError` (source ``--optimizer``)."""
    params = load_convergence(model, path)
    opt = normalize_optimizer(optimizer)
    if opt not in params:
        raise ConfigError("--optimizer", "optimizer", optimizer,
                          f"no convergence model for this optimizer with {normalize_model(model)} "
                          f"(known: {', '.join(sorted(params))})")
    return params[opt]


def reference_top1(model: str = "resnet50", path: Path | str | None = None) -> float:
    """Default target accuracy (percent) of ``model`` when a run names neither epochs nor a target
    (ResNet-50: 75.9 %, the MLPerf Training v0.6 target)."""
    src, name, table = _model_table(model, path)
    return _num(src, table, "reference_top1", name)


def _resolve(params: ConvergenceParams | str, model: str) -> ConvergenceParams:
    if isinstance(params, ConvergenceParams):
        return params
    if isinstance(params, str):
        return get_convergence(params, model)
    raise ConfigError("--optimizer", "optimizer", params, "expected an optimizer name or ConvergenceParams")


# ---- the law and its inverse ---------------------------------------------------------------------------
def _out(x: np.ndarray, scalar: bool):
    return float(x) if scalar else x


def _check_batch(batch) -> np.ndarray:
    b = np.asarray(batch, dtype=float)
    bad = ~(np.isfinite(b) & (b > 0))
    if np.any(bad):
        raise ConfigError("--batch", "batch", _first(batch, bad), "must be a finite number > 0 (global batch, images)")
    return b


def _first(value, bad: np.ndarray):
    """The first offending element of ``value`` (``bad`` has its shape), for error messages."""
    arr = np.asarray(value)
    if arr.ndim == 0:
        return arr.item()
    return arr.reshape(-1)[int(np.argmax(bad.reshape(-1)))].item()


def _check_target(p: ConvergenceParams, target, b: np.ndarray | None) -> np.ndarray:
    t = np.asarray(target, dtype=float)
    bad = ~((t > 0) & (t < 100))
    if np.any(bad):
        raise ConfigError("--target-top1", "target_top1", _first(target, bad),
                          "must be a top-1 accuracy in percent, in (0, 100)")
    unreachable = t >= p.a_max
    if np.any(unreachable):
        tt, bb = np.broadcast_arrays(t, np.asarray(np.nan if b is None else b, dtype=float))
        i = int(np.argmax(np.broadcast_to(unreachable, tt.shape).reshape(-1)))
        value, at = tt.reshape(-1)[i].item(), bb.reshape(-1)[i].item()
        where = "any batch" if b is None else f"batch {at:g}"
        raise ConfigError("--target-top1", "target_top1", value,
                          f"unreachable with {p.optimizer or p.label} at {where}: ceiling "
                          f"{p.a_max:.2f}% top-1 for {p.label} (the model's asymptote, the same at every "
                          f"batch); choose a target below it")
    return t


def min_epochs(params: ConvergenceParams | str, target_top1, *, model: str = "resnet50"):
    """``E_min(t) = e0 ((a_max - a_ref) / (a_max - t)) ** k``: epochs to ``target_top1`` (%) in the
    small-batch limit (float or array)."""
    p = _resolve(params, model)
    scalar = np.ndim(target_top1) == 0
    t = _check_target(p, target_top1, None)
    return _out(p.e0_epochs * ((p.a_max - p.a_ref) / (p.a_max - t)) ** p.k, scalar)


def critical_batch(params: ConvergenceParams | str, target_top1=None, *, model: str = "resnet50") -> float:
    """Critical batch ``b_crit`` (images); the same for every target in this model (argument accepted for
    a future target-dependent form)."""
    return _resolve(params, model).b_crit


def epochs_to_target(params: ConvergenceParams | str, batch, target_top1, *, model: str = "resnet50"):
    """Epochs needed to reach ``target_top1`` (%) at global ``batch`` (images).

    ``epochs = e0 ((a_max - a_ref) / (a_max - t)) ** k * (1 + B / b_crit)``; vectorised, ``batch`` and
    ``target_top1`` broadcast against each other. ``params`` is a :class:`ConvergenceParams` or an
    optimizer name looked up for ``model``.

    Returns
    -------
    float or numpy.ndarray
        Epochs (float when both inputs are scalars).

    Raises
    ------
    ConfigError
        Unknown optimizer (``--optimizer``); batch <= 0 (``--batch``); target outside (0, 100) or at/above
        the ceiling (``--target-top1``, "unreachable with <opt> at batch <B>: ceiling <a_max>% ...").
    """
    p = _resolve(params, model)
    scalar = np.ndim(batch) == 0 and np.ndim(target_top1) == 0
    b = _check_batch(batch)
    t = _check_target(p, target_top1, b)
    e = p.e0_epochs * ((p.a_max - p.a_ref) / (p.a_max - t)) ** p.k * (1.0 + b / p.b_crit)
    return _out(np.asarray(e, dtype=float), scalar)


def top1_at(params: ConvergenceParams | str, batch, epochs, *, model: str = "resnet50"):
    """Top-1 accuracy (%) reached after ``epochs`` at global ``batch``: the inverse of
    :func:`epochs_to_target`.

    ``top1 = a_max - (a_max - a_ref) (e0 (1 + B / b_crit) / epochs) ** (1 / k)``, clipped below at 0 %
    (far below the data the power law is meaningless). Vectorised like :func:`epochs_to_target`.
    Raises :class:`ConfigError` for an unknown optimizer, batch <= 0 or epochs <= 0.
    """
    p = _resolve(params, model)
    scalar = np.ndim(batch) == 0 and np.ndim(epochs) == 0
    b = _check_batch(batch)
    e = np.asarray(epochs, dtype=float)
    bad = ~(e > 0) | ~np.isfinite(e)
    if np.any(bad):
        raise ConfigError("--epochs", "epochs", _first(epochs, bad), "must be a finite number > 0")
    t = _top1_raw(p.e0_epochs, p.a_ref, p.a_max, p.k, p.b_crit, b, e)
    return _out(np.maximum(t, 0.0), scalar)


def _top1_raw(e0, a_ref, a_max, k, b_crit, b, e) -> np.ndarray:
    """Unclipped inverse; the exponent is bounded so that absurd parameters give large finite numbers."""
    log_ratio = (math.log(e0) + np.log1p(b / b_crit) - np.log(e)) / k
    return a_max - (a_max - a_ref) * np.exp(np.clip(log_ratio, -700.0, 700.0))


def steps_to_target(params: ConvergenceParams | str, batch, target_top1,
                    dataset_size: float = IMAGENET_TRAIN_IMAGES, *, model: str = "resnet50"):
    """Optimizer steps to ``target_top1``: ``epochs * dataset_size / batch`` (float or array)."""
    scalar = np.ndim(batch) == 0 and np.ndim(target_top1) == 0
    e = epochs_to_target(params, batch, target_top1, model=model)
    return _out(np.asarray(e) * float(dataset_size) / np.asarray(batch, dtype=float), scalar)


def min_steps(params: ConvergenceParams | str, target_top1,
              dataset_size: float = IMAGENET_TRAIN_IMAGES, *, model: str = "resnet50"):
    """McCandlish's ``S_min = E_min N / b_crit``: the steps to ``target_top1`` in the large-batch limit."""
    p = _resolve(params, model)
    scalar = np.ndim(target_top1) == 0
    emin = np.asarray(min_epochs(p, target_top1))
    return _out(emin * float(dataset_size) / p.b_crit, scalar)


# ---- fitting -------------------------------------------------------------------------------------------
def _records_arrays(records: Sequence[ConvergenceRecord]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(records) == 0:
        raise ConfigError("fit_convergence", "records", [], "need at least one record")
    cols = []
    for name, ok, why in (("batch", lambda x: x > 0, "must be > 0"), ("epochs", lambda x: x > 0, "must be > 0"),
                          ("top1", lambda x: 0 < x < 100, "must be a percentage in (0, 100)")):
        col = []
        for i, r in enumerate(records):
            v = getattr(r, name, None)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(float(v)) or not ok(float(v)):
                raise ConfigError("fit_convergence", f"records[{i}].{name}", v, why)
            col.append(float(v))
        cols.append(np.array(col))
    return cols[0], cols[1], cols[2]


def fit_convergence(records: Sequence[ConvergenceRecord], *, a_ref: float | None = None,
                    fixed: Mapping[str, float] | None = None, initial: Mapping[str, float] | None = None,
                    model: str = "", optimizer: str = "", space: str = "top1") -> ConvergenceParams:
    """Fit the convergence law to observed runs with ``scipy.optimize.least_squares``.

    The residual of a record is ``top1_at(B, E) - top1`` in top-1 points (unclipped): it stays finite
    when a trial ceiling lies below an observation, and it is the quantity fixed-budget sweeps (e.g.
    Goyal et al.'s 90-epoch runs) measure. ``e0_epochs`` and ``b_crit`` are fitted on a log scale, ``k``
    too; ``a_max`` is bounded to ``[max(top1), 100]`` (every observed accuracy was reached, so the
    ceiling lies above it). A small fixed grid of starting points is tried and the lowest cost kept, so
    the result is deterministic.

    Parameters
    ----------
    records : sequence of ConvergenceRecord
        Observed (batch, epochs, top1) triples.
    a_ref : float, optional
        Reference accuracy that anchors ``e0_epochs`` (default: the median observed top-1).
    fixed : mapping, optional
        Parameters held at given values: any of ``e0_epochs``, ``a_max``, ``k``, ``b_crit``.
    initial : mapping, optional
        Starting values for free parameters (replaces the starting grid for that parameter).
    model, optimizer : str
        Labels stored in the result.
    space : {"top1", "epochs"}
        Where the residual is taken. ``top1`` (default): ``top1_at(B, E) - top1`` in points, as above.
        ``epochs``: ``log(epochs_to_target(B, top1) / E)``, for records of the form "level t was first
        reached after E epochs" when the prediction wanted is epochs to a level (time to accuracy): in top-1
        space a ceiling just above the highest level costs almost nothing, yet it sends the epochs to that
        level towards infinity; in epoch space it is a large residual. The ceiling is then bounded strictly
        above every observed level (by 0.1 point).

    Returns
    -------
    ConvergenceParams
    """
    if space not in ("top1", "epochs"):
        raise ConfigError("fit_convergence", "space", space, "must be 'top1' or 'epochs'")
    B, E, T = _records_arrays(records)
    fixed = dict(fixed or {})
    initial = dict(initial or {})
    for key in list(fixed) + list(initial):
        if key not in _PARAM_NAMES:
            raise ConfigError("fit_convergence", "fixed/initial", key,
                              f"unknown parameter (known: {', '.join(_PARAM_NAMES)})")
    a_ref = float(np.median(T)) if a_ref is None else float(a_ref)
    a_lo = max(float(T.max()) + (0.1 if space == "epochs" else 0.0), a_ref + 1e-6)
    if "a_max" in fixed and not fixed["a_max"] > a_ref:
        raise ConfigError("fit_convergence", "fixed.a_max", fixed["a_max"], f"must exceed a_ref = {a_ref}")
    if space == "epochs" and "a_max" in fixed and not fixed["a_max"] > float(T.max()):
        raise ConfigError("fit_convergence", "fixed.a_max", fixed["a_max"],
                          f"must exceed every observed level ({float(T.max()):g}) to fit in epoch space")
    if a_lo >= 100:
        raise ConfigError("fit_convergence", "records.top1", float(T.max()), "leaves no room for a ceiling <= 100")
    free = [n for n in _PARAM_NAMES if n not in fixed]
    if len(free) > len(B):
        raise ConfigError("fit_convergence", "records", len(B),
                          f"{len(free)} free parameters need at least as many records")

    # internal coordinates: log e0, a_max, log k, log b_crit
    def to_x(name, v):
        return v if name == "a_max" else math.log(v)

    def from_x(name, x):
        return x if name == "a_max" else math.exp(x)

    bounds = {"e0_epochs": (math.log(1e-6), math.log(1e6)), "a_max": (a_lo, 100.0),
              "k": (math.log(1e-3), math.log(50.0)),
              "b_crit": (math.log(1e-3 * B.min()), math.log(1e6 * B.max()))}
    med_b = float(np.exp(np.mean(np.log(B))))
    spread = max(float(T.max() - T.min()), 0.5)
    grid = {"e0_epochs": [float(np.median(E))],
            "a_max": [min(a_lo + d * spread, 100 - 1e-9) for d in (0.2, 1.0)],
            "k": [0.3, 1.0],
            "b_crit": [med_b * f for f in (1.0, 8.0)]}
    for n, v in initial.items():
        grid[n] = [float(v)]

    def unpack(x) -> dict:
        vals = dict(fixed)
        vals.update({n: from_x(n, xi) for n, xi in zip(free, x)})
        return vals

    def residual(x):
        v = unpack(x)
        if space == "epochs":
            return (math.log(v["e0_epochs"]) + v["k"] * (math.log(v["a_max"] - a_ref) - np.log(v["a_max"] - T))
                    + np.log1p(B / v["b_crit"]) - np.log(E))
        return _top1_raw(v["e0_epochs"], a_ref, v["a_max"], v["k"], v["b_crit"], B, E) - T

    from scipy.optimize import least_squares  # local: scipy is only needed to fit

    lo = np.array([bounds[n][0] for n in free])
    hi = np.array([bounds[n][1] for n in free])
    best = None
    if free:
        starts = [[]]
        for n in free:
            starts = [s + [to_x(n, g)] for s in starts for g in grid[n]]
        for s in starts:
            x0 = np.clip(np.array(s, dtype=float), lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))
            sol = least_squares(residual, x0, bounds=(lo, hi), x_scale="jac", ftol=1e-14, xtol=1e-14,
                                gtol=1e-14, max_nfev=20000)
            if best is None or sol.cost < best.cost - 1e-15:
                best = sol
        vals = unpack(best.x)
    else:
        vals = dict(fixed)
    return ConvergenceParams(e0_epochs=vals["e0_epochs"], a_ref=a_ref, a_max=vals["a_max"], k=vals["k"],
                             b_crit=vals["b_crit"], model=model, optimizer=optimizer)


def convergence_residuals(params: ConvergenceParams, records: Sequence[ConvergenceRecord]) -> dict:
    """Fit diagnostics of ``params`` on ``records``.

    Returns
    -------
    dict
        ``residual_top1`` (array, ``top1_at(B, E) - top1``, points, unclipped), ``rmse_top1``,
        ``max_abs_top1``; ``pred_epochs`` (array, ``epochs_to_target(B, top1)``, ``inf`` where the
        observation is at or above the ceiling), ``rel_epochs`` (``pred/observed - 1``) and
        ``rmse_epochs_rel`` (RMS of ``log(pred/observed)``, over the finite ones).
    """
    p = params
    B, E, T = _records_arrays(records)
    res = _top1_raw(p.e0_epochs, p.a_ref, p.a_max, p.k, p.b_crit, B, E) - T
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.where(T < p.a_max, p.a_max - T, np.nan)
        pred = p.e0_epochs * ((p.a_max - p.a_ref) / gap) ** p.k * (1 + B / p.b_crit)
    pred = np.where(np.isnan(pred), np.inf, pred)
    finite = np.isfinite(pred)
    log_err = np.log(pred[finite] / E[finite])
    return {"residual_top1": res, "rmse_top1": float(np.sqrt(np.mean(res ** 2))),
            "max_abs_top1": float(np.max(np.abs(res))), "pred_epochs": pred, "rel_epochs": pred / E - 1,
            "rmse_epochs_rel": float(np.sqrt(np.mean(log_err ** 2))) if log_err.size else float("nan")}


# ---- Collapsed Ensemble schedule -----------------------------------------------------------------------
def collapsed_ensemble_epochs(base_epochs: float, cycles: int, collapse_epochs: float) -> CollapsedEnsembleSchedule:
    """Epoch count and inference cost of a Collapsed Ensemble schedule (Codreanu et al. 2017, PAPERS.md §3).

    Schedule model: a regular run of ``base_epochs`` is followed by ``cycles`` short "collapse" cycles of
    ``collapse_epochs`` each (learning rate re-warmed, then decayed to zero); the end of each cycle is a
    snapshot, and the ensemble averages the predictions of all snapshots. The authors' 448-node run is
    ``base_epochs=85, cycles=1, collapse_epochs=5`` (90 epochs, 1 snapshot). With ``cycles = 0`` the run
    is plain training: one model, inference factor 1. This is a cost model of the schedule only: it
    does not predict the ensemble's accuracy (77.5 % reported for an unmodified ResNet-50).

    Returns
    -------
    CollapsedEnsembleSchedule
        ``total_epochs = base_epochs + cycles * collapse_epochs`` (epochs to charge to training),
        ``snapshots = max(cycles, 1)`` (models in the ensemble) and ``inference_cost_factor = snapshots``
        (each evaluated image runs through every snapshot).
    """
    src = "collapsed_ensemble"
    if isinstance(base_epochs, bool) or not isinstance(base_epochs, (int, float)) \
            or not (math.isfinite(base_epochs) and base_epochs > 0):
        raise ConfigError(src, "base_epochs", base_epochs, "must be a finite number of epochs > 0")
    if isinstance(cycles, bool) or not isinstance(cycles, (int, np.integer)) or cycles < 0:
        raise ConfigError(src, "cycles", cycles, "must be an integer >= 0")
    if isinstance(collapse_epochs, bool) or not isinstance(collapse_epochs, (int, float)) \
            or not math.isfinite(collapse_epochs) or collapse_epochs < 0 or (cycles > 0 and collapse_epochs == 0):
        raise ConfigError(src, "collapse_epochs", collapse_epochs,
                          "must be a finite number of epochs, > 0 when cycles > 0")
    snapshots = max(int(cycles), 1)
    return CollapsedEnsembleSchedule(total_epochs=float(base_epochs) + int(cycles) * float(collapse_epochs),
                                     snapshots=snapshots, inference_cost_factor=float(snapshots))
