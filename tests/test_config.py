"""Tests of perfmodel.config: TOML loading (every section and key), command-line overrides, unknown
sections/keys, wrong types, range errors naming the field, the config hash and bucket_mb -> bytes.
"""
from __future__ import annotations

import argparse
import textwrap

import pytest

from hardware.errors import ConfigError
from perfmodel.config import RunConfig, add_config_arguments, config_from_args, load_config

FULL_TOML = """
[workload]
model = "resnet18"
dataset = "cifar10"
precision = "fp16"

[training]
batch = 512
optimizer = "lars"
target_top1 = 74.5
warmup_epochs = 2
eval_every_epochs = 4

[training.optimizer_options]
trust = 0.001
nested = { a = 1 }

[system]
system = "dgx1-v100"
nodes = 4
ranks_per_node = 8

[communication]
allreduce = "ring"
bucket_mb = 12.5
overlap = false

[run]
iterations = 7
warmup_iterations = 1
data = "/data/imagenet"
seed = 42
"""


def write(tmp_path, text, name="run.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def parse(argv):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(argv))


# ---------------------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------------------
def test_defaults():
    cfg = load_config()
    assert cfg == RunConfig()
    assert cfg.source == "<defaults>"
    assert (cfg.model, cfg.batch, cfg.optimizer, cfg.system, cfg.nodes) == ("resnet50", 256, "sgd",
                                                                          "big-basin-p100", 1)
    assert cfg.epochs is None and cfg.target_top1 is None and cfg.ranks_per_node is None
    assert cfg.bucket_bytes == 25e6 and cfg.overlap is True and cfg.allreduce == "auto"


def test_every_section_and_key_is_loaded(tmp_path):
    path = write(tmp_path, FULL_TOML)
    cfg = load_config(path)
    assert cfg.source == str(path)
    assert (cfg.model, cfg.dataset, cfg.precision) == ("resnet18", "cifar10", "fp16")
    assert (cfg.batch, cfg.optimizer, cfg.epochs, cfg.target_top1) == (512, "lars", None, 74.5)
    assert cfg.warmup_epochs == 2.0 and isinstance(cfg.warmup_epochs, float)
    assert cfg.eval_every_epochs == 4.0 and isinstance(cfg.eval_every_epochs, float)
    assert dict(cfg.optimizer_options) == {"trust": 0.001, "nested": {"a": 1}}
    assert (cfg.system, cfg.nodes, cfg.ranks_per_node) == ("dgx1-v100", 4, 8)
    assert (cfg.allreduce, cfg.overlap) == ("ring", False)
    assert cfg.bucket_bytes == pytest.approx(12.5e6, rel=1e-15)
    assert (cfg.iterations, cfg.warmup_iterations, cfg.data, cfg.seed) == (7, 1, "/data/imagenet", 42)
    # immutable
    with pytest.raises(TypeError):
        cfg.optimizer_options["trust"] = 1.0  # type: ignore[index]


def test_epochs_key_and_int_becomes_float(tmp_path):
    cfg = load_config(write(tmp_path, "[training]\nepochs = 90\n"))
    assert cfg.epochs == 90.0 and isinstance(cfg.epochs, float)


@pytest.mark.parametrize("mb", [1, 0.5, 25, 100.25])
def test_bucket_mb_is_megabytes_of_1e6_bytes(tmp_path, mb):
    cfg = load_config(write(tmp_path, f"[communication]\nbucket_mb = {mb}\n"))
    assert cfg.bucket_bytes == pytest.approx(mb * 1e6, rel=1e-15)
    assert parse(["--bucket-mb", str(mb)]).bucket_bytes == pytest.approx(mb * 1e6, rel=1e-15)


def test_to_dict_is_plain_json():
    import json
    cfg = load_config(None, optimizer_options={"x": 1})
    d = cfg.to_dict()
    assert "source" not in d
    assert d["optimizer_options"] == {"x": 1} and type(d["optimizer_options"]) is dict
    assert json.loads(json.dumps(d)) == d


# ---------------------------------------------------------------------------------------------------------
# flags override the file
# ---------------------------------------------------------------------------------------------------------
def test_flags_override_file(tmp_path):
    path = write(tmp_path, FULL_TOML)
    cfg = parse([str(path), "--model", "resnet50", "--dataset", "imagenet", "--precision", "fp32", "--batch",
                 "1024", "--optimizer", "sgd", "--system", "big-basin-p100", "--nodes", "2",
                 "--ranks-per-node", "4", "--allreduce", "halving_doubling", "--bucket-mb", "50"])
    assert (cfg.model, cfg.dataset, cfg.precision, cfg.batch, cfg.optimizer) == (
        "resnet50", "imagenet", "fp32", 1024, "sgd")
    assert (cfg.system, cfg.nodes, cfg.ranks_per_node, cfg.allreduce) == ("big-basin-p100", 2, 4,
                                                                         "halving_doubling")
    assert cfg.bucket_bytes == pytest.approx(50e6)
    # keys without a flag keep the file's values
    assert (cfg.iterations, cfg.seed, cfg.data, cfg.overlap) == (7, 42, "/data/imagenet", False)
    assert cfg.target_top1 == 74.5
    assert cfg.source == str(path)


def test_no_overlap_flag(tmp_path):
    assert parse([]).overlap is True
    assert parse(["--no-overlap"]).overlap is False
    on = write(tmp_path, "[communication]\noverlap = true\n")
    assert parse([str(on), "--no-overlap"]).overlap is False


def test_epochs_flag_clears_file_target(tmp_path):
    path = write(tmp_path, "[training]\ntarget_top1 = 75.0\n")
    cfg = parse([str(path), "--epochs", "35"])
    assert cfg.epochs == 35.0 and cfg.target_top1 is None


def test_target_flag_clears_file_epochs(tmp_path):
    path = write(tmp_path, "[training]\nepochs = 90\n")
    cfg = parse([str(path), "--target-top1", "74.9"])
    assert cfg.target_top1 == 74.9 and cfg.epochs is None


def test_both_flags_kept():
    cfg = parse(["--epochs", "10", "--target-top1", "70"])
    assert (cfg.epochs, cfg.target_top1) == (10.0, 70.0)


def test_source_is_command_line_without_file():
    assert parse(["--batch", "512"]).source == "command line"
    assert parse([]).source == "<defaults>"


def test_replace_validates():
    cfg = load_config()
    assert cfg.replace(batch=512).batch == 512
    with pytest.raises(ConfigError) as ei:
        cfg.replace(batch=0)
    assert ei.value.field == "training.batch"


# ---------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------
def test_unknown_section(tmp_path):
    path = write(tmp_path, "[wrkload]\nmodel = 'resnet50'\n")
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    assert ei.value.field == "wrkload" and ei.value.source == str(path)
    assert "unknown section" in str(ei.value)


def test_unknown_key(tmp_path):
    path = write(tmp_path, "[training]\nbatch_size = 256\n")
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    assert ei.value.field == "training.batch_size" and ei.value.value == 256
    assert "unknown key" in str(ei.value) and "batch" in str(ei.value)


def test_section_must_be_table(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, "training = 5\n"))
    assert ei.value.field == "training"


@pytest.mark.parametrize("line, field", [
    ("[training]\nbatch = true", "training.batch"),          # bool where int
    ("[system]\nnodes = false", "system.nodes"),
    ("[run]\nseed = true", "run.seed"),
    ("[training]\nepochs = true", "training.epochs"),        # bool where number
    ("[communication]\nbucket_mb = true", "communication.bucket_mb"),
    ("[training]\nbatch = 256.0", "training.batch"),         # float where int
    ("[training]\nbatch = '256'", "training.batch"),         # str where int
    ("[communication]\noverlap = 1", "communication.overlap"),  # int where bool
    ("[workload]\nmodel = 50", "workload.model"),
    ("[training]\noptimizer_options = 3", "training.optimizer_options"),
])
def test_wrong_type_names_field(tmp_path, line, field):
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, line + "\n"))
    assert ei.value.field == field
    assert "must be of type" in str(ei.value)


@pytest.mark.parametrize("overrides, field", [
    (dict(batch=0), "training.batch"),
    (dict(nodes=0), "system.nodes"),
    (dict(ranks_per_node=0), "system.ranks_per_node"),
    (dict(epochs=0.0), "training.epochs"),
    (dict(epochs=-1.0), "training.epochs"),
    (dict(epochs=float("nan")), "training.epochs"),
    (dict(epochs=float("inf")), "training.epochs"),
    (dict(target_top1=0.0), "training.target_top1"),
    (dict(target_top1=100.0), "training.target_top1"),
    (dict(bucket_bytes=0.0), "communication.bucket_mb"),
    (dict(bucket_bytes=-1e6), "communication.bucket_mb"),
    (dict(precision="fp8"), "workload.precision"),
    (dict(optimizer="adam"), "training.optimizer"),
    (dict(dataset="mnist"), "workload.dataset"),
    (dict(warmup_epochs=-1.0), "training.warmup_epochs"),
    (dict(eval_every_epochs=0.0), "training.eval_every_epochs"),
    (dict(iterations=0), "run.iterations"),
    (dict(warmup_iterations=-1), "run.warmup_iterations"),
])
def test_range_errors_name_the_field(overrides, field):
    with pytest.raises(ConfigError) as ei:
        load_config(None, **overrides)
    assert ei.value.field == field
    assert f"field '{field}'" in str(ei.value)
    assert "\n" not in str(ei.value)


def test_range_error_in_file_names_file(tmp_path):
    path = write(tmp_path, "[system]\nnodes = -3\n")
    with pytest.raises(ConfigError) as ei:
        load_config(path)
    assert ei.value.source == str(path) and ei.value.field == "system.nodes" and ei.value.value == -3


def test_batch_not_divisible_by_ranks():
    with pytest.raises(ConfigError) as ei:
        load_config(None, batch=100, nodes=3, ranks_per_node=2)
    assert ei.value.field == "training.batch" and "6 ranks" in str(ei.value)
    assert load_config(None, batch=120, nodes=3, ranks_per_node=2).batch == 120


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load_config(tmp_path / "nope.toml")
    assert "no such config file" in str(ei.value)
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, "[training\nbatch = 1\n"))
    assert "TOML syntax error" in str(ei.value)


# ---------------------------------------------------------------------------------------------------------
# config hash
# ---------------------------------------------------------------------------------------------------------
def test_config_hash_stable_and_independent_of_source(tmp_path):
    a = load_config(write(tmp_path, FULL_TOML, "a.toml"))
    b = load_config(write(tmp_path, FULL_TOML, "b.toml"))
    assert a.source != b.source
    assert a.config_hash == b.config_hash == load_config(write(tmp_path, FULL_TOML, "a.toml")).config_hash
    assert len(a.config_hash) == 16 and int(a.config_hash, 16) >= 0
    # file values == the same values given as overrides
    c = load_config(None, **{k: v for k, v in a.to_dict().items()})
    assert c.config_hash == a.config_hash


def test_config_hash_known_value_is_deterministic():
    import hashlib
    import json
    cfg = load_config()
    expect = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert cfg.config_hash == expect


@pytest.mark.parametrize("change", [
    dict(batch=512), dict(nodes=2), dict(optimizer="lars"), dict(epochs=90.0), dict(bucket_bytes=24e6),
    dict(overlap=False), dict(allreduce="ring"), dict(precision="fp16"), dict(seed=1), dict(model="resnet18"),
    dict(optimizer_options={"trust": 0.002}), dict(system="dgx1-v100"), dict(ranks_per_node=8),
])
def test_config_hash_sensitive_to_every_change(change):
    base = load_config(None, optimizer_options={"trust": 0.001})
    changed = base.replace(**{k: (type(base.optimizer_options)(v) if k == "optimizer_options" else v)
                              for k, v in change.items()})
    assert changed.config_hash != base.config_hash
