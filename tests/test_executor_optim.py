"""Tests of the executor's real optimizers (executor/optim): schedule, LARS, K-FAC (local and under MPI)."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from hardware.errors import ConfigError
from perfmodel.optimizers.kfac import count_refreshes
from executor.optim import (OPTIMIZERS, build_optimizer, build_schedule, linear_scaled_lr, resolve_options,
                            set_lr, LRSchedule)
from executor.optim.kfac import KFAC, RefreshClock, refresh_iterations, triu_pack, triu_unpack
from executor.optim.lars import LARS

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------------
# schedule

def test_goyal_linear_scaling_and_warmup():
    ipe = 100  # iterations per epoch
    sched = build_schedule("sgd", global_batch=8192, iterations_per_epoch=ipe, epochs=90, warmup_epochs=5)
    peak = 0.1 * 8192 / 256
    assert linear_scaled_lr(8192) == pytest.approx(peak) == pytest.approx(3.2)
    assert sched(0) == pytest.approx(0.1)                               # warmup starts at the small-batch rate
    assert sched(250) == pytest.approx(0.1 + (peak - 0.1) * 0.5)         # half-way through 5 epochs
    assert sched(499) == pytest.approx(0.1 + (peak - 0.1) * 499 / 500)
    assert sched(500) == pytest.approx(peak)                            # reached after 5 epochs
    assert sched(2999) == pytest.approx(peak)
    assert sched(3000) == pytest.approx(peak * 0.1)                     # /10 at epochs 30, 60, 80
    assert sched(6000) == pytest.approx(peak * 0.01)
    assert sched(8000) == pytest.approx(peak * 0.001)
    lrs = [sched(i) for i in range(501)]
    assert all(b > a for a, b in zip(lrs, lrs[1:]))                     # monotone ramp
    # k = 1 (batch 256): no ramp at all
    flat = build_schedule("sgd", global_batch=256, iterations_per_epoch=ipe, epochs=90, warmup_epochs=5)
    assert {round(flat(i), 12) for i in range(0, 600, 37)} == {0.1}


def test_poly_decay_power_two():
    s = LRSchedule(peak_lr=2.0, iterations_per_epoch=10, epochs=10, warmup_epochs=2, warmup_start_lr=0.0,
                   decay="poly", power=2.0)
    assert s(0) == 0.0 and s(10) == pytest.approx(1.0) and s(20) == pytest.approx(2.0)
    assert s(60) == pytest.approx(2.0 * 0.5 ** 2)   # half-way through the post-warmup 80 iterations
    assert s(100) == pytest.approx(0.0) and s(1000) == pytest.approx(0.0)
    lars = build_schedule("lars", global_batch=32768, iterations_per_epoch=10, epochs=10, warmup_epochs=0,
                          options={"lr_peak": 29.0})
    assert lars(0) == pytest.approx(29.0) and lars(25) == pytest.approx(29.0 * 0.75 ** 2)


def test_set_lr_and_schedule_options():
    model = nn.Linear(3, 2)
    opt = build_optimizer("sgd", model, 0.1, 0.9, 1e-4, {"lr_decay": "poly", "launch_overhead_s": 1e-6})
    set_lr(opt, 0.42)
    assert all(g["lr"] == 0.42 for g in opt.param_groups)
    with pytest.raises(ConfigError, match="lr_milestones"):
        build_schedule("sgd", global_batch=256, iterations_per_epoch=1, epochs=1, options={"lr_milestones": [3, 2]})
    with pytest.raises(ConfigError) as err:
        build_schedule("sgd", global_batch=256, iterations_per_epoch=1, epochs=0)
    assert err.value.field == "epochs"
    with pytest.raises(ConfigError) as err:
        build_optimizer("lars", model, -0.1)
    assert err.value.field == "lr"


# ----------------------------------------------------------------------------------------------------------
# registry and options

def test_registry_builds_each_optimizer():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    assert set(OPTIMIZERS) == {"sgd", "lars", "kfac"}
    sgd = build_optimizer("SGD", model, 0.1, 0.9, 1e-4, {"nesterov": True})
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["nesterov"]
    assert isinstance(build_optimizer("lars", model, 0.1, 0.9, 1e-4, {"eta": 0.002}), LARS)
    k = build_optimizer("kfac", model, 0.1, 0.9, 1e-4, {"refresh_interval": 5, "inverse": "eig",
                                                        "inversion_efficiency": 0.3})
    assert isinstance(k, KFAC) and [u.kind for u in k.units] == ["kf", "kf", "bn"]
    assert not k.exchanges_gradients


@pytest.mark.parametrize("name, options, field", [
    ("sgd", {"damping": 1.0}, "optimizer_options.damping"),          # K-FAC key on SGD
    ("kfac", {"refresh_interval": 0}, "optimizer_options.refresh_interval"),
    ("kfac", {"stat_decay": 1.0}, "optimizer_options.stat_decay"),
    ("kfac", {"damping_split": "exact"}, "optimizer_options.damping_split"),  # needs inverse = eig
    ("lars", {"eta": -1}, "optimizer_options.eta"),
    ("nadam", {}, "optimizer"),
])
def test_bad_options_raise_config_error(name, options, field):
    with pytest.raises(ConfigError) as err:
        resolve_options(name, options, source="run.toml")
    assert err.value.field == field and err.value.source == "run.toml"


def test_import_does_not_load_torch():
    code = "import sys, executor.optim as o; o.build_schedule; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0


# ----------------------------------------------------------------------------------------------------------
# LARS

@pytest.mark.parametrize("exclude", [False, True])
def test_lars_matches_formula(exclude):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    with torch.no_grad():
        model[2].bias.zero_()                      # ||w|| = 0 at the first step: local_lr = 1
    lr, m, wd, eta = 0.5, 0.9, 0.01, 0.02
    opt = LARS(model.parameters(), lr=lr, momentum=m, weight_decay=wd, eta=eta, exclude_bn_bias=exclude)
    ws = [p.detach().double().clone() for p in model.parameters()]
    vs = [torch.zeros_like(w) for w in ws]
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    for step in range(4):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        gs = [p.grad.detach().double().clone() for p in model.parameters()]
        for i, (w, g) in enumerate(zip(ws, gs)):
            if exclude and w.ndim <= 1:
                local, decay = 1.0, 0.0
            else:
                nw, ng = w.norm().item(), g.norm().item()
                local = eta * nw / (ng + wd * nw) if nw > 0 and ng > 0 else 1.0
                decay = wd
            vs[i] = m * vs[i] + lr * local * (g + decay * w)
            ws[i] = w - vs[i]
        opt.step()
        for w, p in zip(ws, model.parameters()):
            torch.testing.assert_close(p.detach().double(), w, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------------------
# K-FAC: triangles and refresh clock

@pytest.mark.parametrize("d", [1, 2, 5, 17])
def test_triangle_pack_roundtrip(d):
    torch.manual_seed(d)
    x = torch.randn(d, d)
    m = x + x.t()
    v = triu_pack(m)
    idx = torch.triu_indices(d, d)
    assert v.numel() == d * (d + 1) // 2
    assert torch.equal(v, m[idx[0], idx[1]])      # the layout of torch.triu_indices (row-major)
    assert torch.equal(triu_unpack(v, d), m)


@pytest.mark.parametrize("interval, schedule, iters", [
    (10, (), 1000), (3, ((4, 1),), 10), (1, ((5, 7), (40, 100)), 500), (7, ((0, 2), (11, 5)), 77),
])
def test_refresh_rule_matches_cost_model(interval, schedule, iters):
    its = refresh_iterations(interval, schedule, iters)
    assert len(its) == count_refreshes(interval, schedule, iters)
    assert its[0] == 0
    clock = RefreshClock(interval, schedule)
    for a, b in zip(its, its[1:]):
        assert b - a == clock.interval_at(a)
    assert refresh_iterations(3, ((4, 1),), 10) == [0, 3, 6, 7, 8, 9]


# ----------------------------------------------------------------------------------------------------------
# K-FAC: preconditioning against an explicit Kronecker-factored Fisher

def _gammas(A, G, damping, split):
    root = math.sqrt(damping)
    if split == "sqrt":
        return root, root
    pi = math.sqrt((torch.trace(A).item() / A.shape[0]) / (torch.trace(G).item() / G.shape[0]))
    return pi * root, root / pi


def _explicit_precondition(A, G, grad_mat, damping, split):
    """Solve the damped Kronecker-factored system directly; column-major vec: vec(G X A) = (A (x) G) vec(X)."""
    A, G, gm = A.double(), G.double(), grad_mat.double()
    da, dg = A.shape[0], G.shape[0]
    if split == "exact":
        F = torch.kron(A, G) + damping * torch.eye(da * dg, dtype=torch.float64)
    else:
        ga, gg = _gammas(A, G, damping, split)
        F = torch.kron(A + ga * torch.eye(da, dtype=torch.float64), G + gg * torch.eye(dg, dtype=torch.float64))
    x = torch.linalg.solve(F, gm.t().reshape(-1))
    return x.reshape(da, dg).t()


def _kf_grad_matrix(layer):
    gm = layer.weight.grad.reshape(layer.weight.shape[0], -1)
    if layer.bias is not None:
        gm = torch.cat([gm, layer.bias.grad[:, None]], dim=1)
    return gm


def _patches_by_loop(conv, x):
    """Patch rows (N, T, c_in * kh * kw) by explicit slicing (independent of F.unfold)."""
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    xp = nn.functional.pad(x, (pw, pw, ph, ph))
    ho = (x.shape[2] + 2 * ph - kh) // sh + 1
    wo = (x.shape[3] + 2 * pw - kw) // sw + 1
    rows = [xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].reshape(x.shape[0], -1)
            for i in range(ho) for j in range(wo)]
    return torch.stack(rows, dim=1)


CASES = [("cholesky", "pi"), ("cholesky", "sqrt"), ("eig", "pi"), ("eig", "exact")]


@pytest.mark.parametrize("inverse, split", CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_kfac_linear_matches_explicit_kronecker(inverse, split, bias):
    torch.manual_seed(1)
    n, damping = 6, 0.03
    layer = nn.Linear(5, 3, bias=bias)
    opt = KFAC(layer, lr=0.0, momentum=0.0, damping=damping, inverse=inverse, damping_split=split)
    x = torch.randn(n, 5)
    target = torch.randn(n, 3)
    out = layer(x)
    out.retain_grad()
    nn.functional.mse_loss(out, target).backward()
    # independent factors: A = mean a a^T (ones appended), G = mean (N g)(N g)^T
    a = torch.cat([x, torch.ones(n, 1)], 1) if bias else x
    A = a.t() @ a / n
    gn = out.grad * n
    G = gn.t() @ gn / n
    gm = _kf_grad_matrix(layer).clone()
    want = _explicit_precondition(A, G, gm, damping, split)
    w0 = layer.weight.detach().clone()
    opt.step()
    assert torch.equal(layer.weight.detach(), w0)           # lr = 0
    u = opt.units[0]
    torch.testing.assert_close(u.A, A, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(u.G, G, rtol=1e-5, atol=1e-6)
    got = _kf_grad_matrix(layer)                             # p.grad now holds the preconditioned gradient
    err = ((got.double() - want).abs().max() / want.abs().max()).item()
    assert err < 1e-4, err


def test_linear_single_example_factors_are_the_exact_fisher():
    """For one example, A (x) G equals vec(dW) vec(dW)^T exactly (column-major vec)."""
    torch.manual_seed(2)
    layer = nn.Linear(4, 3)
    opt = KFAC(layer, lr=0.0, momentum=0.0)
    nn.functional.cross_entropy(layer(torch.randn(1, 4)), torch.tensor([1])).backward()
    v = _kf_grad_matrix(layer).t().reshape(-1).double()
    opt.step()
    u = opt.units[0]
    torch.testing.assert_close(torch.kron(u.A.double(), u.G.double()), torch.outer(v, v), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("inverse, split", CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_kfac_conv_matches_explicit_kronecker(inverse, split, bias):
    torch.manual_seed(3)
    n, damping = 3, 0.05
    conv = nn.Conv2d(2, 3, kernel_size=3, stride=2, padding=1, bias=bias)
    opt = KFAC(conv, lr=0.0, momentum=0.0, damping=damping, inverse=inverse, damping_split=split)
    x = torch.randn(n, 2, 7, 7)
    out = conv(x)
    out.retain_grad()
    (out.tanh() ** 2).mean().backward()
    # Grosse & Martens (KFC): Omega = E_n[sum_t a a^T], Gamma = E_n[(1/T) sum_t (N g)(N g)^T]
    p = _patches_by_loop(conv, x)                            # (N, T, 18)
    t = p.shape[1]
    if bias:
        p = torch.cat([p, torch.ones(n, t, 1)], dim=2)
    A = torch.einsum("nti,ntj->ij", p, p) / n
    gn = (out.grad * n).permute(0, 2, 3, 1).reshape(n, -1, 3)
    G = torch.einsum("nti,ntj->ij", gn, gn) / (n * t)
    gm = _kf_grad_matrix(conv).clone()
    want = _explicit_precondition(A, G, gm, damping, split)
    opt.step()
    u = opt.units[0]
    torch.testing.assert_close(u.A, A, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(u.G, G, rtol=1e-5, atol=1e-7)
    err = ((_kf_grad_matrix(conv).double() - want).abs().max() / want.abs().max()).item()
    assert err < 1e-4, err


def test_batchnorm_diagonal_fisher():
    torch.manual_seed(4)
    n, damping = 5, 1e-3
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    opt = KFAC(bn, lr=0.0, momentum=0.0, damping=damping)
    x = torch.randn(n, 3, 4, 4) * 2 + 1
    out = bn(x)
    out.retain_grad()
    (out.sin() ** 2).mean().backward()
    xhat = (x - x.mean((0, 2, 3), keepdim=True)) / torch.sqrt(x.var((0, 2, 3), unbiased=False, keepdim=True) + bn.eps)
    dy = out.grad * n
    per_ex = torch.cat([(dy * xhat).sum((2, 3)), dy.sum((2, 3))], dim=1)   # (N, 2C) per-example gradients
    fisher = (per_ex ** 2).mean(0)
    g = torch.cat([bn.weight.grad, bn.bias.grad]).clone()
    torch.testing.assert_close(per_ex.mean(0), g, rtol=1e-4, atol=1e-6)      # mean per-example grad = grad
    opt.step()
    torch.testing.assert_close(torch.cat([bn.weight.grad, bn.bias.grad]), g / (fisher + damping), rtol=1e-4, atol=1e-6)


def test_kfac_update_momentum_weight_decay_and_kl_clip():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    lr, m, wd, kl = 0.3, 0.9, 1e-2, 1e-4
    opt = KFAC(model, lr=lr, momentum=m, weight_decay=wd, damping=0.05, refresh_interval=1, kl_clip=kl)
    bufs = None
    for step in range(3):
        x, y = torch.randn(4, 2, 6, 6), torch.randint(0, 4, (4,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        raw = [p.grad.clone() for p in model.parameters()]
        w = [p.detach().clone() for p in model.parameters()]
        opt.step()
        P = [p.grad.clone() for p in model.parameters()]        # preconditioned, before clipping
        nu = min(1.0, math.sqrt(kl / (lr * lr * sum(float((a * b).sum()) for a, b in zip(P, raw)))))
        assert opt.last_kl_nu == pytest.approx(nu, rel=1e-5) and nu < 1.0
        d = [nu * q + wd * wi for q, wi in zip(P, w)]
        bufs = d if bufs is None else [m * b + di for b, di in zip(bufs, d)]
        for p, wi, b in zip(model.parameters(), w, bufs):
            torch.testing.assert_close(p.detach(), wi - lr * b, rtol=1e-5, atol=1e-6)


def test_eig_and_cholesky_agree():
    torch.manual_seed(6)
    results = []
    for inverse in ("cholesky", "eig"):
        torch.manual_seed(6)
        model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
        opt = KFAC(model, lr=0.1, momentum=0.9, damping=0.01, inverse=inverse, refresh_interval=2)
        g = torch.Generator().manual_seed(0)
        for _ in range(3):
            x, y = torch.randn(6, 2, 5, 5, generator=g), torch.randint(0, 3, (6,), generator=g)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        results.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-4, atol=1e-5)


def test_refresh_interval_respected(monkeypatch):
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    calls: list[int] = []
    opt = KFAC(model, lr=0.01, momentum=0.9, refresh_interval=3, refresh_schedule=((4, 1),))
    orig = KFAC._invert
    monkeypatch.setattr(KFAC, "_invert", lambda self, u: (calls.append(self.steps), orig(self, u))[1])
    gram_calls = []
    orig_gram = KFAC._gram
    monkeypatch.setattr(KFAC, "_gram", lambda self, r, s: (gram_calls.append(self.steps), orig_gram(self, r, s))[1])
    refreshed = []
    for step in range(10):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(5, 4)), torch.randint(0, 3, (5,))).backward()
        opt.step()
        refreshed.append(bool(opt.last_timings["refresh"]))
    want = [0, 3, 6, 7, 8, 9]                                   # interval 3, then 1 from iteration 4 on
    assert [i for i, r in enumerate(refreshed) if r] == want
    assert sorted(set(calls)) == want and len(calls) == 2 * len(want)   # two layers inverted per refresh
    assert sorted(set(gram_calls)) == want and len(gram_calls) == 4 * len(want)  # A and G only when refreshing
    assert opt.refreshes == len(want) == count_refreshes(3, ((4, 1),), 10)
    assert opt.inversions == 2 * len(want)


def test_missing_capture_is_reported():
    model = nn.Linear(3, 2)
    opt = KFAC(model, lr=0.1)
    with torch.no_grad():
        model(torch.randn(2, 3))
    model.weight.grad = torch.zeros_like(model.weight)
    model.bias.grad = torch.zeros_like(model.bias)
    with pytest.raises(RuntimeError, match="captured no factors"):
        opt.step()


def test_inplace_relu_after_hooked_layers_and_grouped_conv():
    torch.manual_seed(8)
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                          nn.Flatten(), nn.Linear(4 * 3 * 3, 2), nn.ReLU(inplace=True))
    opt = KFAC(model, lr=0.05, momentum=0.9, damping=0.01, refresh_interval=1)
    assert opt.units[0].d_a == 2 * 3 * 3
    losses = []
    x, y = torch.randn(8, 4, 5, 5), torch.randn(8, 2).abs()
    for _ in range(5):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


# ----------------------------------------------------------------------------------------------------------
# distributed K-FAC under MPI

def _mpiexec() -> str | None:
    cand = Path(sys.executable).with_name("mpiexec")
    return str(cand) if cand.exists() else shutil.which("mpiexec")


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.parametrize("ranks", [2, 3])
def test_distributed_kfac_matches_single_process(ranks):
    mpiexec = _mpiexec()
    if mpiexec is None:
        pytest.skip("mpiexec not found")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([mpiexec, "-n", str(ranks), sys.executable,
                           str(ROOT / "tests" / "mpi_scripts" / "kfac_dist_check.py")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("KFAC_DIST_OK "))
    report = json.loads(line.split(" ", 1)[1])
    assert report["world"] == ranks
    assert len(report["cases"]) == 6
    for case in report["cases"]:
        assert case["refreshes"] == 2
        if not case["bn"] and case["opts"].get("factor_dtype_bytes", 4) == 4:
            assert case["rel_err"] < 1e-4
    assert report["cases"][0]["ranks_used"] == ranks          # 3 layers spread over the ranks (partition)
