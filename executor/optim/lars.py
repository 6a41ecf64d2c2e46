"""LARS, layer-wise adaptive rate scaling (You, Gitman, Ginsburg 2017), the real optimizer.

Update of every parameter tensor ``w`` (one "layer" per tensor, as in the paper's implementation) with
gradient ``g`` at global rate ``lr`` (the schedule's value), momentum ``m`` and weight decay ``wd``::

    local_lr = eta * ||w|| / (||g|| + wd * ||w||)     # 1.0 when ||w|| == 0 or ||g|| == 0
    v <- m * v + lr * local_lr * (g + wd * w)          # v starts at 0
    w <- w - v

which is the structure :mod:`perfmodel.optimizers.lars` prices: two norms per adapted tensor (reads ``w``
and ``g``), a scalar trust ratio, and the 5-array momentum stream.

``exclude_bn_bias`` (default False, as the cost model): tensors with ``ndim <= 1`` (batch-norm scales and
shifts, biases) get neither the LARS adaptation (``local_lr = 1``) nor weight decay, i.e.
``v <- m * v + lr * g``; common practice, while You et al. 2017 adapt every layer. The cost model's option
of the same name excludes normalisation layers and Conv2d/Linear biases, which are exactly the 1-D tensors
of the zoo's models.

Gradients are used as found in ``p.grad`` (already averaged across ranks by the executor's gradient
allreduce), so the norms are local and need no communication, as the cost model assumes.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

__all__ = ["LARS"]


class LARS(torch.optim.Optimizer):
    """LARS on top of heavy-ball momentum.

    Parameters
    ----------
    params : iterable of tensors or dicts
        Parameters (or parameter groups) to optimise.
    lr : float
        Global learning rate (the schedule sets ``group["lr"]`` every iteration).
    momentum : float
        Momentum coefficient ``m``.
    weight_decay : float
        L2 coefficient ``wd`` (inside the trust ratio and the update).
    eta : float
        Trust coefficient (0.001 in You et al.).
    exclude_bn_bias : bool
        Skip the adaptation and the weight decay for tensors with ``ndim <= 1``.
    """

    def __init__(self, params: Iterable[Any], lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001, exclude_bn_bias: bool = False):
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError("LARS: lr, momentum, weight_decay must be >= 0 and eta > 0")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta,
                        exclude_bn_bias=exclude_bn_bias)
        super().__init__(params, defaults)

    @staticmethod
    def local_lr(w: torch.Tensor, g: torch.Tensor, eta: float, weight_decay: float) -> torch.Tensor:
        """Trust ratio ``eta * ||w|| / (||g|| + wd * ||w||)``, 1 where either norm is 0 (0-d tensor)."""
        w_norm = torch.linalg.vector_norm(w)
        g_norm = torch.linalg.vector_norm(g)
        ratio = eta * w_norm / (g_norm + weight_decay * w_norm)
        ok = (w_norm > 0) & (g_norm > 0)
        return torch.where(ok, ratio, torch.ones_like(ratio))

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One LARS update of every parameter that has a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, eta = group["lr"], group["momentum"], group["eta"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["exclude_bn_bias"] and p.ndim <= 1:
                    wd, scale = 0.0, lr
                    d = g
                else:
                    wd = group["weight_decay"]
                    scale = lr * self.local_lr(p, g, eta, wd)
                    d = g.add(p, alpha=wd) if wd else g
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = torch.zeros_like(p)
                buf.mul_(m).add_(d * scale)
                p.sub_(buf)
        return loss
