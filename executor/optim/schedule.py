"""Learning-rate schedules of the real optimizers, as a function of the iteration (pure Python, no torch).

Rules implemented
-----------------
- **Linear scaling rule** (Goyal et al. 2017): for a global batch ``B`` the peak learning rate is
  ``base_lr * B / base_batch`` (``base_lr = 0.1`` at ``base_batch = 256`` for ResNet-50 with momentum SGD):
  :func:`linear_scaled_lr`.
- **Gradual warmup** (Goyal et al. 2017, sec. 2.2): over the first ``warmup_epochs`` epochs the rate rises
  linearly, per iteration, from ``warmup_start_lr`` (Goyal: the small-batch rate ``base_lr``) to the peak:
  ``lr(i) = start + (peak - start) * i / W`` for ``i < W = warmup_epochs * iterations_per_epoch``; the peak
  is reached at ``i = W``.
- After the warmup one of :data:`DECAYS`:

  * ``"constant"``: the peak;
  * ``"step"`` (Goyal: ``/10`` at epochs 30, 60, 80): ``peak * gamma ** k`` with ``k`` the number of
    milestones (epochs) ``<= i / iterations_per_epoch``;
  * ``"poly"`` (You et al. 2017/2018, LARS: power 2): ``end + (peak - end) * (1 - f) ** power`` with
    ``f = (i - W) / (T - W)`` clipped to ``[0, 1]`` and ``T = epochs * iterations_per_epoch``, so the
    decay starts at the peak where the warmup ends (continuous) and reaches ``end_lr`` at the last
    iteration. (Caffe's ``poly`` policy measures ``f`` from iteration 0; the difference is the first
    ``W`` iterations, which the warmup overrides anyway.)

Iterations are counted from 0 (the first training step). ``iterations_per_epoch`` may be fractional
(``dataset_size / global_batch``); milestones and warmup are in epochs, converted with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = ["GOYAL_BASE_LR", "GOYAL_BASE_BATCH", "DECAYS", "linear_scaled_lr", "LRSchedule"]

#: reference learning rate of Goyal et al. at the reference batch :data:`GOYAL_BASE_BATCH`
GOYAL_BASE_LR = 0.1
#: reference batch of the linear scaling rule (images)
GOYAL_BASE_BATCH = 256
#: decay policies after the warmup
DECAYS = ("constant", "step", "poly")


def linear_scaled_lr(global_batch: float, base_lr: float = GOYAL_BASE_LR,
                     base_batch: float = GOYAL_BASE_BATCH) -> float:
    """Linear scaling rule: ``base_lr * global_batch / base_batch`` (Goyal: ``0.1 * kn / 256``)."""
    return float(base_lr) * float(global_batch) / float(base_batch)


@dataclass(frozen=True)
class LRSchedule:
    """Per-iteration learning rate: gradual linear warmup, then a decay policy.

    Attributes
    ----------
    peak_lr : float
        Rate at the end of the warmup (e.g. :func:`linear_scaled_lr`).
    iterations_per_epoch : float
        Iterations per epoch (> 0; may be fractional).
    epochs : float
        Length of the run in epochs (> 0); sets the end of the ``"poly"`` decay.
    warmup_epochs : float
        Length of the linear warmup in epochs (>= 0; 0 disables it).
    warmup_start_lr : float or None
        Rate at iteration 0 of the warmup; ``None`` means ``peak_lr`` (no ramp).
    decay : str
        One of :data:`DECAYS`.
    milestones : tuple of float
        Epochs of the ``"step"`` decay (increasing).
    gamma : float
        Factor applied at each milestone.
    power : float
        Exponent of the ``"poly"`` decay.
    end_lr : float
        Rate at the end of the ``"poly"`` decay.
    """

    peak_lr: float
    iterations_per_epoch: float
    epochs: float
    warmup_epochs: float = 0.0
    warmup_start_lr: float | None = None
    decay: str = "constant"
    milestones: Sequence[float] = (30.0, 60.0, 80.0)
    gamma: float = 0.1
    power: float = 2.0
    end_lr: float = 0.0

    def __post_init__(self) -> None:
        # programming errors of the caller (the option layer in executor.optim validates user input)
        if self.decay not in DECAYS:
            raise ValueError(f"unknown decay {self.decay!r}; known: {DECAYS}")
        if not (self.iterations_per_epoch > 0 and self.epochs > 0 and self.warmup_epochs >= 0):
            raise ValueError("iterations_per_epoch and epochs must be > 0, warmup_epochs >= 0")
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))

    @property
    def warmup_iterations(self) -> float:
        """``W = warmup_epochs * iterations_per_epoch`` (may be fractional)."""
        return self.warmup_epochs * self.iterations_per_epoch

    @property
    def total_iterations(self) -> float:
        """``T = epochs * iterations_per_epoch``."""
        return self.epochs * self.iterations_per_epoch

    def __call__(self, iteration: float) -> float:
        """Learning rate of iteration ``iteration`` (0-based; a fractional value interpolates)."""
        i = float(iteration)
        w = self.warmup_iterations
        if i < w:
            start = self.peak_lr if self.warmup_start_lr is None else self.warmup_start_lr
            return start + (self.peak_lr - start) * i / w
        if self.decay == "constant":
            return self.peak_lr
        if self.decay == "step":
            epoch = i / self.iterations_per_epoch
            k = sum(1 for m in self.milestones if epoch >= m)
            return self.peak_lr * self.gamma ** k
        span = self.total_iterations - w
        f = 1.0 if span <= 0 else min(max((i - w) / span, 0.0), 1.0)
        return self.end_lr + (self.peak_lr - self.end_lr) * (1.0 - f) ** self.power

    def lr_at_epoch(self, epoch: float) -> float:
        """Rate at (fractional) ``epoch``: ``self(epoch * iterations_per_epoch)``."""
        return self(epoch * self.iterations_per_epoch)
