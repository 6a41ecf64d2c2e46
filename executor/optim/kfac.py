"""K-FAC, distributed as in Osawa et al. 2018, the real optimizer (mirrors :mod:`perfmodel.optimizers.kfac`).

Kronecker factors (Martens & Grosse 2015; Grosse & Martens 2016 for convolutions)
----------------------------------------------------------------------------------
Every ``nn.Conv2d`` and ``nn.Linear`` whose weight is trainable is a *K-FAC layer*. Hooks capture, on a
refresh iteration only (the cost model computes factors per refresh, not per step):

- forward: the layer input ``x`` -> rows ``a`` of length ``d_a``: for a conv the unfolded
  ``kh * kw * c_in / groups`` patches (:func:`torch.nn.functional.unfold`; ``T = Ho * Wo`` rows per image,
  and ``groups`` rows per position for a grouped conv), for a Linear the input vector (``T = 1``, or the
  product of the extra leading dims). With a bias a column of ones is appended (``d_a + 1``).
- backward: the gradient ``g = dL/ds`` at the layer output (a tensor hook on the output, which also works
  when the output is later modified in place), rows of length ``d_g = c_out``.

Normalisation (exactly the KFC factors of Grosse & Martens 2016 and chainerkfac, Osawa et al.'s code), with
``N`` the local batch (leading dim of the input) and the loss a *mean* over the batch
(``batch_averaged=True``; with ``False`` the loss is a sum and the scale ``N`` below becomes 1)::

    A = (1 / N)            * sum_{n, t} a_{n,t} a_{n,t}^T                  (conv: / groups as well)
    G = (1 / (N * T))      * sum_{n, t} (N g_{n,t}) (N g_{n,t})^T

i.e. ``A`` sums over spatial positions and averages over images; ``G`` averages over images and positions
the per-example output gradients (``N g``: the gradient scaled by the batch size). For a Linear layer
(``T = 1``) both are plain means and ``A (x) G`` is the empirical Fisher ``E[vec(dW_n) vec(dW_n)^T]`` of the
block under the K-FAC independence assumption (exact for ``N = 1``). The Fisher used is the *empirical*
one (the gradient of the training loss, no sampled labels, so no extra backward pass: the cost model
counts none).

Running averages (on the owner, after the cross-rank average, per refresh):
``A <- stat_decay * A + (1 - stat_decay) * A_new`` (the first refresh sets ``A = A_new``); same for ``G``
and the batch-norm Fisher.

Damping (``damping = lambda``), option ``damping_split``:

- ``"pi"`` (default, Martens & Grosse 2015 sec. 6.3, chainerkfac): ``pi = sqrt((tr(A) / d_a) / (tr(G) / d_g))``
  (1 when a trace is 0), ``gamma_A = pi * sqrt(lambda)``, ``gamma_G = sqrt(lambda) / pi``;
- ``"sqrt"``: ``gamma_A = gamma_G = sqrt(lambda)``;
- ``"exact"`` (``inverse="eig"`` only): true Tikhonov ``(A (x) G + lambda I)^-1`` in the eigenbasis.

The damped Fisher block is ``(A + gamma_A I) (x) (G + gamma_G I)`` and the preconditioned gradient of the
``d_g x d_a`` gradient matrix ``[grad_W reshaped | grad_b]`` is ``P = (G + gamma_G I)^-1 grad (A + gamma_A I)^-1``,
i.e. ``vec(P) = ((A + gamma_A I) (x) (G + gamma_G I))^-1 vec(grad)`` with column-major ``vec``
(``torch.kron(A_d, G_d)`` acts on ``grad.t().reshape(-1)``).

Inverses (every refresh, by the layer's owner), option ``inverse``:

- ``"cholesky"``: explicit damped inverses from a Cholesky factorisation (``torch.linalg.cholesky_ex`` +
  ``torch.cholesky_inverse``; an eigendecomposition with clamped eigenvalues is the fallback when a
  factor is numerically indefinite); preconditioning = two GEMMs.
- ``"eig"``: ``torch.linalg.eigh`` of ``A`` and ``G`` (eigenvalues clamped at 0); preconditioning = four
  GEMMs (rotate into the eigenbasis, scale by ``1 / ((l_G + gamma_G)(l_A + gamma_A))`` or
  ``1 / (l_G l_A + lambda)``, rotate back), as the cost model counts.

Batch-norm layers (affine ``BatchNorm1d/2d/3d``): diagonal Fisher (Osawa et al.). On a refresh the
per-example gradients of ``gamma`` and ``beta`` are formed from ``x_hat`` (recomputed from the input with
the batch statistics the layer uses) and the output gradient: ``dgamma_n = N * sum_t dy_{n,t} x_hat_{n,t}``,
``dbeta_n = N * sum_t dy_{n,t}``; ``F = mean_n [dgamma_n^2, dbeta_n^2]`` (running-averaged as above);
preconditioning ``g / (F + lambda)``. (Per-example gradients through batch statistics are approximated by
holding the statistics fixed, as chainerkfac does.) ``bn_fisher="none"``: plain SGD for these layers.

Every other trainable parameter is preconditioned by the identity.

Update: momentum SGD on the preconditioned gradients ``P`` (after optional KL clipping, Ba et al. 2017:
``nu = min(1, sqrt(kl_clip / (lr^2 * sum P . g)))``, ``P <- nu P``; off by default)::

    d = P + wd * w;  v <- m * v + d  (v starts at d);  w <- w - lr * v   (nesterov: w <- w - lr (d + m v))

After :meth:`KFAC.step` every ``p.grad`` holds its preconditioned gradient ``P`` (before clipping).

Refreshes: at iteration 0 and then every ``T`` iterations, ``T`` read at the iteration of the previous
refresh from ``refresh_schedule`` (``(iteration, interval)`` pairs; before the first pair
``refresh_interval`` holds): exactly :func:`perfmodel.optimizers.kfac.count_refreshes`'s rule
(:class:`RefreshClock`). Factors are captured only during the forward/backward of a refresh iteration.

Distribution (``comm`` an mpi4py communicator with ``size > 1``)
----------------------------------------------------------------
*Units* are the K-FAC layers, the batch-norm layers and the remaining parameters. The K-FAC layers get
owner ranks from :func:`perfmodel.optimizers.kfac.balanced_partition` on their inversion cost
``INVERSE_FLOP_FACTOR[inverse] * (d_a^3 + d_g^3)`` (the cost model's partition, idle ranks allowed); the
batch-norm units and then the other parameters go round-robin over the ranks the partition uses. Per
iteration:

1. Refresh iterations: every rank computes its local factors; one ``Reduce_scatter`` (variable counts) of
   the *upper triangles* of all factors (:func:`triu_pack`, row-major, the layout of
   :func:`torch.triu_indices`) plus the batch-norm diagonal Fishers sends each unit's sum to its owner,
   which divides by the world size (equal local batches: the average equals the factors of the
   concatenated global batch, because every factor is a mean over images), running-averages and inverts.
2. Gradients. ``grad_allgather=True`` (default): the executor's bucketer has already *averaged* the
   gradients (allreduce), every rank holds the same ``p.grad``; the optimizer communicates no gradients.
   ``grad_allgather=False`` (Osawa's fused scheme, :attr:`KFAC.exchanges_gradients` is True): the
   executor must *not* allreduce; one ``Reduce_scatter`` sends each unit's local gradients to its owner
   (sum / world = the averaged gradient).
3. Every owner preconditions its units (identity units: ``P = g``) and one ``Allgatherv`` of the flat fp32
   ``P`` of every unit (all parameters, the cost model's all-gather bytes) gives every rank every ``P``
   bitwise identical; every rank then applies the same momentum update, so parameters stay identical.
   KL clipping: owners' partial sums ``sum P . g`` are all-gathered (one float64 per rank) and summed in
   rank order (identical on every rank).

All buffers are flat contiguous CPU tensors handed to mpi4py's buffer API
(:class:`executor.optim.mpi_buffers.MPIBufferComm`): fp32 (``MPI.FLOAT``, ``SUM``),
or with ``factor_dtype_bytes=2`` the factors are computed in bfloat16 (fp32 range: no loss scaling) and
their triangles travel as 16-bit words reduced by a user-defined ``MPI.Op`` that adds in fp32.

Assumptions and limits (marked)
-------------------------------
- Each K-FAC/batch-norm module runs once per forward (a second call overwrites the captured input), and
  evaluation forwards run under ``torch.no_grad()`` (a grad-enabled forward on a refresh iteration is
  captured).
- Grouped convolutions share one ``d_a x d_a`` factor over the groups (the cost model's dims).
- Optimizer ``state_dict`` holds the momentum buffers only; factors and inverses are recomputed at the
  next refresh after a reload.
- Phase timings of the last step are in :attr:`KFAC.last_timings` (seconds, ``time.perf_counter``; the
  factor time is spent inside the forward/backward hooks; no device synchronisation, so on a GPU they
  measure launch time unless the caller synchronises).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from perfmodel.optimizers.kfac import INVERSE_FLOP_FACTOR, balanced_partition

from .mpi_buffers import MPIBufferComm

__all__ = ["KFAC", "RefreshClock", "refresh_iterations", "triu_pack", "triu_unpack", "triangle_mask",
           "DAMPING_SPLITS", "BN_FISHER_MODES", "INVERSE_KINDS"]

#: ways to split the Tikhonov damping between the two factors
DAMPING_SPLITS = ("pi", "sqrt", "exact")
#: batch-norm treatment
BN_FISHER_MODES = ("diagonal", "none")
#: inversion methods (the cost model's ``inverse`` option)
INVERSE_KINDS = tuple(INVERSE_FLOP_FACTOR)

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


# ----------------------------------------------------------------------------------------------------------
# symmetric-matrix triangles

_MASKS: dict[tuple[int, str], torch.Tensor] = {}


def triangle_mask(d: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Boolean ``d x d`` mask of the upper triangle with diagonal (cached per ``(d, device)``).

    Selecting with it yields the elements in row-major order, the order of ``torch.triu_indices(d, d)``,
    with ``d^2`` bytes of index memory instead of ``16 d (d + 1) / 2``.
    """
    key = (int(d), str(device))
    m = _MASKS.get(key)
    if m is None:
        m = _MASKS[key] = torch.ones(d, d, dtype=torch.bool, device=device).triu_()
    return m


def triu_pack(m: torch.Tensor) -> torch.Tensor:
    """Upper triangle (with diagonal) of a square matrix as a flat tensor of ``d (d + 1) / 2`` elements."""
    return m[triangle_mask(m.shape[0], m.device)]


def triu_unpack(v: torch.Tensor, d: int) -> torch.Tensor:
    """Symmetric ``d x d`` matrix from its packed upper triangle (inverse of :func:`triu_pack`)."""
    mask = triangle_mask(d, v.device)
    m = v.new_zeros(d, d)
    m[mask] = v
    return m + m.triu(1).t()


# ----------------------------------------------------------------------------------------------------------
# refresh clock (same rule as perfmodel.optimizers.kfac.count_refreshes)

class RefreshClock:
    """Decides which iterations refresh the factors and inverses.

    A refresh happens at iteration 0 and then every ``T`` iterations, with ``T`` the interval in force at
    the iteration of the previous refresh: the last ``(iteration, interval)`` pair of ``schedule`` whose
    iteration is ``<=`` it, else ``refresh_interval``.
    """

    def __init__(self, refresh_interval: int, schedule: Sequence[Sequence[int]] = ()):
        if int(refresh_interval) < 1:
            raise ValueError("refresh_interval must be >= 1")
        self.refresh_interval = int(refresh_interval)
        self.schedule = tuple((int(a), int(b)) for a, b in schedule)
        self.next_refresh = 0

    def interval_at(self, iteration: int) -> int:
        """Interval in force at ``iteration``."""
        t = self.refresh_interval
        for start, interval in self.schedule:
            if start <= iteration:
                t = interval
            else:
                break
        return t

    def due(self, iteration: int) -> bool:
        """Whether ``iteration`` is a refresh iteration (iterations must be visited in order)."""
        return iteration >= self.next_refresh

    def advance(self, iteration: int) -> bool:
        """Mark ``iteration`` done; returns whether it was a refresh."""
        if iteration >= self.next_refresh:
            self.next_refresh = iteration + self.interval_at(iteration)
            return True
        return False


def refresh_iterations(refresh_interval: int, schedule: Sequence[Sequence[int]], iterations: int) -> list[int]:
    """The refresh iterations in ``[0, iterations)`` (``len`` equals the cost model's ``count_refreshes``)."""
    clock = RefreshClock(refresh_interval, schedule)
    return [i for i in range(iterations) if clock.advance(i)]


# ----------------------------------------------------------------------------------------------------------
# units

@dataclass(eq=False)
class _Unit:
    """One preconditioning unit: a K-FAC layer, a batch-norm layer or one other parameter."""

    kind: str                      # "kf", "bn" or "identity"
    name: str
    params: list[torch.Tensor]
    module: nn.Module | None = None
    d_a: int = 0
    d_g: int = 0
    owner: int = 0
    # captured on the current refresh iteration (local)
    A_new: torch.Tensor | None = None
    G_new: torch.Tensor | None = None
    F_new: torch.Tensor | None = None
    # owner state
    A: torch.Tensor | None = None
    G: torch.Tensor | None = None
    F: torch.Tensor | None = None
    inv: tuple[torch.Tensor, ...] | None = None
    xhat: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)

    @property
    def factor_numel(self) -> int:
        if self.kind == "kf":
            return self.d_a * (self.d_a + 1) // 2 + self.d_g * (self.d_g + 1) // 2
        if self.kind == "bn":
            return self.numel
        return 0


# ----------------------------------------------------------------------------------------------------------

def _conv_rows(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Unfolded patches of ``x`` as rows ``(N * Ho * Wo * groups, kh * kw * c_in / groups)``."""
    padding: Any = module.padding
    if isinstance(padding, str) or module.padding_mode != "zeros":
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=mode)
        padding = 0
    cols = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=padding, stride=module.stride)
    n, k, length = cols.shape
    rows = cols.transpose(1, 2).reshape(n * length * module.groups, k // module.groups)
    return rows


class KFAC(torch.optim.Optimizer):
    """Distributed K-FAC with momentum SGD (Osawa et al. 2018). See the module docstring.

    Parameters
    ----------
    model : nn.Module
        The network; hooks are registered on its Conv2d, Linear and affine BatchNorm modules.
    lr, momentum, weight_decay : float
        Momentum-SGD hyper-parameters (the schedule sets ``group["lr"]`` every iteration).
    damping : float
        Tikhonov damping ``lambda`` (> 0).
    stat_decay : float
        Running-average coefficient of the factors, in [0, 1).
    refresh_interval : int
        Iterations between refreshes before the first ``refresh_schedule`` pair.
    refresh_schedule : sequence of (iteration, interval)
        Interval changes (increasing iterations).
    inverse : str
        ``"cholesky"`` or ``"eig"``.
    damping_split : str
        ``"pi"``, ``"sqrt"`` or ``"exact"`` (eig only).
    kl_clip : float or None
        KL clipping threshold; None disables.
    bn_fisher : str
        ``"diagonal"`` or ``"none"``.
    batch_averaged : bool
        Whether the loss is a mean over the local batch (scales the output gradients by ``N``).
    nesterov : bool
        Nesterov momentum.
    grad_allgather : bool
        True: gradients arrive averaged (executor allreduce); False: the optimizer reduce-scatters them.
    factor_dtype_bytes : int
        4 (fp32 factors) or 2 (bfloat16 factor GEMMs and 16-bit factor communication).
    comm : mpi4py communicator or None
        Data-parallel communicator; None or size 1: single process.

    Attributes
    ----------
    last_timings : dict
        Seconds of the last :meth:`step` per phase, named after the cost model's terms: ``factor_s``
        (factor GEMMs in the hooks since the previous step), ``reduce_scatter_s`` (factor exchange,
        refreshes only), ``inversion_s`` (refreshes only), ``grad_reduce_scatter_s`` (fused gradient
        exchange and gradient flattening), ``precondition_s``, ``allgather_s`` (preconditioned gradients),
        ``update_s`` (momentum update); ``refresh`` is 1.0 on refresh iterations.
    steps, refreshes, inversions : int
        Steps taken, refreshes done, layer inversions (or eigendecompositions) done by this rank.
    owners : dict
        Unit name -> owner rank.
    exchanges_gradients : bool
        Whether :meth:`step` averages the gradients itself (``grad_allgather=False`` with ``size > 1``).
    """

    def __init__(self, model: nn.Module, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, *,
                 damping: float = 1e-3, stat_decay: float = 0.95, refresh_interval: int = 10,
                 refresh_schedule: Sequence[Sequence[int]] = (), inverse: str = "cholesky",
                 damping_split: str = "pi", kl_clip: float | None = None, bn_fisher: str = "diagonal",
                 batch_averaged: bool = True, nesterov: bool = False, grad_allgather: bool = True,
                 factor_dtype_bytes: int = 4, comm: Any = None):
        if inverse not in INVERSE_KINDS or damping_split not in DAMPING_SPLITS or bn_fisher not in BN_FISHER_MODES:
            raise ValueError("KFAC: bad inverse, damping_split or bn_fisher")
        if damping_split == "exact" and inverse != "eig":
            raise ValueError("KFAC: damping_split='exact' needs inverse='eig'")
        if not (damping > 0 and 0 <= stat_decay < 1 and lr >= 0 and momentum >= 0 and weight_decay >= 0):
            raise ValueError("KFAC: need damping > 0, 0 <= stat_decay < 1, lr, momentum, weight_decay >= 0")
        if factor_dtype_bytes not in (2, 4):
            raise ValueError("KFAC: factor_dtype_bytes must be 2 or 4")
        self.model = model
        self.damping = float(damping)
        self.stat_decay = float(stat_decay)
        self.inverse = inverse
        self.damping_split = damping_split
        self.kl_clip = kl_clip
        self.bn_fisher = bn_fisher
        self.batch_averaged = bool(batch_averaged)
        self.grad_allgather = bool(grad_allgather)
        self.factor_dtype = torch.bfloat16 if factor_dtype_bytes == 2 else None
        self.clock = RefreshClock(refresh_interval, refresh_schedule)
        self.steps = 0
        self.refreshes = 0
        self.inversions = 0
        self.last_timings: dict[str, float] = {}
        self._factor_s = 0.0

        self._comm = MPIBufferComm(comm) if comm is not None and comm.Get_size() > 1 else None
        self.world = self._comm.size if self._comm else 1
        self.rank = self._comm.rank if self._comm else 0

        self.units = self._build_units(model)
        params = [p for u in self.units for p in u.params]
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov))
        self._assign_owners()
        self._hooks: list[Any] = []
        self._register_hooks()

    # ------------------------------------------------------------------------------------------------
    # setup
    def _build_units(self, model: nn.Module) -> list[_Unit]:
        kf, bn, seen = [], [], set()
        for name, m in model.named_modules():
            own = [p for p in m.parameters(recurse=False) if p.requires_grad]
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.requires_grad and \
                    (m.bias is None or m.bias.requires_grad):
                w = m.weight
                d_g = w.shape[0]
                d_a = w[0].numel() + (1 if m.bias is not None else 0)
                ps = [w] + ([m.bias] if m.bias is not None else [])
                kf.append(_Unit("kf", name or type(m).__name__, ps, m, d_a=d_a, d_g=d_g))
                seen.update(id(p) for p in ps)
            elif isinstance(m, _BN_TYPES) and m.affine and self.bn_fisher == "diagonal" and own and \
                    m.weight.requires_grad and m.bias.requires_grad:
                bn.append(_Unit("bn", name or type(m).__name__, [m.weight, m.bias], m))
                seen.update(id(p) for p in (m.weight, m.bias))
        other = [_Unit("identity", n, [p]) for n, p in model.named_parameters()
                 if p.requires_grad and id(p) not in seen]
        return kf + bn + other

    def _assign_owners(self) -> None:
        kf = [u for u in self.units if u.kind == "kf"]
        costs = [INVERSE_FLOP_FACTOR[self.inverse] * (float(u.d_a) ** 3 + float(u.d_g) ** 3) for u in kf]
        owners, used, _ = balanced_partition(costs, self.world)
        for u, r in zip(kf, owners):
            u.owner = r
        used = max(used, 1) if kf else self.world
        k = 0
        for u in self.units:
            if u.kind != "kf":
                u.owner = k % used
                k += 1
        self.ranks_used = used
        # per-rank segments in unit order
        self._segments = [[u for u in self.units if u.owner == r] for r in range(self.world)]
        self._grad_counts = [sum(u.numel for u in seg) for seg in self._segments]
        self._factor_counts = [sum(u.factor_numel for u in seg) for seg in self._segments]

    @property
    def owners(self) -> dict[str, int]:
        """Unit name -> owner rank."""
        return {u.name: u.owner for u in self.units}

    @property
    def exchanges_gradients(self) -> bool:
        """True when this optimizer averages the gradients itself (the executor must skip its allreduce)."""
        return self._comm is not None and not self.grad_allgather

    def _register_hooks(self) -> None:
        for u in self.units:
            if u.kind == "kf":
                self._hooks.append(u.module.register_forward_hook(self._make_kf_hook(u)))
            elif u.kind == "bn":
                self._hooks.append(u.module.register_forward_hook(self._make_bn_hook(u)))

    def remove_hooks(self) -> None:
        """Detach the capture hooks from the model."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()

    # ------------------------------------------------------------------------------------------------
    # capture (hooks)
    def _capturing(self) -> bool:
        return self.clock.due(self.steps) and torch.is_grad_enabled()

    def _gram(self, rows: torch.Tensor, scale: float) -> torch.Tensor:
        if self.factor_dtype is not None:
            rows = rows.to(self.factor_dtype)
        return (rows.t() @ rows).mul_(scale)

    def _make_kf_hook(self, u: _Unit):
        def forward_hook(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
            if not self._capturing() or not isinstance(output, torch.Tensor) or not output.requires_grad:
                return
            t0 = time.perf_counter()
            with torch.no_grad():
                x = inputs[0].detach()
                n = x.shape[0]
                if isinstance(module, nn.Conv2d):
                    rows = _conv_rows(module, x)
                    denom = n * module.groups
                else:
                    rows = x.reshape(-1, x.shape[-1])
                    denom = n
                if module.bias is not None:
                    rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], dim=1)
                u.A_new = self._gram(rows, 1.0 / denom)
            output.register_hook(self._make_kf_grad_hook(u, n))
            self._factor_s += time.perf_counter() - t0

        return forward_hook

    def _make_kf_grad_hook(self, u: _Unit, n: int):
        def grad_hook(g: torch.Tensor) -> None:
            t0 = time.perf_counter()
            with torch.no_grad():
                g = g.detach()
                if g.ndim > 2:  # conv: (N, C, H, W) -> (N * H * W, C); linear with extra dims: (..., C)
                    rows = g.movedim(1, -1).reshape(-1, g.shape[1]) if isinstance(u.module, nn.Conv2d) \
                        else g.reshape(-1, g.shape[-1])
                else:
                    rows = g
                s = float(n) if self.batch_averaged else 1.0
                u.G_new = self._gram(rows, s * s / rows.shape[0])
            self._factor_s += time.perf_counter() - t0

        return grad_hook

    def _make_bn_hook(self, u: _Unit):
        def forward_hook(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
            if not self._capturing() or not isinstance(output, torch.Tensor) or not output.requires_grad:
                return
            t0 = time.perf_counter()
            with torch.no_grad():
                x = inputs[0].detach()
                dims = [0] + list(range(2, x.ndim))
                shape = [1, x.shape[1]] + [1] * (x.ndim - 2)
                if module.training or module.running_mean is None:
                    mean = x.mean(dims, keepdim=True)
                    var = x.var(dims, unbiased=False, keepdim=True)
                else:
                    mean = module.running_mean.view(shape)
                    var = module.running_var.view(shape)
                u.xhat = (x - mean) * torch.rsqrt(var + module.eps)
            output.register_hook(self._make_bn_grad_hook(u, x.shape[0]))
            self._factor_s += time.perf_counter() - t0

        return forward_hook

    def _make_bn_grad_hook(self, u: _Unit, n: int):
        def grad_hook(dy: torch.Tensor) -> None:
            t0 = time.perf_counter()
            with torch.no_grad():
                s = float(n) if self.batch_averaged else 1.0
                dims = list(range(2, dy.ndim))
                xh = u.xhat
                dgamma = (dy * xh).sum(dims) * s if dims else dy * xh * s
                dbeta = dy.sum(dims) * s if dims else dy * s
                per_ex = torch.cat([dgamma, dbeta], dim=1)
                if self.factor_dtype is not None:
                    per_ex = per_ex.to(self.factor_dtype)
                u.F_new = (per_ex * per_ex).mean(0)
                u.xhat = None
            self._factor_s += time.perf_counter() - t0

        return grad_hook

    # ------------------------------------------------------------------------------------------------
    # refresh: factor exchange, running averages, inversion
    def _check_captured(self, u: _Unit) -> None:
        missing = (u.kind == "kf" and (u.A_new is None or u.G_new is None)) or (u.kind == "bn" and u.F_new is None)
        if missing:
            raise RuntimeError(f"K-FAC: refresh at iteration {self.steps} but layer '{u.name}' captured no "
                               "factors; run forward and backward (with grad enabled) before step()")

    def _local_factor_vector(self, u: _Unit) -> list[torch.Tensor]:
        self._check_captured(u)
        if u.kind == "kf":
            return [triu_pack(u.A_new), triu_pack(u.G_new)]
        if u.kind == "bn":
            return [u.F_new.reshape(-1)]
        return []

    def _ema(self, old: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
        new = new.float() if new.dtype in (torch.float16, torch.bfloat16) else new
        if old is None:
            return new.clone()
        return old.mul_(self.stat_decay).add_(new, alpha=1.0 - self.stat_decay)

    def _refresh(self) -> None:
        t0 = time.perf_counter()
        mine = self._segments[self.rank]
        if self._comm is None:
            for u in mine:
                self._check_captured(u)
                if u.kind == "kf":
                    u.A = self._ema(u.A, u.A_new)
                    u.G = self._ema(u.G, u.G_new)
                elif u.kind == "bn":
                    u.F = self._ema(u.F, u.F_new)
        else:
            parts: list[torch.Tensor] = []
            for seg in self._segments:
                for u in seg:
                    parts.extend(self._local_factor_vector(u))
            dtype = self.factor_dtype or torch.float32
            if not parts:  # nothing to exchange (no K-FAC or batch-norm layer)
                parts = [torch.empty(0, dtype=dtype)]
            send = torch.cat([p.reshape(-1).to(dtype) for p in parts])
            recv = self._comm.reduce_scatter_v(send, self._factor_counts).float().div_(self.world) \
                if sum(self._factor_counts) else torch.empty(0)
            off = 0
            for u in mine:
                if u.kind == "kf":
                    ta, tg = u.d_a * (u.d_a + 1) // 2, u.d_g * (u.d_g + 1) // 2
                    dev = u.params[0].device
                    a = triu_unpack(recv[off:off + ta].to(dev), u.d_a)
                    g = triu_unpack(recv[off + ta:off + ta + tg].to(dev), u.d_g)
                    off += ta + tg
                    u.A, u.G = self._ema(u.A, a), self._ema(u.G, g)
                elif u.kind == "bn":
                    f = recv[off:off + u.numel].to(u.params[0].device)
                    off += u.numel
                    u.F = self._ema(u.F, f)
        t1 = time.perf_counter()
        for u in mine:
            if u.kind == "kf":
                self._invert(u)
        t2 = time.perf_counter()
        for u in self.units:
            u.A_new = u.G_new = u.F_new = None
            u.xhat = None
        self.refreshes += 1
        self.last_timings["reduce_scatter_s"] = t1 - t0
        self.last_timings["inversion_s"] = t2 - t1

    def _gammas(self, u: _Unit) -> tuple[float, float]:
        root = math.sqrt(self.damping)
        if self.damping_split == "sqrt":
            return root, root
        ta = float(torch.trace(u.A)) / u.d_a
        tg = float(torch.trace(u.G)) / u.d_g
        pi = math.sqrt(ta / tg) if ta > 0 and tg > 0 else 1.0
        return pi * root, root / pi

    @staticmethod
    def _damped_inverse(m: torch.Tensor, gamma: float) -> torch.Tensor:
        md = m + gamma * torch.eye(m.shape[0], dtype=m.dtype, device=m.device)
        chol, info = torch.linalg.cholesky_ex(md)
        if int(info) == 0:
            return torch.cholesky_inverse(chol)
        lam, vec = torch.linalg.eigh(m)  # numerically indefinite: clamp the spectrum of the PSD factor
        return (vec / (lam.clamp_min(0) + gamma)) @ vec.t()

    def _invert(self, u: _Unit) -> None:
        """Damped inverses (or eigendecompositions) of one owned layer's running factors."""
        self.inversions += 1
        if self.inverse == "cholesky":
            ga, gg = self._gammas(u)
            u.inv = (self._damped_inverse(u.A, ga), self._damped_inverse(u.G, gg))
        else:
            la, va = torch.linalg.eigh(u.A)
            lg, vg = torch.linalg.eigh(u.G)
            la, lg = la.clamp_min(0), lg.clamp_min(0)
            if self.damping_split == "exact":
                scale = 1.0 / (lg[:, None] * la[None, :] + self.damping)
            else:
                ga, gg = self._gammas(u)
                scale = 1.0 / ((lg + gg)[:, None] * (la + ga)[None, :])
            u.inv = (va, vg, scale)

    # ------------------------------------------------------------------------------------------------
    # per step
    @staticmethod
    def _flat_grad(u: _Unit) -> torch.Tensor:
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in u.params])

    def _precondition(self, u: _Unit, g: torch.Tensor) -> torch.Tensor:
        """Preconditioned flat gradient of one unit from its (averaged) flat gradient ``g``."""
        if u.kind == "identity":
            return g
        if u.kind == "bn":
            return g / (u.F + self.damping)
        w = u.params[0]
        dw = w.numel()
        gm = g[:dw].reshape(u.d_g, -1)
        if len(u.params) > 1:
            gm = torch.cat([gm, g[dw:].reshape(u.d_g, 1)], dim=1)
        if self.inverse == "cholesky":
            a_inv, g_inv = u.inv
            pm = g_inv @ gm @ a_inv
        else:
            va, vg, scale = u.inv
            pm = vg @ ((vg.t() @ gm @ va) * scale) @ va.t()
        if len(u.params) > 1:
            return torch.cat([pm[:, :-1].reshape(-1), pm[:, -1]])
        return pm.reshape(-1)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """Refresh if due, precondition, exchange, update. Returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.last_timings = {"factor_s": self._factor_s, "reduce_scatter_s": 0.0, "inversion_s": 0.0,
                             "grad_reduce_scatter_s": 0.0, "precondition_s": 0.0, "allgather_s": 0.0,
                             "update_s": 0.0}
        self._factor_s = 0.0
        refresh = self.clock.due(self.steps)
        if refresh:
            self._refresh()
        self.last_timings["refresh"] = float(refresh)
        if any(u.inv is None for u in self._segments[self.rank] if u.kind == "kf"):
            raise RuntimeError("K-FAC: no inverses yet (the first step must be a refresh)")

        mine = self._segments[self.rank]
        t0 = time.perf_counter()
        if self.exchanges_gradients:
            send = torch.cat([self._flat_grad(u).float() for seg in self._segments for u in seg])
            recv = self._comm.reduce_scatter_v(send, self._grad_counts).div_(self.world)
            grads, off = {}, 0
            for u in mine:
                grads[u] = recv[off:off + u.numel].to(u.params[0].device, u.params[0].dtype)
                off += u.numel
        else:
            grads = {u: self._flat_grad(u) for u in mine}
        t1 = time.perf_counter()
        precond = {u: self._precondition(u, grads[u]) for u in mine}
        partial = 0.0
        if self.kl_clip is not None:
            partial = float(sum(float((precond[u] * grads[u]).sum()) for u in mine))
        t2 = time.perf_counter()
        if self._comm is None:
            results = precond
        else:
            send = torch.cat([precond[u].float() for u in mine]) if mine else torch.empty(0)
            recv = self._comm.allgather_v(send, self._grad_counts)
            results, off = {}, 0
            for seg in self._segments:
                for u in seg:
                    results[u] = recv[off:off + u.numel]
                    off += u.numel
        t3 = time.perf_counter()

        nu = 1.0
        if self.kl_clip is not None:
            total = sum(self._comm.allgather_scalar(partial)) if self._comm else partial
            lr = self.param_groups[0]["lr"]
            vg = total * lr * lr
            if vg > 0:
                nu = min(1.0, math.sqrt(self.kl_clip / vg))
        self.last_kl_nu = nu
        for u in self.units:
            flat = results[u]
            off = 0
            for p in u.params:
                k = p.numel()
                part = flat[off:off + k].view_as(p).to(p.device, p.dtype)
                off += k
                if p.grad is None:
                    continue
                p.grad.copy_(part)
        self._momentum_update(nu)
        t4 = time.perf_counter()
        self.last_timings.update(grad_reduce_scatter_s=t1 - t0, precondition_s=t2 - t1, allgather_s=t3 - t2,
                                 update_s=t4 - t3)
        self.clock.advance(self.steps)
        self.steps += 1
        return loss

    def _momentum_update(self, nu: float) -> None:
        for group in self.param_groups:
            lr, m, wd, nesterov = group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad if nu == 1.0 else p.grad * nu
                if wd:
                    d = d.add(p, alpha=wd)
                if m:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = d.detach().clone()
                    else:
                        buf.mul_(m).add_(d)
                    d = d.add(buf, alpha=m) if nesterov else buf
                p.add_(d, alpha=-lr)
