"""Per-rank, per-iteration compute variability: seeded jitter and stragglers, and the maximum over ranks.

Model
-----
Rank ``r`` computes iteration ``i`` (its forward and backward passes) in ``X[r, i] * t`` seconds, where ``t``
is the analytic compute time and the factors ``X`` are independent and identically distributed::

    X = J * S
    J = 1 + cv * Z,          Z ~ N(0, 1)        ("normal"; truncated below at MIN_FACTOR)
    J = exp(mu + sigma Z),   sigma^2 = ln(1 + cv^2), mu = -sigma^2 / 2   ("lognormal": mean 1, CV cv)
    J = 1                                       ("none")
    S = slowdown with probability p, else 1     (stragglers)

A synchronous collective waits for the slowest rank, so what shapes the iteration is
``M = max_r X[r, i]``, which is sampled *directly* (no per-rank draws) for thousands of ranks:

- the number of stragglers among ``N`` ranks is ``K ~ Binomial(N, p)``;
- the maximum of ``m`` iid draws of ``J`` is ``F_J^-1(U^(1/m))`` with ``U`` uniform (order statistics), computed
  through the survival function ``q = 1 - U^(1/m) = -expm1(log(U)/m)`` so that it keeps full precision for
  ``m`` in the millions;
- ``M = max(max of N - K draws of J, slowdown * max of K draws of J)``.

This is exact for iid factors. APPROXIMATIONS, marked: one factor per rank and iteration scales all of
that rank's forward and backward layers alike (no per-layer noise, which would partly average out); the
optimizer step, data loading and communication are not jittered; the normal jitter is truncated at
``MIN_FACTOR`` (irrelevant for the maximum of two or more draws at the CVs of interest).

All randomness comes from one :class:`numpy.random.Generator` that the caller seeds, so the same seed gives
the same draws.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import integrate, special

from hardware.errors import ConfigError

__all__ = ["DISTRIBUTIONS", "MIN_FACTOR", "Variability", "NO_VARIABILITY"]

#: jitter distributions
DISTRIBUTIONS = ("none", "normal", "lognormal")
#: lower truncation of a normal jitter factor (a rank never computes more than 100x faster than nominal)
MIN_FACTOR = 0.01


@dataclass(frozen=True)
class Variability:
    """Distribution of the per-rank, per-iteration compute factor ``X = J * S`` (see the module docstring).

    Attributes
    ----------
    distribution : {"none", "normal", "lognormal"}
        Jitter distribution of ``J``.
    cv : float
        Coefficient of variation of ``J`` (standard deviation / mean), >= 0.
    straggler_prob : float
        Probability that a rank is a straggler in an iteration, in [0, 1].
    straggler_slowdown : float
        Compute multiplier of a straggler, >= 1.
    source : str
        Where the values came from (named in error messages).
    """

    distribution: str = "none"
    cv: float = 0.0
    straggler_prob: float = 0.0
    straggler_slowdown: float = 1.0
    source: str = "simulation"

    def __post_init__(self) -> None:
        src = self.source
        if self.distribution not in DISTRIBUTIONS:
            raise ConfigError(src, "jitter", self.distribution,
                              f"unknown distribution; known: {', '.join(DISTRIBUTIONS)}")
        for name, value in (("jitter_cv", self.cv), ("straggler_prob", self.straggler_prob),
                            ("straggler_slowdown", self.straggler_slowdown)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(src, name, value, "must be a finite number")
        if self.cv < 0:
            raise ConfigError(src, "jitter_cv", self.cv, "must be >= 0")
        if self.cv > 0 and self.distribution == "none":
            raise ConfigError(src, "jitter_cv", self.cv, "needs a jitter distribution (normal or lognormal)")
        if not 0.0 <= self.straggler_prob <= 1.0:
            raise ConfigError(src, "straggler_prob", self.straggler_prob, "must be a probability in [0, 1]")
        if self.straggler_slowdown < 1.0:
            raise ConfigError(src, "straggler_slowdown", self.straggler_slowdown, "must be >= 1 (a slowdown)")
        object.__setattr__(self, "cv", float(self.cv))
        object.__setattr__(self, "straggler_prob", float(self.straggler_prob))
        object.__setattr__(self, "straggler_slowdown", float(self.straggler_slowdown))

    @classmethod
    def from_options(cls, cv: float = 0.0, distribution: str | None = None, straggler_prob: float = 0.0,
                     straggler_slowdown: float = 1.0, source: str = "simulation") -> "Variability":
        """Build from flag-like values: ``distribution`` defaults to ``"normal"`` when ``cv > 0``."""
        if distribution is None:
            distribution = "normal" if (isinstance(cv, (int, float)) and cv > 0) else "none"
        return cls(distribution, cv, straggler_prob, straggler_slowdown, source)

    # ---- properties ------------------------------------------------------------------------------------
    @property
    def has_jitter(self) -> bool:
        return self.distribution != "none" and self.cv > 0

    @property
    def has_stragglers(self) -> bool:
        return self.straggler_prob > 0 and self.straggler_slowdown > 1

    @property
    def enabled(self) -> bool:
        """Whether any factor differs from 1."""
        return self.has_jitter or self.has_stragglers

    @property
    def mean_factor(self) -> float:
        """``E[X]`` (the average rank's factor): ``E[J] * (1 + p (s - 1))`` (``E[J] = 1`` up to truncation)."""
        return 1.0 + self.straggler_prob * (self.straggler_slowdown - 1.0)

    def to_dict(self) -> dict:
        return {"distribution": self.distribution, "cv": self.cv, "straggler_prob": self.straggler_prob,
                "straggler_slowdown": self.straggler_slowdown}

    # ---- the jitter factor J ------------------------------------------------------------------------------
    def _lognormal_params(self) -> tuple[float, float]:
        sigma = math.sqrt(math.log1p(self.cv ** 2))
        return -0.5 * sigma * sigma, sigma

    def _j_from_z(self, z):
        """Jitter factor for standard-normal quantile(s) ``z``."""
        z = np.asarray(z, dtype=float)
        if not self.has_jitter:
            return np.ones_like(z)
        if self.distribution == "normal":
            return np.maximum(1.0 + self.cv * z, MIN_FACTOR)
        mu, sigma = self._lognormal_params()
        return np.exp(mu + sigma * z)

    def j_median(self) -> float:
        """Median of ``J``."""
        return float(self._j_from_z(0.0))

    def j_cdf(self, x):
        """CDF of ``J`` at ``x`` (a step at 1 without jitter)."""
        x = np.asarray(x, dtype=float)
        if not self.has_jitter:
            return (x >= 1.0).astype(float)
        if self.distribution == "normal":
            return np.where(x < MIN_FACTOR, 0.0, special.ndtr((x - 1.0) / self.cv))
        mu, sigma = self._lognormal_params()
        with np.errstate(divide="ignore"):
            return special.ndtr((np.log(np.maximum(x, 1e-300)) - mu) / sigma)

    def _max_j(self, rng: np.random.Generator, m: np.ndarray) -> np.ndarray:
        """Maximum of ``m`` iid draws of ``J`` (elementwise over the integer array ``m >= 1``)."""
        m = np.asarray(m, dtype=float)
        u = rng.random(m.shape)
        if not self.has_jitter:
            return np.ones_like(m)
        # q = 1 - U^(1/m): survival probability of the maximum's quantile; z = isf_N(q) = -ndtri(q)
        q = -np.expm1(np.log(np.maximum(u, 1e-300)) / np.maximum(m, 1.0))
        q = np.clip(q, 1e-300, 1.0 - 1e-16)
        return self._j_from_z(-special.ndtri(q))

    # ---- sampling --------------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, size) -> np.ndarray:
        """Independent factors ``X`` (array of shape ``size``): one per rank and iteration."""
        z = rng.standard_normal(size)
        j = self._j_from_z(z)
        s = rng.random(size) < self.straggler_prob
        return np.where(s, j * self.straggler_slowdown, j)

    def sample_max(self, rng: np.random.Generator, n: int, size: int) -> np.ndarray:
        """``size`` independent draws of ``M = max`` of ``n`` iid factors, sampled directly (O(size))."""
        n = int(n)
        if n < 1:
            raise ConfigError(self.source, "ranks", n, "must be >= 1")
        k = rng.binomial(n, self.straggler_prob, size) if self.straggler_prob > 0 else np.zeros(size, dtype=np.int64)
        normal = self._max_j(rng, np.maximum(n - k, 1))
        slow = self._max_j(rng, np.maximum(k, 1)) * self.straggler_slowdown
        normal = np.where(n - k > 0, normal, 0.0)
        slow = np.where(k > 0, slow, 0.0)
        return np.maximum(normal, slow)

    # ---- closed forms / numerical integrals --------------------------------------------------------------
    def cdf(self, x):
        """CDF of the factor ``X`` (mixture of ``J`` and ``slowdown * J``)."""
        p, s = self.straggler_prob, self.straggler_slowdown
        return (1.0 - p) * self.j_cdf(x) + p * self.j_cdf(np.asarray(x, dtype=float) / s)

    def expected_max(self, n: int) -> float:
        """``E[max of n iid factors] = integral_0^inf (1 - F(x)^n) dx`` (numerical; exact 1 without variability)."""
        if not self.enabled:
            return 1.0
        hi = self.straggler_slowdown * float(self._j_from_z(12.0))
        f = lambda x: 1.0 - float(self.cdf(x)) ** n  # noqa: E731
        # split at the bulk of each mixture component for quad's accuracy
        pts = sorted({0.0, float(self._j_from_z(-6.0)), 1.0, float(self._j_from_z(6.0)),
                      self.straggler_slowdown * float(self._j_from_z(-6.0)), self.straggler_slowdown, hi})
        total = 0.0
        for a, b in zip(pts[:-1], pts[1:]):
            if b > a:
                total += integrate.quad(f, a, b, limit=200)[0]
        return total

    def quantile_max(self, n: int, q: float) -> float:
        """``q``-quantile of the maximum of ``n`` iid factors (``F^-1(q^(1/n))``, solved numerically)."""
        target = q ** (1.0 / n)
        lo, hi = 0.0, self.straggler_slowdown * float(self._j_from_z(12.0)) + 1.0
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if float(self.cdf(mid)) < target:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)


#: no jitter, no stragglers
NO_VARIABILITY = Variability()
