"""Hardware catalog: data files load, SI conversion, KNL memory semantics, validation of malformed specs and
the ``perfmodel hardware`` command (exit code 2 and one stderr line per malformed file)."""
from __future__ import annotations

import json
import pickle
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

import perfmodel.cli.main as cli_main
from hardware import catalog
from hardware.catalog import load_any, load_device, load_system, spec_to_dict
from hardware.errors import ConfigError, SpecError
from hardware.specs import TOPOLOGY_KINDS, DeviceSpec, EfficiencyCurve, FrozenMap, SystemSpec

GiB = 2 ** 30
DEVICE_IDS = ["xeon-8160", "xeon-8180", "xeon-phi-7250", "p100-sxm2", "v100-sxm2", "v100-sxm3", "local-cpu"]
SYSTEM_IDS = ["stampede2-knl", "stampede2-skx", "marenostrum4", "big-basin-p100", "dgx1-v100", "tsubame3", "local"]


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``perfmodel`` in-process with only the hardware subcommand registered (isolates this module
    from other subcommands); returns (rc, stdout, stderr)."""
    monkeypatch.setattr(cli_main, "SUBCOMMANDS", {"hardware": "perfmodel.cli.hardware_cmd"})

    def run(*argv):
        rc = cli_main.main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return rc, out, err
    return run


def _copy(tmp_path: Path, kind: str, cat_id: str, edits=(), name: str | None = None) -> Path:
    """Copy a catalog file into tmp_path applying (old, new) text edits, each of which must match."""
    text = (catalog.CATALOG_DIR / kind / f"{cat_id}.toml").read_text()
    for old, new in edits:
        assert old in text, f"fixture edit {old!r} does not match {cat_id}"
        text = text.replace(old, new, 1)
    path = tmp_path / (name or f"{cat_id}.toml")
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------------------
# catalog contents
# ---------------------------------------------------------------------------------------------------------
def test_catalog_lists_every_named_id():
    assert set(DEVICE_IDS) <= set(catalog.list_devices())
    assert set(SYSTEM_IDS) <= set(catalog.list_systems())


@pytest.mark.parametrize("dev_id", DEVICE_IDS)
def test_every_device_loads_with_sources(dev_id):
    dev = load_device(dev_id)
    assert isinstance(dev, DeviceSpec)
    assert dev.id == dev_id  # catalog id is the file stem
    assert dev.peak_flops["fp32"] > dev.peak_flops["fp64"] > 0
    assert "fp32" in dev.efficiency and 0 < dev.efficiency["fp32"].eff_max <= 1
    assert dev.memory_capacity_bytes > 0 and dev.memory_bw_Bps > 0
    raw = tomllib.loads(Path(dev.source_file).read_text())
    assert raw["sources"] and all(v.strip() for v in raw["sources"].values())
    assert set(dev.sources) == set(raw["sources"])


@pytest.mark.parametrize("sys_id", SYSTEM_IDS)
def test_every_system_loads(sys_id):
    s = load_system(sys_id)
    assert isinstance(s, SystemSpec) and s.id == sys_id
    assert s.network.topology_kind in TOPOLOGY_KINDS
    assert s.max_nodes >= 1 and s.node.devices_per_node >= 1
    assert s.max_devices == s.max_nodes * s.node.devices_per_node
    assert s.node_injection_bw_Bps == s.node.nics_per_node * s.network.link_bw_Bps
    assert 0 < s.memory_per_device_bytes <= s.device.memory_capacity_bytes


def test_system_node_facts():
    assert (load_system("dgx1-v100").node.devices_per_node, load_system("dgx1-v100").node.nics_per_node) == (8, 4)
    assert load_system("dgx1-v100").device.id == "v100-sxm2"
    assert load_system("big-basin-p100").node.intra.kind == "nvlink-hybrid-cube-mesh"
    assert load_system("big-basin-p100").node.intra.links_per_device == 4
    assert load_system("stampede2-skx").node.devices_per_node == 2
    t3 = load_system("tsubame3")
    assert t3.node.nics_per_node == 4 and t3.network.topology_params["oversubscription"] == 1.0
    assert load_system("local").max_nodes == 1
    # MareNostrum4: 96 GiB per 2-socket node -> 48 GiB per socket, less than the device's reference 96 GiB
    assert load_system("marenostrum4").memory_per_device_bytes == 48 * GiB


def test_stampede2_leaf_oversubscription_28_20():
    for sid in ("stampede2-knl", "stampede2-skx"):
        p = load_system(sid).network.topology_params
        assert load_system(sid).network.topology_kind == "fat-tree"
        assert (p["nodes_per_leaf"], p["uplinks_per_leaf"]) == (28, 20)
        assert p["oversubscription"] == pytest.approx(28 / 20)
        assert dict(p)["levels"] == 2  # usable as **params for a topology builder


def test_si_conversion():
    v100 = load_device("v100-sxm2")
    assert v100.peak_flops["fp32"] == pytest.approx(15e12)
    assert v100.peak_flops["fp16"] == pytest.approx(120e12)
    assert v100.clock_hz == pytest.approx(1.455e9)
    assert v100.memories["hbm2"].capacity_bytes == 16 * GiB
    knl = load_device("xeon-phi-7250")
    assert knl.memories["mcdram"].bw_Bps == pytest.approx(490e9)
    assert knl.memories["ddr4"].bw_Bps == pytest.approx(115.2e9)
    s2 = load_system("stampede2-knl")
    assert s2.network.link_bw_Bps == pytest.approx(12.5e9)  # 100 Gb/s Omni-Path
    assert s2.network.latency_s == pytest.approx(1e-6)
    assert s2.node.intra.latency_s == pytest.approx(0.5e-6)
    assert s2.node.host_memory_bytes == 96 * GiB
    dgx = load_system("dgx1-v100")
    assert dgx.node_injection_bw_Bps == pytest.approx(4 * 12.5e9)
    assert dgx.node.intra.link_bw_Bps == pytest.approx(25e9)


def test_knl_cache_and_flat_modes():
    cache = load_device("xeon-phi-7250")
    assert cache.memory_mode == "cache"
    cm = cache.compute_memory
    assert (cm.capacity_bytes, cm.bw_Bps) == (96 * GiB, pytest.approx(490e9))  # DDR4 capacity, MCDRAM speed
    assert len(cache.memory_pools) == 1
    flat = load_device("xeon-phi-7250", memory_mode="flat")
    assert flat.memory_mode == "flat"
    assert (flat.compute_memory.capacity_bytes, flat.compute_memory.bw_Bps) == (16 * GiB, pytest.approx(490e9))
    assert flat.slow_memory.name == "ddr4" and flat.slow_memory.bw_Bps == pytest.approx(115.2e9)
    assert [m.name for m in flat.memory_pools] == ["mcdram", "ddr4"]
    assert cache.with_memory_mode("flat") == flat and flat.with_memory_mode("cache") == cache
    assert load_system("stampede2-knl").device.memory_mode == "cache"
    with pytest.raises(SpecError, match="single memory pool"):
        load_device("v100-sxm2").with_memory_mode("flat")
    with pytest.raises(SpecError, match="unknown memory mode"):
        cache.with_memory_mode("hybrid")
    # single-pool devices: compute memory is the only pool
    v100 = load_device("v100-sxm2")
    assert v100.compute_memory == v100.memories["hbm2"] and v100.slow_memory is None


def test_system_memory_mode_override(tmp_path):
    path = _copy(tmp_path, "systems", "stampede2-knl", [('memory_mode = "cache"', 'memory_mode = "flat"')])
    s = load_system(path)
    assert s.device.memory_mode == "flat"
    assert s.memory_per_device_bytes == 16 * GiB  # working set in MCDRAM


def test_efficiency_curve():
    e = EfficiencyCurve(eff_max=0.4, batch_half=8.0)
    assert e.at(8) == pytest.approx(0.2)
    assert e.at(0) == 0.0
    assert isinstance(e.at(32), float)
    b = np.array([1, 2, 4, 8, 16, 64, 1024], dtype=float)
    vals = e.at(b)
    assert isinstance(vals, np.ndarray) and vals.shape == b.shape
    assert np.all(np.diff(vals) > 0) and np.all(vals < 0.4)
    np.testing.assert_allclose(vals, 0.4 * b / (b + 8))
    with pytest.raises(ConfigError):
        e.at(-1)
    knl = load_device("xeon-phi-7250")
    # the curve has the documented form with the catalog's parameters (values calibrated on published rows
    # by scripts/calibrate_published.py; tests/test_published.py checks they reproduce those rows)
    curve = knl.efficiency["fp32"]
    assert curve.at(128) == pytest.approx(curve.eff_max * 128 / (128 + curve.batch_half))
    assert knl.achieved_flops("fp32", 128) == pytest.approx(6.0928e12 * knl.efficiency["fp32"].at(128))
    with pytest.raises(SpecError, match="fp16"):
        knl.peak_flops_for("fp16")
    with pytest.raises(SpecError, match="fp16"):
        load_device("p100-sxm2").efficiency_for("fp16")


def test_specs_are_hashable_picklable_and_frozen():
    s = load_system("dgx1-v100")
    assert hash(s) == hash(pickle.loads(pickle.dumps(s)))
    assert pickle.loads(pickle.dumps(s)) == s
    with pytest.raises(AttributeError):
        s.max_nodes = 3
    with pytest.raises(TypeError):
        s.network.topology_params["levels"] = 3
    assert FrozenMap(a=1) == {"a": 1}


def test_load_any_and_spec_to_dict():
    assert isinstance(load_any("tsubame3"), SystemSpec)
    assert isinstance(load_any("p100-sxm2"), DeviceSpec)
    d = spec_to_dict(load_system("tsubame3"))
    assert d["type"] == "system" and d["node"]["device"]["type"] == "device"
    assert d["network"]["link_bw_Bps"] == pytest.approx(12.5e9)
    assert d["sources"]["max_nodes"].startswith("[T3]")
    json.dumps(d)  # JSON-ready


def test_schema_covers_every_topology_kind():
    assert set(catalog._TOPOLOGY_VARIANTS) == set(TOPOLOGY_KINDS)


def test_cache_sees_edited_file(tmp_path):
    path = _copy(tmp_path, "devices", "v100-sxm2")
    assert load_device(path).peak_flops["fp32"] == pytest.approx(15e12)
    path.write_text(path.read_text().replace("peak_tflops_fp32 = 15.0", "peak_tflops_fp32 = 15.70"))
    assert load_device(path).peak_flops["fp32"] == pytest.approx(15.7e12)


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------
def test_subcommand_is_registered():
    assert cli_main.SUBCOMMANDS["hardware"] == "perfmodel.cli.hardware_cmd"


def test_cli_list_json(cli):
    rc, out, err = cli("hardware", "list", "--json")
    assert rc == 0 and not err
    data = json.loads(out)
    assert set(DEVICE_IDS) <= set(data["devices"]) and set(SYSTEM_IDS) <= set(data["systems"])


def test_cli_list_table(cli):
    rc, out, _ = cli("hardware", "list")
    assert rc == 0
    assert "TACC Stampede2 (KNL nodes)" in out and "NVIDIA Tesla V100 SXM2 16 GB" in out


def test_cli_show_table_and_json(cli):
    rc, out, _ = cli("hardware", "show", "stampede2-knl")
    assert rc == 0
    assert re.search(r"network link bandwidth\s+100\s+Gb/s", out)
    assert re.search(r"topology oversubscription\s+1\.4", out)
    assert "[S2]" in out
    rc, out, _ = cli("hardware", "show", "v100-sxm2", "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["peak_flops"]["fp32"] == pytest.approx(15e12)
    assert "peak_tflops_fp32" in d["sources"]
    rc, out, _ = cli("hardware", "show", "xeon-phi-7250", "--memory-mode", "flat", "--json")
    assert rc == 0 and json.loads(out)["compute_memory"]["capacity_bytes"] == 16 * GiB


def test_cli_accepts_user_spec_files(cli, tmp_path):
    dev = _copy(tmp_path, "devices", "v100-sxm2",
                [('id = "v100-sxm2"', 'id = "my-v100"'), ("peak_tflops_fp32 = 15.0", "peak_tflops_fp32 = 15.7"),
                 ('peak_tflops_fp32 = "[VOLTA] whitepaper Table 1: 15 TFLOP/s"',
                  'peak_tflops_fp32 = "datasheet (secondary, unverified; hardware_specs.md section 5)"')],
                name="my-v100.toml")
    rc, out, err = cli("hardware", "show", dev, "--json")
    assert rc == 0, err
    assert json.loads(out)["peak_flops"]["fp32"] == pytest.approx(15.7e12)
    # a user system whose device is a path relative to the system file
    sysf = _copy(tmp_path, "systems", "dgx1-v100", [('device = "v100-sxm2"', 'device = "my-v100.toml"')],
                 name="my-dgx.toml")
    rc, out, err = cli("hardware", "show", sysf, "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["node"]["device"]["id"] == "my-v100" and d["node"]["device_ref"] == "my-v100.toml"
    rc, out, _ = cli("hardware", "show", sysf)
    assert rc == 0 and "my-v100" in out


# (description, catalog kind, catalog id, edits, field named in the error, value shown in the error)
MALFORMED = [
    ("toml syntax", "devices", "xeon-phi-7250", [("cores = 68", "cores = = 68")], "line ?", "'cores = = 68'"),
    ("unknown key", "systems", "stampede2-knl", [("link_Gbps = 100", "link_Gbs = 100")], "network.link_Gbs", "100"),
    ("missing field", "devices", "xeon-phi-7250", [("cores = 68\n", "")], "cores", "<missing>"),
    ("negative bandwidth", "devices", "xeon-phi-7250", [("bw_GBps = 490", "bw_GBps = -490")],
     "memory.mcdram.bw_GBps", "-490"),
    # the stored value is re-fitted by scripts/calibrate_published.py: edit it whatever it is (the rest of the
    # line becomes a comment)
    ("efficiency 1.5", "devices", "xeon-8160", [("eff_max = 0.", "eff_max = 1.5  # 0.")], "efficiency.fp32.eff_max",
     "1.5"),
    ("unknown device", "systems", "dgx1-v100", [('device = "v100-sxm2"', 'device = "v100-sxm9"')],
     "node.device", "'v100-sxm9'"),
    ("string for number", "systems", "tsubame3", [("link_Gbps = 100", 'link_Gbps = "100"')],
     "network.link_Gbps", "'100'"),
    ("unknown memory_mode", "devices", "xeon-phi-7250", [('memory_mode = "cache"', 'memory_mode = "hybrid"')],
     "memory_mode", "'hybrid'"),
    ("missing source", "devices", "xeon-phi-7250", [('"memory.mcdram.bw_GBps" = "[NUR] KISTI Nurion user guide: 490 GB/s"\n', "")],
     "memory.mcdram.bw_GBps", "490"),
    ("source for no field", "devices", "p100-sxm2", [("[sources]\n", '[sources]\n"memory.hbm2.latency_us" = "made up"\n')],
     'sources."memory.hbm2.latency_us"', "'made up'"),
    ("zero devices per node", "systems", "dgx1-v100", [("devices_per_node = 8", "devices_per_node = 0")],
     "node.devices_per_node", "0"),
    ("float for int", "devices", "xeon-8160", [("cores = 24", "cores = 24.5")], "cores", "24.5"),
    ("boolean for number", "systems", "local", [("latency_us = 10.0", "latency_us = true")],
     "network.latency_us", "True"),
    ("nan", "devices", "p100-sxm2", [("clock_GHz = 1.48", "clock_GHz = nan")], "clock_GHz", "nan"),
    ("unknown topology", "systems", "marenostrum4", [('kind = "fat-tree"', 'kind = "hypercube"')],
     "network.topology.kind", "'hypercube'"),
    ("topology key of another kind", "systems", "big-basin-p100", [("ports = 64", "nodes_per_leaf = 64")],
     "network.topology.nodes_per_leaf", "64"),
    ("unknown intra kind", "systems", "tsubame3", [('kind = "nvlink-hybrid-cube-mesh"', 'kind = "nvlink3"')],
     "node.intra.kind", "'nvlink3'"),
    ("inconsistent oversubscription", "systems", "tsubame3", [("oversubscription = 1.0", "oversubscription = 2.0")],
     "network.topology.oversubscription", "2.0"),
    ("memory mode on single pool", "devices", "v100-sxm2", [('kind = "gpu"', 'kind = "gpu"\nmemory_mode = "flat"')],
     "memory_mode", "'flat'"),
    ("unknown precision", "devices", "p100-sxm2", [("[efficiency.fp32]", "[efficiency.fp23]")], "efficiency.fp23", None),
    ("unknown table", "systems", "local", [("[network.topology]", "[network.topologee]")], "network.topologee", None),
]


@pytest.mark.parametrize("desc,kind,cat_id,edits,field,value", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_spec_one_line_exit_2(cli, tmp_path, desc, kind, cat_id, edits, field, value):
    path = _copy(tmp_path, kind, cat_id, edits)
    if field == "line ?":  # the syntax error is reported at the edited line
        field = f"line {path.read_text().splitlines().index(edits[0][1]) + 1}"
    rc, out, err = cli("hardware", "show", path)
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err + out and out == ""
    assert lines[0].startswith(f"perfmodel: error: {path}: field '{field}' = ")
    if value is not None:
        assert f"field '{field}' = {value}: " in lines[0]
    # the loader raises the same error directly, as a SpecError naming the field
    with pytest.raises(SpecError) as exc:
        load_any(path)
    assert exc.value.field == field and exc.value.source == str(path)


def test_malformed_toml_error_names_line(tmp_path):
    path = _copy(tmp_path, "devices", "xeon-phi-7250", [("cores = 68", "cores = = 68")])
    with pytest.raises(SpecError) as exc:
        load_device(path)
    assert "TOML syntax error" in exc.value.reason
    assert path.read_text().splitlines()[int(exc.value.field.split()[1]) - 1].strip() == "cores = = 68"


def test_unknown_device_lists_known_ids(cli, tmp_path):
    path = _copy(tmp_path, "systems", "dgx1-v100", [('device = "v100-sxm2"', 'device = "v100-sxm9"')])
    _, _, err = cli("hardware", "show", path)
    assert "known devices:" in err and "v100-sxm2" in err


def test_missing_device_file_reference(cli, tmp_path):
    path = _copy(tmp_path, "systems", "dgx1-v100", [('device = "v100-sxm2"', 'device = "nope/dev.toml"')])
    rc, _, err = cli("hardware", "show", path)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "file not found" in err


def test_malformed_referenced_device_names_the_device_file(cli, tmp_path):
    _copy(tmp_path, "devices", "p100-sxm2", [("bw_GBps = 720", "bw_GBps = -720")], name="bad-p100.toml")
    sysf = _copy(tmp_path, "systems", "tsubame3", [('device = "p100-sxm2"', 'device = "bad-p100.toml"')])
    rc, _, err = cli("hardware", "show", sysf)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert f"{tmp_path / 'bad-p100.toml'}: field 'memory.hbm2.bw_GBps' = -720" in err


@pytest.mark.parametrize("make", ["nonexistent", "directory", "binary", "unknown-id", "empty"])
def test_unreadable_inputs_one_line_exit_2(cli, tmp_path, make):
    if make == "nonexistent":
        arg = tmp_path / "nope.toml"
    elif make == "directory":
        arg = tmp_path / "adir.toml"
        arg.mkdir()
    elif make == "binary":
        arg = tmp_path / "bin.toml"
        arg.write_bytes(b"\xff\xfe\x00\x81garbage")
    elif make == "empty":
        arg = tmp_path / "empty.toml"
        arg.write_text("")
    else:
        arg = "no-such-machine"
    rc, out, err = cli("hardware", "show", arg)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err + out
    assert lines[0].startswith("perfmodel: error: ")
    assert "field '" in lines[0]
    if make == "nonexistent":
        assert f"field 'path' = '{arg}': file not found" in lines[0]
    if make == "unknown-id":
        assert "'no-such-machine'" in lines[0] and "stampede2-knl" in lines[0]


def test_nested_sources_tables_are_accepted(tmp_path):
    text = (catalog.DEVICES_DIR / "p100-sxm2.toml").read_text()
    text = text.replace('"memory.hbm2.bw_GBps" = ', "memory.hbm2.bw_GBps = ")  # dotted (nested) key form
    path = tmp_path / "p.toml"
    path.write_text(text)
    assert load_device(path).sources["memory.hbm2.bw_GBps"].startswith("[P100]")


def test_device_file_is_not_a_system(tmp_path):
    with pytest.raises(SpecError, match="not a device spec"):
        load_device(catalog.SYSTEMS_DIR / "tsubame3.toml")
    with pytest.raises(SpecError, match="required table is missing"):
        load_system(catalog.DEVICES_DIR / "p100-sxm2.toml")


@pytest.mark.parametrize("topo,params,expect", [
    ("torus", 'dims = [4, 4, 8]', {"dims": (4, 4, 8)}),
    ("dragonfly", "nodes_per_router = 4\nrouters_per_group = 96\ngroups = 10",
     {"nodes_per_router": 4, "routers_per_group": 96, "groups": 10}),
    ("fat-tree", "nodes_per_leaf = 16\noversubscription = 2.0", {"nodes_per_leaf": 16, "oversubscription": 2.0,
                                                                "levels": 2}),
])
def test_other_topology_kinds(tmp_path, topo, params, expect):
    srcs = "\n".join(f'"network.topology.{line.split("=")[0].strip()}" = "test"' for line in params.splitlines())
    path = _copy(tmp_path, "systems", "local", [
        ('kind = "single-switch"\nports = 1', f'kind = "{topo}"\n{params}'),
        ('"network.topology.ports" = "one node (estimated, replaced by `perfmodel calibrate`)"', srcs)])
    assert dict(load_system(path).network.topology_params) == expect
    bad = path.read_text().replace(srcs.splitlines()[0] + "\n", "")
    path.write_text(bad)
    with pytest.raises(SpecError, match="no entry in \\[sources\\]"):
        load_system(path)


def test_torus_dims_must_be_positive_ints(tmp_path):
    path = _copy(tmp_path, "systems", "local", [
        ('kind = "single-switch"\nports = 1', 'kind = "torus"\ndims = [4, 0]'),
        ('"network.topology.ports"', '"network.topology.dims"')])
    with pytest.raises(SpecError) as exc:
        load_system(path)
    assert exc.value.field == "network.topology.dims[1]" and exc.value.value == 0
