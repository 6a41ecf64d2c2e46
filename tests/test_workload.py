"""Workload tables: extraction formulas against closed forms, the cached catalog against fresh extraction and
published numbers, invariants (parameters, gradient order, backward ~ 2x forward), the torch-free loader and
its validation, and the ``perfmodel workload`` command."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from torch import nn

import perfmodel.cli.main as cli_main
from executor.models import build_model, list_models
from executor.workload_extract import build_meta, dumps_table, extract_registered, extract_table
from hardware.errors import ConfigError, SpecError
from perfmodel.workload import WORKLOAD_DIR, load_workload, list_workloads, parse_workload

ROOT = Path(__file__).resolve().parent.parent
IMAGENET_RESNETS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
                    "resnet101": 44_549_160, "resnet152": 60_192_808}


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``perfmodel`` in-process; returns (exit code, stdout, stderr).

    Only the subcommand modules that exist are registered, so this file does not depend on other
    subcommands being present in the tree yet.
    """
    monkeypatch.setattr(cli_main, "SUBCOMMANDS",
                        {k: v for k, v in cli_main.SUBCOMMANDS.items() if importlib.util.find_spec(v)})

    def run(*argv):
        capsys.readouterr()
        rc = cli_main.main(list(argv))
        out, err = capsys.readouterr()
        return rc, out, err
    return run


def comparable(table: dict) -> dict:
    """A table as the file stores it, minus software versions."""
    data = json.loads(dumps_table(table)) if "layers" in table else table
    return {k: v for k, v in data.items() if k != "extracted_with"}


# ------------------------------------------------------------------------------ closed-form known answers
def resnet_macs(layers, bottleneck, num_classes=1000):
    """Multiply-adds of the convolutions and the classifier of an ImageNet ResNet (v1.5), by hand."""
    macs = 64 * 112 * 112 * 3 * 7 * 7  # stem
    h, inp = 56, 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
        for i in range(blocks):
            stride = 2 if stage > 0 and i == 0 else 1
            ho = h // stride
            if bottleneck:
                out = planes * 4
                macs += planes * h * h * inp + planes * ho * ho * planes * 9 + out * ho * ho * planes
            else:
                out = planes
                macs += out * ho * ho * inp * 9 + out * ho * ho * out * 9
            if stride != 1 or inp != out:
                macs += out * ho * ho * inp
            inp, h = out, ho
    return macs + inp * num_classes


def matmul_flops(table):
    """FLOP of the conv/linear rows without their bias terms."""
    total = 0
    for layer in table.layers:
        if layer.type in ("Conv2d", "Linear"):
            bias = math.prod(layer.shape["out_shape"]) if layer.shape["bias"] else 0
            total += layer.flops_fwd - bias
    return total


@pytest.mark.parametrize("name,layers,bottleneck", [("resnet18", [2, 2, 2, 2], False),
                                                    ("resnet34", [3, 4, 6, 3], False),
                                                    ("resnet50", [3, 4, 6, 3], True),
                                                    ("resnet101", [3, 4, 23, 3], True),
                                                    ("resnet152", [3, 8, 36, 3], True)])
def test_resnet_conv_flops_equal_closed_form(name, layers, bottleneck):
    table = load_workload(name)
    assert matmul_flops(table) == 2 * resnet_macs(layers, bottleneck)
    assert table.totals.params == IMAGENET_RESNETS[name]


def test_resnet50_known_answers(cli):
    rc, out, err = cli("workload", "show", "resnet50", "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["params"] == 25_557_032 and data["param_bytes"] == 4 * 25_557_032
    assert abs(data["flops_fwd"] / 8.18e9 - 1) < 0.01
    assert 2 * 4_089_184_256 == matmul_flops(load_workload("resnet50"))  # 4.09 G multiply-adds
    for key in ("model", "dataset", "batch", "params", "param_bytes", "flops_fwd", "flops_bwd", "flops_bwd_input",
                "flops_bwd_weight", "act_bytes", "layers"):
        assert key in data
    assert data["model"] == "resnet50" and data["dataset"] == "imagenet" and data["batch"] == 1
    assert data["flops_bwd"] == data["flops_bwd_input"] + data["flops_bwd_weight"]
    # backward is about twice forward (the stem conv needs no input gradient)
    assert 1.9 < data["flops_bwd"] / data["flops_fwd"] < 2.0
    conv1 = data["layers"][0]
    assert conv1["name"] == "conv1" and conv1["flops_fwd"] == 2 * 64 * 112 * 112 * 3 * 49
    assert conv1["shape"] == {"in_channels": 3, "out_channels": 64, "kernel_size": [7, 7], "stride": [2, 2],
                              "padding": [3, 3], "dilation": [1, 1], "groups": 1, "bias": False,
                              "in_hw": [224, 224], "out_hw": [112, 112], "out_shape": [64, 112, 112]}


def test_show_batch_scales_flops_not_params(cli):
    one = json.loads(cli("workload", "show", "resnet18", "--json")[1])
    rc, out, _ = cli("workload", "show", "resnet18", "--json", "--batch", "32")
    many = json.loads(out)
    assert rc == 0 and many["batch"] == 32
    for key in ("flops_fwd", "flops_bwd", "flops_bwd_input", "flops_bwd_weight", "act_bytes"):
        assert many[key] == 32 * one[key]
    assert many["params"] == one["params"] and many["param_bytes"] == one["param_bytes"]
    assert many["layers"][5]["flops_fwd"] == 32 * one["layers"][5]["flops_fwd"]
    assert many["layers"][5]["params"] == one["layers"][5]["params"]
    rc, _, err = cli("workload", "show", "resnet18", "--batch", "0")
    assert rc == 2 and "batch" in err


def test_alexnet_known_answers():
    t = load_workload("alexnet")
    assert t.totals.params == 61_100_840
    macs = (64 * 55 * 55 * 3 * 121 + 192 * 27 * 27 * 64 * 25 + 384 * 13 * 13 * 192 * 9 + 256 * 13 * 13 * 384 * 9
            + 256 * 13 * 13 * 256 * 9 + 9216 * 4096 + 4096 * 4096 + 4096 * 1000)
    assert macs == 714_188_480  # the "0.7 G multiply-adds" of the papers
    assert matmul_flops(t) == 2 * macs
    assert abs(t.totals.flops_fwd / 1.43e9 - 1) < 0.01
    bn = load_workload("alexnet_bn")
    assert bn.totals.params == 61_110_184 and abs(bn.totals.flops_fwd / t.totals.flops_fwd - 1) < 0.01


def test_cifar_tables_match_models():
    for name, params in (("resnet20", 269_722), ("resnet32", 464_154), ("resnet56", 853_018), ("tiny", 1_586)):
        t = load_workload(name)
        assert (t.dataset, t.input_shape, t.num_classes, t.totals.params) == ("cifar10", (3, 32, 32), 10, params)
    # He et al. 2016: ResNet-20 about 41 M multiply-adds per 32x32 image
    assert abs(matmul_flops(load_workload("resnet20")) / 2 / 40.55e6 - 1) < 0.01


# ------------------------------------------------------------------------------ per-layer formulas
@pytest.mark.parametrize("cin,cout,k,stride,pad,groups,bias,dil,hw", [
    (3, 8, 3, 1, 1, 1, False, 1, 16), (8, 16, 3, 2, 1, 1, True, 1, 17), (16, 16, 3, 1, 1, 16, False, 1, 9),
    (4, 12, 5, 2, 0, 2, True, 1, 23), (6, 6, 3, 1, 2, 3, False, 2, 12), (2, 64, 1, 1, 0, 1, True, 1, 7)])
def test_conv_formula_closed_form(cin, cout, k, stride, pad, groups, bias, dil, hw):
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, groups=groups, bias=bias, dilation=dil)
    model = nn.Sequential(nn.Identity(), conv, conv.__class__(cout, cout, 1))
    table = extract_table(model, (cin, hw, hw), "t", "custom")
    row = table["layers"][1]
    ho = (hw + 2 * pad - dil * (k - 1) - 1) // stride + 1
    macs = cout * ho * ho * (cin // groups) * k * k
    e_out = cout * ho * ho
    assert row["shape"]["out_hw"] == [ho, ho] and row["shape"]["in_hw"] == [hw, hw]
    assert row["flops_fwd"] == 2 * macs + (e_out if bias else 0)
    assert row["flops_bwd_input"] == 0  # its input is the image (through a view): no gradient needed
    assert row["flops_bwd_weight"] == 2 * macs + (e_out if bias else 0)
    assert row["params"] == sum(p.numel() for p in conv.parameters())
    assert row["act_out_bytes"] == 4 * e_out
    assert row["mem_bytes_fwd"] == 4 * (cin * hw * hw + e_out)
    assert row["mem_bytes_bwd"] == 4 * (e_out + cin * hw * hw)
    nxt = table["layers"][2]  # the second conv needs its input gradient
    assert nxt["flops_bwd_input"] == 2 * cout * ho * ho * cout and nxt["mem_bytes_bwd"] == 4 * 3 * e_out


def test_other_layer_formulas():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.MaxPool2d(2), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(),
                          nn.Linear(4, 3), nn.Tanh())
    rows = {r["type"]: r for r in extract_table(model, (3, 8, 8), "t", "custom")["layers"]}
    e = 4 * 8 * 8
    assert (rows["BatchNorm2d"]["flops_fwd"], rows["BatchNorm2d"]["flops_bwd_input"],
            rows["BatchNorm2d"]["flops_bwd_weight"]) == (5 * e, 6 * e, 3 * e)
    assert rows["BatchNorm2d"]["shape"] == {"num_features": 4, "hw": [8, 8], "out_shape": [4, 8, 8]}
    assert (rows["ReLU"]["flops_fwd"], rows["ReLU"]["flops_bwd_input"], rows["ReLU"]["flops_bwd_weight"]) == (e, e, 0)
    assert rows["MaxPool2d"]["flops_fwd"] == 4 * (e // 4) and rows["MaxPool2d"]["flops_bwd_input"] == e // 4
    assert rows["AvgPool2d"]["flops_fwd"] == 4 * (e // 16) == rows["AvgPool2d"]["flops_bwd_input"]
    assert rows["AdaptiveAvgPool2d"]["flops_fwd"] == e // 16 + 4
    assert rows["Flatten"]["flops_fwd"] == rows["Flatten"]["act_out_bytes"] == rows["Flatten"]["mem_bytes_fwd"] == 0
    assert rows["Dropout"]["flops_fwd"] == 2 * 4
    lin = rows["Linear"]
    assert (lin["flops_fwd"], lin["flops_bwd_input"], lin["flops_bwd_weight"]) == (2 * 12 + 3, 24, 2 * 12 + 3)
    assert lin["shape"] == {"in_features": 4, "out_features": 3, "bias": True, "out_shape": [3]}
    assert rows["Tanh"]["flops_fwd"] == 4 * 3 and rows["Tanh"]["grad_ready_index"] is None


def test_residual_add_is_counted():
    t = load_workload("resnet50")
    adds = [layer for layer in t.layers if layer.type == "Add"]
    assert len(adds) == 16
    first = t.layer("layer1.0.add")
    assert first.flops_fwd == 256 * 56 * 56 and first.mem_bytes_fwd == 4 * 3 * 256 * 56 * 56
    assert first.flops_bwd_input == 256 * 56 * 56


# ------------------------------------------------------------------------------ catalog vs fresh extraction
@pytest.mark.parametrize("name", ["resnet18", "resnet20", "tiny", "alexnet_bn"])
def test_cached_table_equals_fresh_extraction(name):
    cached = json.loads((WORKLOAD_DIR / f"{name}.json").read_text())
    assert comparable(cached) == comparable(extract_registered(name))
    assert cached["extracted_with"]["torch"]


def test_extract_script_check_all_up_to_date(capsys):
    spec = importlib.util.spec_from_file_location("extract_workloads", ROOT / "scripts" / "extract_workloads.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--check"]) == 0, capsys.readouterr().out


def test_catalog_holds_every_registered_model():
    assert set(list_workloads()) == set(list_models())
    assert list_workloads()[:4] == ["alexnet", "alexnet_bn", "digits_cnn", "digits_mlp"]  # natural order
    assert list_workloads().index("resnet20") < list_workloads().index("resnet110")


# ------------------------------------------------------------------------------ invariants
@pytest.mark.parametrize("name", ["tiny", "resnet20"])
def test_layer_params_sum_to_real_model(name):
    model = build_model(name)  # a real CPU build
    table = extract_table(model, load_workload(name).input_shape, name, "cifar10")
    assert table["totals"]["params"] == sum(p.numel() for p in model.parameters())
    assert sum(r["params"] for r in table["layers"]) == table["totals"]["params"]
    assert all(p.device.type == "cpu" for p in model.parameters())  # the caller's model was not moved
    assert comparable(table) == comparable(extract_registered(name))


@pytest.mark.parametrize("name", sorted(list_workloads()))
def test_grad_ready_index_is_reverse_forward_permutation(name):
    t = load_workload(name)
    with_grad = [i for i, layer in enumerate(t.layers) if layer.grad_ready_index is not None]
    assert with_grad == [i for i, layer in enumerate(t.layers) if layer.params > 0]
    assert [t.layers[i].grad_ready_index for i in with_grad] == list(range(len(with_grad)))[::-1]
    assert list(t.ready_order()) == with_grad[::-1]
    sizes = t.gradient_sizes_in_ready_order()
    assert len(sizes) == len(with_grad) and sizes.sum() == t.totals.param_bytes == t.gradient_bytes
    seg = t.backward_flops_in_ready_order()
    assert len(seg) == len(with_grad) and np.all(seg >= 0) and math.isclose(seg.sum(), t.totals.flops_bwd)


@pytest.mark.parametrize("name", sorted(n for n in list_workloads() if n != "digits_mlp"))  # the MLP has no conv
def test_conv_backward_is_twice_forward_except_first(name):
    t = load_workload(name)
    convs = [layer for layer in t.layers if layer.type == "Conv2d"]
    first, rest = convs[0], convs[1:]
    assert t.layers[0] is first and first.flops_bwd_input == 0 and first.flops_bwd == first.flops_fwd
    for c in rest:
        if c.shape["bias"]:  # AlexNet: the bias gradient is a sum, not a multiply-add
            assert abs(c.flops_bwd / c.flops_fwd - 2) < 0.01
        else:
            assert c.flops_bwd == 2 * c.flops_fwd and c.flops_bwd_input == c.flops_bwd_weight == c.flops_fwd


def test_resnet50_gradient_order():
    t = load_workload("resnet50")
    sizes = t.gradient_sizes_in_ready_order()
    assert len(sizes) == 53 + 53 + 1  # convs, BNs, fc
    assert sizes[0] == 4 * (2048 * 1000 + 1000) and sizes[-1] == 4 * 64 * 3 * 49
    assert t.layers[t.ready_order()[0]].name == "fc" and t.layer("conv1").grad_ready_index == 106
    seg = t.backward_flops_in_ready_order()
    assert seg[0] == t.layer("fc").flops_bwd  # nothing runs after fc in forward
    # the next gradient (the last block's bn3) is ready after backward went through the layers in between
    between = ("flatten", "avgpool", "layer4.2.relu_out", "layer4.2.add", "layer4.2.bn3")
    assert t.layers[t.ready_order()[1]].name == "layer4.2.bn3"
    assert seg[1] == sum(t.layer(n).flops_bwd for n in between)


def test_arrays_are_read_only_float_views():
    t = load_workload("resnet18")
    for key in ("flops_fwd", "flops_bwd_input", "flops_bwd_weight", "param_bytes", "mem_bytes_fwd",
                "mem_bytes_bwd", "act_out_bytes"):
        arr = getattr(t, key)
        assert arr.dtype == np.float64 and arr.shape == (t.n_layers,) and not arr.flags.writeable
        assert arr.sum() == t.totals[{"act_out_bytes": "act_bytes"}.get(key, key)]


# ------------------------------------------------------------------------------ meta device
def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_meta_extraction_allocates_nothing_and_does_not_hang():
    extract_registered("tiny")  # warm up torch's lazy initialisation
    rss0 = _rss_bytes() if sys.platform.startswith("linux") else 0
    t0 = time.perf_counter()
    model = build_meta("resnet152")
    table = extract_table(model, (3, 224, 224), "resnet152", "imagenet", 1000)
    elapsed = time.perf_counter() - t0
    assert all(p.device.type == "meta" for p in model.parameters())
    assert all(b.device.type == "meta" for b in model.buffers())
    assert table["totals"]["params"] == 60_192_808
    assert elapsed < 120.0   # a hang guard only, not a speed target (about 2 s here)
    if rss0:  # a real ResNet-152 would take 241 MB of parameters alone
        assert _rss_bytes() - rss0 < 64 * 2**20


# ------------------------------------------------------------------------------ user models via the CLI
USER_MODULE = '''
from torch import nn

def build(num_classes=7):
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, num_classes))

def tied():
    lin = nn.Linear(5, 5)
    return nn.Sequential(lin, nn.Tanh(), lin)

def not_a_model():
    return 42
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    path = tmp_path / "user_nets.py"
    path.write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield path
    sys.modules.pop("user_nets", None)


def test_extract_user_model(cli, user_module, tmp_path):
    out = tmp_path / "mine.json"
    rc, stdout, err = cli("workload", "extract", "user_nets:build", "--input-shape", "3,8,8", "--out", str(out),
                          "--json")
    assert rc == 0, err
    summary = json.loads(stdout)
    assert summary["out"] == str(out) and summary["model"] == "build" and summary["num_classes"] == 7
    table = load_workload(out)
    assert table.dataset == "custom" and table.input_shape == (3, 8, 8) and table.num_classes == 7
    assert table.totals.params == (3 * 9 * 4 + 4) + (144 * 7 + 7)
    assert [layer.type for layer in table.layers] == ["Conv2d", "ReLU", "Flatten", "Linear"]
    rc, stdout, _ = cli("workload", "show", str(out), "--json")
    assert rc == 0 and json.loads(stdout)["params"] == table.totals.params
    # --num-classes is passed to a factory that accepts it; a .py path works as well as a module name
    rc, _, err = cli("workload", "extract", f"{user_module}:build", "--input-shape", "3,8,8", "--num-classes", "3",
                     "--out", str(out), "--name", "mine")
    assert rc == 0, err
    table = load_workload(out)
    assert table.model == "mine" and table.num_classes == 3 and table.layers[-1].shape["out_features"] == 3


def test_extract_tied_weights_counted_once(cli, user_module, tmp_path):
    out = tmp_path / "tied.json"
    assert cli("workload", "extract", "user_nets:tied", "--input-shape", "5", "--out", str(out))[0] == 0
    t = load_workload(out)
    assert [layer.name for layer in t.layers] == ["0", "1", "0#2"]
    assert t.totals.params == 30 and t.layers[2].params == 0
    assert t.layers[2].flops_bwd_weight == t.layers[0].flops_bwd_weight > 0  # both calls add a weight gradient
    assert [layer.grad_ready_index for layer in t.layers] == [0, None, None]


def test_extract_registered_model_to_stdout(cli):
    rc, out, err = cli("workload", "extract", "resnet18", "--input-shape", "3,64,64", "--num-classes", "10")
    assert rc == 0, err
    data = json.loads(out)
    assert data["input_shape"] == [3, 64, 64] and data["num_classes"] == 10
    assert data["totals"]["params"] == 11_689_512 - 990 * 512 - 990


@pytest.mark.parametrize("argv,needle", [
    (["workload", "show", "resnet51"], "unknown model"),
    (["workload", "show", "/nonexistent/table.json"], "no such workload file"),
    (["workload", "extract", "user_nets:not_a_model", "--input-shape", "3"], "not a torch.nn.Module"),
    (["workload", "extract", "user_nets:missing", "--input-shape", "3"], "no attribute"),
    (["workload", "extract", "no_such_module_xyz:f", "--input-shape", "3"], "cannot import"),
    (["workload", "extract", "user_nets:build"], "input_shape"),
    (["workload", "extract", "user_nets:build", "--input-shape", "3,2,2"], "forward pass"),
    (["workload", "extract", "user_nets:build", "--input-shape", "3,x"], "input_shape"),
    (["workload", "extract", "bogus_model"], "unknown model"),
])
def test_cli_errors_are_one_line_exit_2(cli, user_module, argv, needle):
    rc, out, err = cli(*argv)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("perfmodel: error:") and needle in err


def test_list_and_text_show(cli):
    rc, out, _ = cli("workload", "list", "--json")
    assert rc == 0
    records = {r["model"]: r for r in json.loads(out)["workloads"]}
    assert set(records) == set(list_workloads()) and records["resnet50"]["params"] == 25_557_032
    rc, out, _ = cli("workload", "list")
    assert rc == 0 and "resnet152" in out and "60,192,808" in out
    rc, out, _ = cli("workload", "show", "tiny")
    assert rc == 0 and "conv1" in out and "1,586" in out and "flops_bwd" in out


# ------------------------------------------------------------------------------ loader: no torch, validation
def test_perfmodel_workload_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; import perfmodel.workload as w; "
            "import perfmodel.cli.workload_cmd; t = w.load_workload('resnet50'); print(t.totals.params); "
            "print(t.gradient_sizes_in_ready_order().sum())")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["25557032", str(float(4 * 25557032))]


def test_load_is_cached_and_aliases_resolve():
    assert load_workload("resnet50") is load_workload("ResNet-50") is load_workload(WORKLOAD_DIR / "resnet50.json")


def test_reload_after_file_changes(tmp_path):
    path = tmp_path / "t.json"
    data = json.loads((WORKLOAD_DIR / "tiny.json").read_text())
    path.write_text(json.dumps(data))
    assert load_workload(path).model == "tiny"
    data["model"] = "tiny-renamed"
    path.write_text(json.dumps(data))
    assert load_workload(path).model == "tiny-renamed"


def _broken(mutate):
    data = json.loads((WORKLOAD_DIR / "tiny.json").read_text())
    mutate(data)
    return data


@pytest.mark.parametrize("mutate,field", [
    (lambda d: d.update(schema="ttt-workload/0"), "schema"),
    (lambda d: d.pop("model"), "model"),
    (lambda d: d.update(input_shape=[3, 0, 32]), "input_shape"),
    (lambda d: d["layers"][2].pop("flops_fwd"), "layers[2].flops_fwd"),
    (lambda d: d["layers"][0].update(params=-1), "layers[0].params"),
    (lambda d: d["layers"][0].update(flops_fwd="many"), "layers[0].flops_fwd"),
    (lambda d: d["layers"][0].update(grad_ready_index=0), "layers[*].grad_ready_index"),
    (lambda d: d["layers"][2].update(grad_ready_index=9), "layers[2].grad_ready_index"),
    (lambda d: d["layers"][0].pop("grad_ready_index"), "layers[0].grad_ready_index"),
    (lambda d: d["totals"].update(params=1), "totals.params"),
    (lambda d: d["totals"].pop("flops_bwd"), "totals.flops_bwd"),
    (lambda d: d.update(layers=[]), "layers"),
])
def test_invalid_tables_raise_spec_error_naming_file_and_field(tmp_path, mutate, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_broken(mutate)))
    with pytest.raises(SpecError) as info:
        load_workload(path)
    assert info.value.field == field and str(path) in str(info.value) and "\n" not in str(info.value)


def test_invalid_json_and_unknown_name(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_workload(path)
    with pytest.raises(ConfigError) as info:
        load_workload("vgg16")
    assert (info.value.source, info.value.field, info.value.value) == ("--model", "model", "vgg16")


def test_round_trip_to_dict():
    t = load_workload("resnet20")
    again = parse_workload(json.loads(json.dumps(t.to_dict())), "memory")
    assert again == t and again.to_dict() == json.loads((WORKLOAD_DIR / "resnet20.json").read_text())
