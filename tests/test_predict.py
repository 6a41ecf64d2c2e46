"""Tests of the analytic predictor (perfmodel.predict) and ``perfmodel predict``: the JSON contract on the
papers' configurations, the arithmetic that ties the numbers together, the model's invariants (weak
scaling, overlap, buckets, K-FAC vs SGD, the convergence model, gradient accumulation), one-line errors
for bad input, and that predictions run without torch.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hardware.catalog import load_system
from perfmodel import convergence
from perfmodel.cli.main import main
from perfmodel.compute import layer_times
from perfmodel.config import load_config
from perfmodel.network import best_profiles
from perfmodel.overlap import assign_buckets
from perfmodel.predict import iteration_model, predict
from perfmodel.workload import load_workload

REPO = Path(__file__).resolve().parents[1]
IMAGENET_TRAIN, IMAGENET_VAL = 1_281_167, 50_000
CONTRACT = ("time_to_train_s", "epochs", "iterations", "iteration_s", "images_per_s", "scaling_efficiency",
            "breakdown")
BREAKDOWN = ("compute_s", "comm_total_s", "comm_exposed_s", "optimizer_s", "io_s")


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


_CACHE: dict[tuple, dict] = {}


def predict_json(*args):
    """``perfmodel predict ARGS --json`` in-process, parsed (cached per argument list)."""
    key = tuple(args)
    if key not in _CACHE:
        rc, out, err = run_cli(["predict", *args, "--json"])
        assert rc == 0, err
        assert err == ""
        _CACHE[key] = json.loads(out)
    return _CACHE[key]


def cfg(**kw):
    return load_config(None, **kw)


# ---------------------------------------------------------------------------------------------------------
# the papers' configurations return the contract
# ---------------------------------------------------------------------------------------------------------
KNL_2048 = ("--model", "resnet50", "--system", "stampede2-knl", "--nodes", "2048", "--batch", "32768",
            "--optimizer", "lars", "--epochs", "90")
GOYAL = ("--system", "big-basin-p100", "--nodes", "32", "--batch", "8192", "--optimizer", "sgd")
KFAC_1024 = ("--system", "dgx1-v100", "--nodes", "128", "--batch", "32768", "--optimizer", "kfac", "--epochs", "35")
SKX_448 = ("--system", "stampede2-skx", "--nodes", "448", "--batch", "14336", "--epochs", "90",
           "--ranks-per-node", "2")
SKX_64 = ("--system", "stampede2-skx", "--nodes", "64", "--batch", "4096", "--epochs", "72", "--ranks-per-node", "2")

PAPER_CONFIGS = [
    pytest.param(KNL_2048, 2048, 1, "lars", 90.0, id="you-knl-2048", marks=pytest.mark.slow),
    pytest.param(GOYAL, 32, 8, "sgd", None, id="goyal-256-p100"),
    pytest.param(KFAC_1024, 128, 8, "kfac", 35.0, id="osawa-kfac-1024-v100", marks=pytest.mark.slow),
    pytest.param(SKX_448, 448, 2, "sgd", 90.0, id="codreanu-skx-448"),
    pytest.param(SKX_64, 64, 2, "sgd", 72.0, id="codreanu-skx-64"),
]


@pytest.mark.parametrize("args, nodes, rpn, optimizer, epochs", PAPER_CONFIGS)
def test_paper_configs_return_every_contract_key(args, nodes, rpn, optimizer, epochs):
    d = predict_json(*args)
    for key in CONTRACT:
        assert key in d, key
    for key in BREAKDOWN:
        assert key in d["breakdown"], key
        assert math.isfinite(d["breakdown"][key]) and d["breakdown"][key] >= 0.0
    for key in ("compute_s", "comm_total_s", "comm_exposed_s", "optimizer_s"):
        assert d["breakdown"][key] > 0.0, key           # multi-node: everything costs something
    assert d["breakdown"]["io_s"] == 0.0                 # documented: input pipeline fully overlapped
    for key in CONTRACT[:-1]:
        assert math.isfinite(d[key]) and d[key] > 0, key
    assert isinstance(d["iterations"], int)
    assert 0 < d["scaling_efficiency"] <= 1.0 + 1e-9 or optimizer == "kfac"
    batch = int(args[args.index("--batch") + 1])
    b = d["breakdown"]
    # consistent arithmetic
    assert d["ranks"] == nodes * rpn and d["nodes"] == nodes and d["ranks_per_node"] == rpn
    assert d["per_device_batch"] * d["ranks"] == batch == d["global_batch"]
    assert b["compute_s"] == pytest.approx(b["forward_s"] + b["backward_s"], rel=1e-12)
    assert d["iteration_s"] == pytest.approx(b["compute_s"] + b["comm_exposed_s"] + b["optimizer_s"] + b["io_s"],
                                             rel=1e-12)
    assert b["comm_exposed_s"] <= b["comm_total_s"] * (1 + 1e-12)
    rb = d["run_breakdown"]
    assert d["time_to_train_s"] == pytest.approx(d["iterations"] * d["iteration_s"] + rb["eval_s"] + rb["startup_s"],
                                                 rel=1e-12)
    assert rb["training_s"] == pytest.approx(d["iterations"] * d["iteration_s"], rel=1e-12)
    assert rb["eval_s"] > 0 and rb["startup_s"] > 0
    assert d["images_per_s"] == pytest.approx(batch / d["iteration_s"], rel=1e-12)
    ipe = math.ceil(IMAGENET_TRAIN / batch)
    assert d["iterations_per_epoch"] == ipe
    assert d["iterations"] == math.ceil(d["epochs"] * ipe)
    if epochs is not None:
        assert d["epochs"] == epochs and d["epochs_source"] == "config"
    else:
        assert d["epochs_source"].startswith("convergence model")
    # evaluation: a forward pass over the validation set, split over the ranks, once per epoch
    det = d["details"]
    fwd_per_image = b["forward_s"] / (det["micro_batch"] * det["accumulation_steps"])
    assert det["evaluations"] == math.floor(d["epochs"] + 1e-9)
    assert rb["eval_s"] == pytest.approx(det["evaluations"] * math.ceil(IMAGENET_VAL / d["ranks"]) * fwd_per_image,
                                         rel=1e-9)
    assert det["memory_per_rank_bytes"] <= det["memory_available_bytes"]
    assert det["buckets"] == len(det["bucket_algorithms"]) >= 1
    assert d["config"]["optimizer"] == optimizer and len(d["config_hash"]) == 16
    assert d["kind"] == "prediction" and d["method"] == "analytic"


def test_paper_configs_land_near_the_published_times():
    """Sanity bands, not accuracy claims (validation/ measures those): Goyal ~1 h, Codreanu 448 nodes ~1 h."""
    assert 0.5 * 3600 < predict_json(*GOYAL)["time_to_train_s"] < 2 * 3600
    assert 0.5 * 3600 < predict_json(*SKX_448)["time_to_train_s"] < 2 * 3600
    # 64 SKX nodes at batch 4096: per-node throughput of the same order as the reported 98.5 images/s
    d = predict_json(*SKX_64)
    assert 30 < d["images_per_s"] / 64 < 300


@pytest.mark.slow
def test_knl_2048_near_you_et_al():
    d = predict_json(*KNL_2048)
    assert d["per_device_batch"] == 16 and d["iterations"] == 90 * 40
    assert 10 * 60 < d["time_to_train_s"] < 40 * 60     # You et al.: 20 minutes


def test_human_readable_output():
    rc, out, err = run_cli(["predict", *GOYAL])
    assert rc == 0 and err == ""
    assert "time to train" in out and "exposed comm" in out and "gradient buckets" in out


# ---------------------------------------------------------------------------------------------------------
# the prediction is the sum of its models
# ---------------------------------------------------------------------------------------------------------
def test_prediction_composes_compute_and_network_models():
    c = cfg(system="dgx1-v100", nodes=4, batch=1024, epochs=1.0)
    p = predict(c)
    system, table = load_system("dgx1-v100"), load_workload("resnet50")
    assert p.per_device_batch == 32 and p.details["accumulation_steps"] == 1
    lt = layer_times(table, system.device, 32)
    assert p.breakdown["forward_s"] == pytest.approx(float(lt.forward_total_s[0]), rel=1e-12)
    assert p.breakdown["backward_s"] == pytest.approx(float(lt.backward_total_s[0]), rel=1e-12)
    grads = table.gradient_sizes_in_ready_order()
    buckets = assign_buckets(grads, 25e6)
    sizes = np.bincount(buckets, weights=grads)
    t, algs = best_profiles(system, 4, 8, "auto", sizes)
    assert p.details["buckets"] == len(sizes)
    assert p.details["bucket_algorithms"] == list(algs)
    assert p.breakdown["comm_total_s"] == pytest.approx(float(t.sum()), rel=1e-12)


def test_iteration_model_vectorised_equals_scalar_calls():
    system, table = load_system("big-basin-p100"), load_workload("resnet50")
    batches = [8, 32, 64]
    vec = iteration_model(table, system, 4, 8, batches)
    for i, b in enumerate(batches):
        one = iteration_model(table, system, 4, 8, [b])
        for name in ("forward_s", "backward_s", "comm_total_s", "comm_exposed_s", "optimizer_s",
                     "iteration_s", "memory_per_rank_bytes"):
            assert getattr(vec, name)[i] == pytest.approx(getattr(one, name)[0], rel=1e-12), name


def test_single_rank_has_no_communication():
    p = predict(cfg(system="stampede2-knl", nodes=1, batch=64, epochs=1.0))
    assert p.ranks == 1 and p.scaling_efficiency == 1.0
    assert p.breakdown["comm_total_s"] == 0.0 and p.breakdown["comm_exposed_s"] == 0.0
    assert p.run_breakdown["startup_s"] == 0.0


# ---------------------------------------------------------------------------------------------------------
# invariants
# ---------------------------------------------------------------------------------------------------------
WEAK = [("dgx1-v100", 8, 32), ("big-basin-p100", 8, 32), ("stampede2-knl", 1, 32), ("stampede2-skx", 2, 16),
        ("tsubame3", 4, 32)]


@pytest.mark.parametrize("optimizer", ["sgd", "lars"])
@pytest.mark.parametrize("system, rpn, per_device", WEAK)
def test_weak_scaling(system, rpn, per_device, optimizer):
    nodes = [1, 2, 4, 8, 16, 32]
    preds = [predict(cfg(system=system, nodes=n, ranks_per_node=rpn, batch=per_device * rpn * n,
                         optimizer=optimizer, epochs=1.0)) for n in nodes]
    ips = [p.images_per_s for p in preds]
    assert all(b > a for a, b in zip(ips, ips[1:]))
    assert preds[0].scaling_efficiency == 1.0
    for n, p in zip(nodes, preds):
        assert 0 < p.scaling_efficiency <= 1.0 + 1e-9
        assert p.scaling_efficiency == pytest.approx(p.images_per_s / (n * ips[0]), rel=1e-12)


@pytest.mark.parametrize("kw", [
    dict(system="big-basin-p100", nodes=8, batch=2048),
    dict(system="dgx1-v100", nodes=16, batch=4096, optimizer="kfac"),
    dict(system="stampede2-knl", nodes=64, batch=2048, optimizer="lars"),
    dict(system="big-basin-p100", nodes=32, batch=8192, bucket_bytes=1e6),
])
def test_overlap_off_never_faster(kw):
    on = predict(cfg(epochs=1.0, **kw))
    off = predict(cfg(epochs=1.0, overlap=False, **kw))
    assert off.breakdown["comm_exposed_s"] == pytest.approx(off.breakdown["comm_total_s"], rel=1e-12)
    if load_system(kw["system"]).device.kind == "gpu":
        assert off.breakdown["comm_total_s"] == pytest.approx(on.breakdown["comm_total_s"], rel=1e-12)
    else:   # on a CPU the overlapped collectives share the cores with the backward: their spans stretch
        assert on.breakdown["comm_total_s"] > off.breakdown["comm_total_s"]
    assert on.breakdown["comm_exposed_s"] < off.breakdown["comm_total_s"]
    assert off.iteration_s > on.iteration_s
    assert off.time_to_train_s > on.time_to_train_s


def test_larger_bucket_fewer_buckets():
    counts = []
    for mb in [0.5, 2, 5, 25, 100, 1000]:
        p = predict(cfg(system="big-basin-p100", nodes=8, batch=2048, epochs=1.0, bucket_bytes=mb * 1e6))
        counts.append(p.details["buckets"])
    assert all(b <= a for a, b in zip(counts, counts[1:]))
    assert counts[0] > counts[2] > counts[3] > counts[4]
    assert counts[-1] == 1                              # 1000 MB holds all 102 MB of ResNet-50 gradients
    grads = load_workload("resnet50").gradient_sizes_in_ready_order()
    assert counts[3] == assign_buckets(grads, 25e6).max() + 1


def test_one_big_bucket_exposes_all_communication():
    p = predict(cfg(system="big-basin-p100", nodes=8, batch=2048, epochs=1.0, bucket_bytes=1e9))
    assert p.breakdown["comm_exposed_s"] == pytest.approx(p.breakdown["comm_total_s"], rel=1e-12)


@pytest.mark.parametrize("system, nodes, rpn, batch", [
    ("dgx1-v100", 16, 8, 4096), ("big-basin-p100", 4, 8, 1024), ("stampede2-knl", 32, 1, 1024)])
def test_kfac_iteration_slower_than_sgd(system, nodes, rpn, batch):
    sgd = predict(cfg(system=system, nodes=nodes, batch=batch, epochs=1.0))
    kfac = predict(cfg(system=system, nodes=nodes, batch=batch, epochs=1.0, optimizer="kfac"))
    assert kfac.breakdown["optimizer_s"] > sgd.breakdown["optimizer_s"]
    assert kfac.iteration_s > sgd.iteration_s
    assert kfac.breakdown["compute_s"] == pytest.approx(sgd.breakdown["compute_s"], rel=1e-12)


def test_kfac_prices_the_executors_ring_allgather_of_preconditioned_gradients():
    """The executor's default K-FAC averages the gradients with the bucketed allreduce and then all-gathers
    every parameter's preconditioned gradient (fp32) with its ring: the optimizer's per-step communication
    is that ring's profile for the parameter bytes; with grad_allgather off it is the allreduce alone."""
    c = cfg(system="dgx1-v100", nodes=4, batch=512, epochs=1.0, optimizer="kfac")
    d = predict(c).to_dict()["details"]["optimizer"]
    params = float(load_workload("resnet50").totals.param_bytes)
    assert d["allgather_bytes"] == pytest.approx(params, rel=1e-9)
    ring = best_profiles(load_system("dgx1-v100"), 4, 8, "ring", [params], op="allgather")[0][0]
    auto = best_profiles(load_system("dgx1-v100"), 4, 8, "auto", [params], op="allgather")[0][0]
    assert d["allgather_s"] == pytest.approx(ring, rel=1e-9) and ring >= auto
    off = predict(cfg(system="dgx1-v100", nodes=4, batch=512, epochs=1.0, optimizer="kfac",
                      optimizer_options={"grad_allgather": False})).to_dict()["details"]["optimizer"]
    assert off["allgather_s"] == 0.0 and off["allgather_bytes"] == 0.0


def test_epochs_from_convergence_model():
    d = predict_json(*GOYAL)
    ref = convergence.reference_top1("resnet50")
    assert d["target_top1"] == ref
    assert d["epochs"] == pytest.approx(convergence.epochs_to_target("sgd", 8192, ref), rel=1e-12)
    assert "sgd" in d["epochs_source"] and "8192" in d["epochs_source"]
    lars = predict(cfg(system="big-basin-p100", nodes=32, batch=8192, optimizer="lars", target_top1=75.0))
    assert lars.epochs == pytest.approx(convergence.epochs_to_target("lars", 8192, 75.0), rel=1e-12)
    assert lars.target_top1 == 75.0
    # a larger batch needs at least as many epochs, a lower target fewer
    big = predict(cfg(system="big-basin-p100", nodes=32, batch=16384))
    assert big.epochs >= d["epochs"]
    low = predict(cfg(system="big-basin-p100", nodes=32, batch=8192, target_top1=70.0))
    assert low.epochs < d["epochs"]


def test_epochs_flag_wins_over_convergence_model():
    p = predict(cfg(system="big-basin-p100", nodes=32, batch=8192, epochs=10.0, target_top1=75.0))
    assert p.epochs == 10.0 and p.epochs_source == "config"
    assert p.iterations == 10 * math.ceil(IMAGENET_TRAIN / 8192)


def test_gradient_accumulation_when_the_batch_does_not_fit():
    p = predict(cfg(system="dgx1-v100", nodes=1, batch=65536, epochs=1.0))   # 8192 images per 16 GB GPU
    det = p.details
    b, micro, steps = p.per_device_batch, det["micro_batch"], det["accumulation_steps"]
    assert b == 8192 and steps > 1 and micro < b
    assert micro * steps >= b and micro * (steps - 1) < b
    avail, mem = det["memory_available_bytes"], det["memory_per_rank_bytes"]
    assert avail == pytest.approx(16 * 2**30)
    assert mem <= avail
    act = load_workload("resnet50").totals.act_bytes
    fit = math.floor((avail - mem + micro * act) / act)    # largest micro-batch that fits
    assert micro <= fit and (steps - 1) * fit < b          # as few accumulation steps as possible
    # compute = steps x one micro-batch
    lt = layer_times(load_workload("resnet50"), load_system("dgx1-v100").device, micro)
    assert p.breakdown["forward_s"] == pytest.approx(steps * float(lt.forward_total_s[0]), rel=1e-12)
    # a batch that fits runs in one step
    small = predict(cfg(system="dgx1-v100", nodes=1, batch=256, epochs=1.0))
    assert small.details["accumulation_steps"] == 1 and small.details["micro_batch"] == 32


def test_model_that_cannot_fit_is_infeasible():
    from hardware.errors import InfeasibleError
    from perfmodel.predict import _micro_batches
    system, table = load_system("dgx1-v100"), load_workload("resnet50")
    with pytest.raises(InfeasibleError):
        _micro_batches(table, system, "fp32", np.array([32.0]), np.array([system.memory_per_device_bytes]))


# ---------------------------------------------------------------------------------------------------------
# bad input: one line, exit 2, names the field
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, must_contain", [
    (["--batch", "1000", "--nodes", "3"], ["training.batch", "1000", "24 ranks"]),
    (["--optimizer", "adam"], ["training.optimizer", "adam"]),
    (["--nodes", "100"], ["system.nodes", "100", "44"]),
    (["--target-top1", "99"], ["target_top1", "99", "unreachable"]),
    (["--system", "nosuch"], ["system", "nosuch", "unknown system"]),
    (["--model", "nosuch"], ["model", "nosuch", "unknown model"]),
    (["--epochs", "inf"], ["training.epochs", "inf"]),
    (["--epochs", "0"], ["training.epochs"]),
    (["--system", "dgx1-v100", "--ranks-per-node", "16"], ["system.ranks_per_node", "16"]),
    (["--system", "stampede2-knl", "--nodes", "4", "--batch", "256", "--ranks-per-node", "3"],
     ["training.batch", "12 ranks"]),
    (["--allreduce", "nosuch", "--nodes", "2", "--epochs", "1"], ["allreduce", "nosuch"]),
    (["--model", "tiny"], ["training.epochs", "tiny"]),
    (["--batch", "abc"], ["--batch", "abc"]),
])
def test_bad_input_one_line_exit_2(args, must_contain):
    rc, out, err = run_cli(["predict", *args, "--json"])
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("perfmodel: error: ")
    assert "Traceback" not in err
    for s in must_contain:
        assert s in lines[0], (s, lines[0])


def test_bad_config_file_names_file_and_field(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[system]\nsystem = 'nosuch'\n")
    rc, out, err = run_cli(["predict", str(path)])
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert str(path) in err and "system.system" in err and "nosuch" in err
    path.write_text("[training]\nbatch = true\n")
    rc, out, err = run_cli(["predict", str(path)])
    assert rc == 2 and str(path) in err and "training.batch" in err


# ---------------------------------------------------------------------------------------------------------
# no torch
# ---------------------------------------------------------------------------------------------------------
def test_predict_runs_without_torch():
    code = (
        "import sys, json\n"
        "sys.modules['torch'] = None\n"      # any `import torch` now raises ImportError
        "sys.modules['mpi4py'] = None\n"
        "from perfmodel.cli.main import main\n"
        "rc = main(['predict', '--system', 'dgx1-v100', '--nodes', '2', '--batch', '512', '--optimizer', 'kfac',"
        " '--epochs', '1', '--json'])\n"
        "loaded = [m for m, v in sys.modules.items() if v is not None and m.split('.')[0] in ('torch', 'mpi4py')]\n"
        "assert not loaded, loaded\n"
        "sys.exit(rc)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout)
    assert all(k in d for k in CONTRACT) and d["ranks"] == 16
