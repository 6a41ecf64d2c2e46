"""The emulated cluster (executor.cluster, perfmodel cluster): the link model and the spec writer as pure
functions, then a real two-host cluster (network namespaces, root needed) brought up, used by the CLI's
bench and run, and brought down again.

The real-cluster tests are skipped, with the reason, only where network namespaces cannot be created. They
use their own namespace prefix, state folder and system registry (never a user's cluster or spec), and
tear the cluster down in a fixture finaliser whatever happens. All their traffic stays between the
namespaces they made (10.77.0.0/24 on interfaces that exist only inside those namespaces).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from executor.cluster import netns as nx
from executor.cluster.plan import ClusterConfig, make_plan
from executor.cluster.switch import ETH_OVERHEAD, VNET_HDR_LEN, LinkTimer, frame_cost
from hardware.errors import ConfigError
from perfmodel.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
PREFIX = f"ttt{os.getpid() % 100000}-"


# ==========================================================================================================
# pure: plan, link model, spec
# ==========================================================================================================
def test_plan_single_switch_paths_and_delays():
    cfg = ClusterConfig(hosts=3, link_gbps=1, latency_us=100)
    plan = make_plan(cfg)
    assert [h.ip for h in plan.hosts] == ["10.77.0.1", "10.77.0.2", "10.77.0.3"]
    assert [plan.links[i].name for i in plan.path(0, 2)] == ["h0>l0", "l0>h2"]
    assert plan.path_delay_s(0, 2) == pytest.approx(200e-6)    # two host links, 100 us each
    assert all(ln.rate_bps == 1e9 for ln in plan.links)
    assert cfg.leaves == 1 and cfg.oversubscription is None


def test_plan_two_level_tree():
    cfg = ClusterConfig(hosts=5, link_gbps=1, latency_us=50, topology="two-level", hosts_per_switch=2,
                        uplink_gbps=2, uplink_latency_us=10)
    plan = make_plan(cfg)
    assert cfg.leaves == 3 and cfg.uplinks_per_leaf == 2 and cfg.oversubscription == pytest.approx(1.0)
    assert [h.leaf for h in plan.hosts] == [0, 0, 1, 1, 2]
    assert [plan.links[i].name for i in plan.path(1, 4)] == ["h1>l0", "l0>s", "s>l2", "l2>h4"]
    assert plan.path_delay_s(1, 4) == pytest.approx(2 * 50e-6 + 2 * 10e-6)
    assert plan.path_delay_s(0, 1) == pytest.approx(100e-6)
    assert plan.links[plan.link_index("l0>s")].rate_bps == 2e9
    assert plan.farthest_pair() == (0, 2)


@pytest.mark.parametrize("kw, flag", [
    (dict(hosts=0), "--hosts"),
    (dict(link_gbps=0), "--link-gbps"),
    (dict(latency_us=-1), "--latency-us"),
    (dict(topology="torus"), "--topology"),
    (dict(topology="two-level"), "--hosts-per-switch"),
    (dict(topology="two-level", hosts_per_switch=4), "--hosts-per-switch"),
    (dict(topology="two-level", hosts_per_switch=2, uplink_gbps=1.5), "--uplink-gbps"),
    (dict(topology="two-level", hosts_per_switch=2, uplink_gbps=0.5), "--uplink-gbps"),
    (dict(uplink_gbps=2), "--uplink-gbps"),
    (dict(prefix="TTT"), "prefix"),
])
def test_config_rejects_bad_options(kw, flag):
    args = {"hosts": 4, "link_gbps": 1.0, "latency_us": 10.0, **kw}
    with pytest.raises(ConfigError) as exc:
        ClusterConfig(**args)
    assert exc.value.field == flag


def _tcp_frame(payload: int, gso_size: int = 0) -> bytes:
    """A virtio_net_hdr + Ethernet/IPv4/TCP frame (20-byte IP and 32-byte TCP headers) with ``payload``."""
    hdr = bytes([0, 1 if gso_size else 0, 0, 0, gso_size & 0xFF, gso_size >> 8, 0, 0, 0, 0])
    eth = bytes(12) + b"\x08\x00"
    ip = bytes([0x45]) + bytes(19)
    tcp = bytes(12) + bytes([8 << 4]) + bytes(19)
    return hdr + eth + ip + tcp + bytes(payload)


def test_frame_cost_counts_segments_and_ethernet_overhead():
    assert frame_cost(_tcp_frame(0)) == (1, 66 + ETH_OVERHEAD)          # 14 + 20 + 32 header bytes
    assert frame_cost(bytes(VNET_HDR_LEN + 42)) == (1, 60 + ETH_OVERHEAD)   # padded to the 60-byte minimum
    segs, wire = frame_cost(_tcp_frame(10 * 1448 + 5, gso_size=1448))
    assert segs == 11
    assert wire == 10 * 1448 + 5 + 11 * (66 + ETH_OVERHEAD)
    # a full-size stream costs 1538 wire bytes per 1448 payload bytes, as on MTU-1500 Ethernet
    assert frame_cost(_tcp_frame(44 * 1448, gso_size=1448))[1] / (44 * 1448) == pytest.approx(1538 / 1448)


def test_link_timer_store_and_forward():
    r, d = 1e9, 100e-6
    t = LinkTimer([r, r], [d, d])
    w = 1538
    # one frame over two links: serialised twice, delayed twice
    assert t.traverse([0, 1], 1.0, 1, w) == pytest.approx(1.0 + 2 * w * 8 / r + 2 * d)
    t2 = LinkTimer([r, r], [d, d])
    # 44 segments: pipelined per segment over the two hops (not twice the whole super-frame)
    assert t2.traverse([0, 1], 0.0, 44, 44 * w) == pytest.approx(45 * w * 8 / r + 2 * d)
    # a second frame read at the same time waits for the first on the first link
    assert t2.traverse([0, 1], 0.0, 44, 44 * w) == pytest.approx(89 * w * 8 / r + 2 * d)
    # a slower second link is the bottleneck: the last segment leaves it at start + W / r2
    t3 = LinkTimer([r, r / 2], [0.0, 0.0])
    assert t3.traverse([0, 1], 0.0, 10, 10 * w) == pytest.approx(w * 8 / r + 10 * w * 8 / (r / 2))


def test_link_timer_drops_beyond_its_buffer():
    r, w = 1e9, 1538
    t = LinkTimer([r], [0.0], buffer_bytes=3 * w)
    ends = [t.traverse([0], 0.0, 1, w) for _ in range(6)]
    # frames 1-4 queue (the 4th waits 3 frames = the buffer); the 5th and 6th would wait longer: dropped
    assert ends[:4] == pytest.approx([(k + 1) * w * 8 / r for k in range(4)])
    assert all(math.isnan(x) for x in ends[4:]) and t.drops == [2]


def _frame_to(host: int, payload: int, gso_size: int = 1448) -> bytes:
    f = bytearray(_tcp_frame(payload, gso_size))
    f[VNET_HDR_LEN:VNET_HDR_LEN + 6] = bytes.fromhex(f"0277000000{host + 1:02x}")
    return bytes(f)


def test_switch_serves_each_link_in_arrival_order():
    from executor.cluster.switch import Switch

    cfg = ClusterConfig(hosts=4, link_gbps=1, latency_us=100, topology="two-level", hosts_per_switch=2,
                        uplink_latency_us=200)
    sw = Switch(make_plan(cfg))
    sw.fds = [os.open(os.devnull, os.O_WRONLY) for _ in range(4)]
    delivered: dict[bytes, float] = {}
    push = sw._push

    def record(t, hop, a_last, src, dst, segs, wire, buf):
        if hop == len(sw.paths[src][dst]):
            delivered[buf] = t
        push(t, hop, a_last, src, dst, segs, wire, buf)

    sw._push = record
    try:
        far = _frame_to(2, 44 * 1448)                  # host 1 -> host 2: four links, 600 us of delay
        near = _frame_to(2, 44 * 1448 - 1)             # host 3 -> host 2: two links, 200 us, read 50 us later
        sw._enqueue(1, far, 0.0)
        sw._enqueue(3, near, 50e-6)
        sw._advance(math.inf)
    finally:
        for fd in sw.fds:
            os.close(fd)
    segs, wire = frame_cost(near)
    w = wire / segs
    # the near frame reaches the shared last link first and is served first, as if the far one were not there
    assert delivered[near] == pytest.approx(50e-6 + (wire + w) * 8 / 1e9 + 2 * 100e-6)
    assert delivered[far] > delivered[near]
    # the far frame then waits for the link: it leaves right after the near one's last segment
    assert delivered[far] == pytest.approx(delivered[near] - 100e-6 + frame_cost(far)[1] * 8 / 1e9 + 100e-6)
    assert sw.stats["frames_out"] == 2 and sw.queued_bytes == 0


def test_spec_describes_the_network(tmp_path, monkeypatch):
    from executor.cluster.spec import write_spec
    from hardware.catalog import load_system

    monkeypatch.setenv("TTT_SYSTEMS_DIR", str(tmp_path))
    monkeypatch.setenv("TTT_LOCAL_SPEC", "")   # the catalog's local placeholder as the base
    cfg = ClusterConfig(hosts=4, link_gbps=1, latency_us=100, topology="two-level", hosts_per_switch=2)
    measured = {"rate_Bps": 0.94e9 / 8, "latency_s": 260e-6, "hosts": [0, 2], "pings": 100}
    out = write_spec(tmp_path, cfg, "local", measured=measured)
    s = load_system("emulated")
    assert s.source_file == out["system_file"]
    assert s.network.fabric == "emulated-tcp"
    assert s.network.link_bw_Bps == pytest.approx(0.94e9 / 8, rel=1e-5)
    assert s.network.latency_s == pytest.approx(260e-6, rel=1e-5)
    assert s.network.topology_kind == "fat-tree"
    assert s.network.topology_params["nodes_per_leaf"] == 2
    assert s.network.topology_params["oversubscription"] == pytest.approx(2.0)
    assert s.max_nodes == 4
    base = load_system("local").device
    assert s.device.peak_flops["fp32"] == pytest.approx(base.peak_flops["fp32"] / 4, rel=1e-5)
    assert s.device.memory_bw_Bps == pytest.approx(base.memory_bw_Bps / 4, rel=1e-5)
    # without a measurement: the configured rate less TCP framing, the configured path delay
    write_spec(tmp_path, ClusterConfig(hosts=2, link_gbps=5, latency_us=50), "local", measured=None)
    s2 = load_system("emulated")
    assert s2.network.link_bw_Bps == pytest.approx(5e9 / 8 * 1448 / 1538, rel=1e-5)
    assert s2.network.latency_s == pytest.approx(100e-6, rel=1e-5)
    assert s2.network.topology_kind == "single-switch"


def test_catalog_ids_are_not_shadowed_by_user_systems(tmp_path, monkeypatch):
    from hardware.catalog import load_system

    monkeypatch.setenv("TTT_SYSTEMS_DIR", str(tmp_path))
    (tmp_path / "dgx1-v100.toml").write_text("not toml at all [")
    assert load_system("dgx1-v100").id == "dgx1-v100"


def test_placement():
    from executor.cluster.hydra import placement
    from hardware.errors import InfeasibleError

    assert placement(2, 4) == (2, 1)
    assert placement(8, 4) == (4, 2)
    assert placement(4, 4, ranks_per_node=2) == (2, 2)
    with pytest.raises(InfeasibleError):
        placement(8, 2, ranks_per_node=1)
    with pytest.raises(ConfigError):
        placement(6, 4)


# ==========================================================================================================
# CLI without a cluster
# ==========================================================================================================
@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A state folder and system registry of this test only."""
    monkeypatch.setenv("TTT_CLUSTER_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TTT_SYSTEMS_DIR", str(tmp_path / "systems"))
    return tmp_path


def test_down_without_up_is_a_clean_no_op(isolated, capsys):
    assert main(["cluster", "down"]) == 0
    assert "nothing to remove" in capsys.readouterr().out
    assert main(["cluster", "down", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] is False


def test_up_without_privileges_is_a_clear_error(isolated, capsys, monkeypatch):
    monkeypatch.setattr(nx, "effective_capabilities", lambda: 0)
    rc = main(["cluster", "up", "--hosts", "2", "--link-gbps", "1", "--latency-us", "100", "--prefix", PREFIX])
    err = capsys.readouterr().err
    assert rc == 2
    assert "needs root" in err and "CAP_NET_ADMIN" in err and "Traceback" not in err
    assert not (isolated / "state" / "state.json").exists()


def test_status_without_cluster(isolated, capsys):
    assert main(["cluster", "status"]) == 0
    assert "no emulated cluster" in capsys.readouterr().out


def test_bench_rejects_a_system_it_cannot_run_on(isolated, capsys):
    assert main(["bench", "allreduce", "--system", "dgx1-v100", "--ranks", "2"]) == 2
    assert "emulated" in capsys.readouterr().err


# ==========================================================================================================
# a real cluster (root)
# ==========================================================================================================
def _namespaces_permitted() -> str | None:
    """None when a network namespace can be created here, else the reason."""
    if nx.missing_privileges():
        return f"network namespaces are not permitted here (missing: {', '.join(nx.missing_privileges())})"
    probe = f"{PREFIX}probe"
    try:
        proc = subprocess.run([nx.tool("ip"), "netns", "add", probe], capture_output=True, text=True, timeout=10)
    except (OSError, nx.ClusterError) as exc:
        return f"network namespaces are not permitted here ({exc})"
    if proc.returncode != 0:
        return f"network namespaces are not permitted here ('ip netns add' failed: {proc.stderr.strip()})"
    subprocess.run([nx.tool("ip"), "netns", "del", probe], capture_output=True, timeout=10)
    return None


_REASON = _namespaces_permitted()
needs_netns = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")


def _ours() -> list[str]:
    return [n for n in nx.list_netns() if n.startswith(PREFIX)]


def _in_ns(ns: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([nx.tool("ip"), "netns", "exec", ns, sys.executable, "-m", "executor.cluster.probe", *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two hosts, 1 Gbit/s, 100 us per link, measured and registered; always brought down."""
    if _REASON is not None:
        pytest.skip(_REASON)
    base = tmp_path_factory.mktemp("emulated")
    mp = pytest.MonkeyPatch()
    mp.setenv("TTT_CLUSTER_DIR", str(base / "state"))
    mp.setenv("TTT_SYSTEMS_DIR", str(base / "systems"))
    try:
        rc = main(["cluster", "up", "--hosts", "2", "--link-gbps", "1", "--latency-us", "100", "--prefix", PREFIX,
                   "--json"])
        assert rc == 0
        from executor.cluster.state import load_state
        yield load_state()
    finally:
        main(["cluster", "down"])
        mp.undo()


@needs_netns
@pytest.mark.slow
def test_up_creates_namespaces_and_registers_the_spec(cluster):
    from hardware.catalog import load_system

    assert sorted(_ours()) == [f"{PREFIX}h0", f"{PREFIX}h1"]
    assert cluster["status"] == "up"
    s = load_system("emulated")
    assert s.network.fabric == "emulated-tcp" and s.max_nodes == 2
    # the measured MPI payload rate: below the 1 Gbit/s line rate by about the TCP framing (94 %); a loaded
    # 2-core host can measure less (0.83 Gbit/s once in a CI-like run), never more than the line rate
    assert 0.7e9 / 8 < s.network.link_bw_Bps < 1.0e9 / 8
    # per-message latency at least the configured 2 x 100 us one way (large messages: plus a rendezvous
    # round trip and the software); small messages: the delay plus a modest software cost
    assert 200e-6 <= s.network.latency_s < 20e-3
    assert s.network.latency_s == pytest.approx(cluster["measured"]["latency_s"], rel=1e-4)
    assert 200e-6 <= cluster["measured"]["small_latency_s"] < 200e-6 + 2e-3
    assert "at bring-up" in s.sources["network.latency_us"] and "small-message" in s.sources["network.latency_us"]
    # the per-size exchange profile the line was fitted to, in the spec (perfmodel.network adds its residuals)
    from executor.cluster.measure import SIZES
    assert [int(b) for b, _ in s.network.exchange_profile] == list(SIZES)
    times = [t for _, t in s.network.exchange_profile]
    assert times[-1] > 10 * times[0]   # 16 MiB at 1 Gbit/s: >= 134 ms; 64 KiB: about a millisecond
    # every host runs loss-based TCP (reno), whatever this machine's default (bbr here), and the state says so
    from executor.cluster.plan import CONGESTION_CONTROL
    assert cluster["tcp_congestion_control"] == CONGESTION_CONTROL == "reno"
    for h in (0, 1):
        cc = subprocess.run([nx.tool("ip"), "netns", "exec", f"{PREFIX}h{h}", "cat",
                             "/proc/sys/net/ipv4/tcp_congestion_control"], capture_output=True, text=True, timeout=30)
        assert cc.stdout.strip() == "reno"


@needs_netns
@pytest.mark.slow
def test_ping_reflects_the_delay(cluster):
    proc = _in_ns(f"{PREFIX}h0", "ping", "10.77.0.2", "10", "0.01")
    rtts = json.loads(proc.stdout)["rtt_s"]
    assert len(rtts) == 10
    # the round trip crosses four delayed links (4 x 100 us); the switch and the stack add a little. A loaded
    # host delays some round trips by milliseconds (median 3 ms once in a CI-like run), so the upper bound is
    # on the fastest few: the delay is a floor for every sample, the load only adds
    fastest = sorted(rtts)[:3]
    assert 400e-6 <= fastest[0] and fastest[-1] < 400e-6 + 2e-3


def _shaped_transfer_gbps(nbytes: int, port: int) -> float:
    """Payload rate (Gbit/s) of one TCP transfer of nbytes from h0 to h1 through the emulated link."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sink = subprocess.Popen([nx.tool("ip"), "netns", "exec", f"{PREFIX}h1", sys.executable, "-m",
                             "executor.cluster.probe", "tcp-sink", str(port), str(nbytes), "20"],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert sink.stdout.readline().strip() == "ready"
        sent = _in_ns(f"{PREFIX}h0", "tcp-send", "10.77.0.2", str(port), str(nbytes), "20")
        assert sent.returncode == 0, sent.stderr
        got = json.loads(sink.communicate(timeout=30)[0].strip().splitlines()[-1])
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()
    assert got["bytes"] == nbytes
    return got["bytes"] * 8 / got["seconds"] / 1e9


@needs_netns
@pytest.mark.slow
def test_tcp_between_namespaces_follows_the_shaped_rate(cluster):
    nbytes = 15_000_000   # 0.13 s at 0.94 Gbit/s of payload; unshaped veth/TAP traffic is several times faster
    ceiling = 1.0 * 1448 / 1538 * 1.03   # the 1 Gbit/s line rate less TCP/IP and Ethernet framing, +3 %
    # The shaper is a ceiling; on a busy 2-core host a transfer can fall below it (the userspace link and
    # both endpoints share the cores), never above. So every transfer must stay under the ceiling, and the
    # best of up to six must reach the line rate's order of magnitude: above 0.3 Gbit/s, which a link shaped
    # at a tenth or an eighth of its rate (a unit slip) cannot. How close it comes depends on the host's load:
    # in CI-like runs the best of six was once 0.46 and once 0.51 Gbit/s (every sample of the second between
    # 0.19 and 0.51), while the link calibration measures 0.99 Gbit/s on a quiet host.
    rates = []
    for attempt in range(6):
        rates.append(_shaped_transfer_gbps(nbytes, 7999 + attempt))
        assert rates[-1] < ceiling, rates
        if rates[-1] > 0.7:
            break
        time.sleep(1.0)
    assert max(rates) > 0.3, rates


@needs_netns
@pytest.mark.slow
def test_up_twice_is_a_clear_error(cluster, capsys):
    rc = main(["cluster", "up", "--hosts", "2", "--link-gbps", "1", "--latency-us", "100", "--prefix", PREFIX])
    assert rc == 2
    assert "already up" in capsys.readouterr().err
    assert sorted(_ours()) == [f"{PREFIX}h0", f"{PREFIX}h1"]


@needs_netns
@pytest.mark.slow
@pytest.mark.mpi
def test_bench_allreduce_runs_across_the_namespaces(cluster, capsys):
    rc = main(["bench", "allreduce", "--system", "emulated", "--ranks", "2", "--min-bytes", "1M", "--max-bytes", "1M",
               "--algorithms", "ring,mpi", "--iterations", "3", "--warmup", "1", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    doc = json.loads(out)
    assert doc["ranks"] == 2 and doc["system"] == "emulated"
    for r in doc["results"]:
        assert r["correct"] is True
        # over the 1 Gbit/s network, not shared memory: 2 ranks move n bytes each way per allreduce, so the
        # time is at least n / (payload rate)
        assert r["time_s"] > (1 << 20) / (1e9 / 8)
        assert r["time_s"] < 10 * (1 << 20) / (0.94e9 / 8)


@needs_netns
@pytest.mark.slow
@pytest.mark.mpi
def test_run_a_tiny_model_across_the_namespaces(cluster, capsys, tmp_path):
    out = tmp_path / "m.json"
    rc = main(["run", "--system", "emulated", "--ranks", "2", "--model", "tiny", "--batch", "8", "--iterations", "2",
               "--warmup-iterations", "1", "--allreduce", "ring", "--out", str(out), "--json"])
    assert rc == 0, capsys.readouterr().err
    m = json.loads(out.read_text())
    assert m["ranks"] == 2 and m["launcher"] == "emulated"
    assert m["measured_iterations"] == 2 and m["iteration_s"] > 0
    assert m["breakdown"]["comm_total_s"] > 0


@needs_netns
@pytest.mark.slow
@pytest.mark.mpi
def test_the_speed_probe_across_the_namespaces_starts_together(cluster):
    """With ranks on two hosts the probes start at one announced instant (executor.speed_probe.start_together):
    every measured iteration has both ranks' probe samples."""
    from executor.launch import launch
    from perfmodel.config import load_config

    cfg = load_config(model="tiny", batch=8, system="emulated", nodes=2, ranks_per_node=1, allreduce="ring",
                      iterations=3, warmup_iterations=1, epochs=1.0)
    m = launch(cfg, 2, iterations=3, warmup_iterations=1, extra={"speed_probe": True}, timeout_s=240)
    assert len(m["records"]) == 2
    for rec in m["records"]:
        assert all(r["probe_s"] > 0 and r["probe_cold_s"] > 0 for r in rec)
    assert m["speed_probe"]["typical_s"] > 0


@needs_netns
@pytest.mark.slow
def test_down_leaves_nothing(cluster, capsys):
    files = [Path(f) for f in cluster["files"]]
    assert all(f.exists() for f in files)
    assert main(["cluster", "down", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["removed"] is True and sorted(out["namespaces"]) == [f"{PREFIX}h0", f"{PREFIX}h1"]
    assert _ours() == []
    links = nx.run(["ip", "-o", "link", "show"])
    assert PREFIX not in links
    assert not any(f.exists() for f in files)
    assert not Path(os.environ["TTT_CLUSTER_DIR"]).exists()     # folders up made are gone too
    assert not Path(os.environ["TTT_SYSTEMS_DIR"]).exists()
    sw = cluster.get("switch")
    if sw:
        from executor.cluster.manage import process_starttime
        assert process_starttime(int(sw["pid"])) is None
    assert main(["cluster", "down"]) == 0
    assert "nothing to remove" in capsys.readouterr().out


@needs_netns
@pytest.mark.slow
def test_two_level_tree_up_and_down(isolated, capsys):
    prefix = f"t{os.getpid() % 1000000}-"
    rc = main(["cluster", "up", "--hosts", "4", "--link-gbps", "1", "--latency-us", "50", "--topology", "two-level",
               "--hosts-per-switch", "2", "--uplink-latency-us", "200", "--prefix", prefix, "--no-measure", "--json"])
    try:
        assert rc == 0, capsys.readouterr().err
        from hardware.catalog import load_system
        s = load_system("emulated")
        assert s.network.topology_kind == "fat-tree" and s.network.topology_params["oversubscription"] == 2.0
        near = json.loads(_in_ns(f"{prefix}h0", "ping", "10.77.0.2", "5", "0.01").stdout)["rtt_s"]
        far = json.loads(_in_ns(f"{prefix}h0", "ping", "10.77.0.3", "5", "0.01").stdout)["rtt_s"]
        assert min(near) >= 4 * 50e-6 and min(far) >= 4 * 50e-6 + 4 * 200e-6
        assert min(far) - min(near) == pytest.approx(4 * 200e-6, abs=0.5e-3)
    finally:
        assert main(["cluster", "down"]) == 0
    assert [n for n in nx.list_netns() if n.startswith(prefix)] == []


@needs_netns
@pytest.mark.slow
def test_kernel_engine_bridges_and_veths(isolated, capsys, monkeypatch):
    """The netem engine's topology (switch namespace, bridges, veth pairs, per-port qdiscs), with tbf rate
    shaping standing in for netem where the kernel has no netem (delays are then not emulated)."""
    from executor.cluster import manage

    if not _kernel_has_netem():
        monkeypatch.setattr(nx, "netem_available", lambda ns: True)
        monkeypatch.setattr(manage, "_netem", lambda ns, dev, rate, delay:
                            f"qdisc replace dev {dev} root tbf rate {int(rate)}bit burst 64kb latency 50ms")
    prefix = f"k{os.getpid() % 1000000}-"
    rc = main(["cluster", "up", "--hosts", "4", "--link-gbps", "1", "--latency-us", "100", "--topology", "two-level",
               "--hosts-per-switch", "2", "--engine", "netem", "--prefix", prefix, "--no-measure", "--json"])
    try:
        assert rc == 0, capsys.readouterr().err
        state = json.loads(capsys.readouterr().out)
        assert state["engine"] == "netem" and state["switch"] is None
        assert sorted(state["namespaces"]) == sorted([f"{prefix}h{i}" for i in range(4)] + [f"{prefix}sw"])
        bridges = nx.run(["ip", "-n", f"{prefix}sw", "-o", "link", "show", "type", "bridge"])
        assert {"br0", "br1", "brs"} <= {ln.split(":")[1].strip() for ln in bridges.splitlines()}
        qdisc = nx.run(["tc", "-n", f"{prefix}h0", "qdisc", "show", "dev", "ttt0"])
        assert "netem" in qdisc or "tbf" in qdisc
        far = json.loads(_in_ns(f"{prefix}h0", "ping", "10.77.0.4", "3", "0.01").stdout)["rtt_s"]
        assert len(far) == 3
    finally:
        assert main(["cluster", "down"]) == 0
    assert [n for n in nx.list_netns() if n.startswith(prefix)] == []


def _kernel_has_netem() -> bool:
    """Probe for the netem qdisc in a scratch namespace (created and deleted here)."""
    name = f"{PREFIX}probe"
    subprocess.run([nx.tool("ip"), "netns", "add", name], capture_output=True, timeout=10)
    try:
        return nx.netem_available(name)
    finally:
        subprocess.run([nx.tool("ip"), "netns", "del", name], capture_output=True, timeout=10)


def _link_doc(rate_Bps: float, times_s: list[float]) -> dict:
    sizes = [256 << 10, 512 << 10, 1 << 20, 2 << 20][:len(times_s)]
    return {"rate_Bps": rate_Bps, "latency_s": 1e-3, "small_latency_s": 5e-4, "sizes": sizes, "times_s": times_s,
            "hosts": [0, 1], "pairs": [[0, 1]]}


def test_link_problems_names_what_is_impossible():
    from executor.cluster.measure import link_problems

    payload = 1e9 / 8 * 1448 / 1538
    assert link_problems(_link_doc(0.95 * payload, [0.003, 0.005, 0.010, 0.019]), payload) == []
    # the recorded disturbed calibration: 1.30 Gbit/s fitted on a 1 Gbit/s link, 256 KiB slower than 1 MiB
    assert link_problems(_link_doc(1.62e8, [0.0409, 0.0401, 0.0375]), payload) == [
        "fitted rate 1.3 Gbit/s above the line's 0.941 Gbit/s of TCP payload"]
    bad = link_problems(_link_doc(0.9 * payload, [0.006, 0.005, 0.010]), payload)
    assert bad == ["exchanges of 256 KiB took 6.0 ms, longer than those of 512 KiB (5.0 ms)"]
    assert link_problems(_link_doc(None, [0.003]), payload) == [
        "no positive rate fitted (exchange times do not grow with the size)"]
    # the recorded disturbed profile of 2026-11-22 (2 hosts, 1 Gbit/s, 50 us): 1 MiB at 2.98 x 512 KiB
    assert link_problems(_link_doc(0.86 * payload, [0.0029, 0.0051, 0.0152, 0.0210]), payload) == [
        "exchanges of 1024 KiB took 15.2 ms, more than 2 times those of 512 KiB (5.1 ms)"]
    assert link_problems(_link_doc(0.9 * payload, [0.0029, 0.0051, 0.0111]), payload) == []   # within 10 %


@needs_netns
@pytest.mark.slow
def test_an_impossible_link_calibration_is_measured_again(isolated, capsys, monkeypatch):
    """Bring-up measures the link again while its calibration is impossible, and registers the first
    consistent attempt; when none is, the one with the fewest problems, with a warning."""
    import executor.cluster.measure as measure
    from executor.cluster.state import load_state
    from hardware.catalog import load_system

    good = _link_doc(1.1e8, [0.003, 0.005, 0.010, 0.019])
    bad = _link_doc(1.62e8, [0.006, 0.005, 0.010, 0.019])         # two problems
    worse_then_bad = [bad, _link_doc(1.62e8, [0.003, 0.005, 0.010, 0.019]), bad]   # 2, 1, 2 problems
    prefix = f"t{os.getpid() % 1000000}-"
    for docs, want_rate, attempts, warned in (([bad, good], 1.1e8, 2, False), (worse_then_bad, 1.62e8, 3, True)):
        calls = iter([dict(d) for d in docs])
        monkeypatch.setattr(measure, "measure_link", lambda state, a, b: next(calls))
        rc = main(["cluster", "up", "--hosts", "2", "--link-gbps", "1", "--latency-us", "50", "--prefix", prefix,
                   "--json"])
        try:
            assert rc == 0, capsys.readouterr().err
            state = load_state()
            assert state["measured"]["attempts"] == attempts
            assert load_system("emulated").network.link_bw_Bps == pytest.approx(want_rate, rel=1e-3)
            assert any("stayed inconsistent after 3 attempts" in w for w in state.get("warnings", [])) is warned
            assert ("problems" in state["measured"]) is warned
            assert next(calls, None) is None   # no attempt more than needed
        finally:
            assert main(["cluster", "down"]) == 0
        assert [n for n in nx.list_netns() if n.startswith(prefix)] == []


def test_switch_lateness_between_two_readings_of_its_counters():
    """executor.cluster.switch.lateness_between: the frames forwarded between two readings and how late they
    were on average (known answer), nothing without both readings (the kernel engine has no switch)."""
    from executor.cluster.switch import lateness_between

    a = {"frames_out": 1000, "late_sum_s": 0.010, "late_over_100us": 10}
    b = {"frames_out": 3000, "late_sum_s": 0.110, "late_over_100us": 410}
    late = lateness_between(a, b)
    assert late["frames"] == 2000
    assert late["late_mean_s"] == pytest.approx(0.1 / 2000) and late["late_over_100us_share"] == pytest.approx(0.2)
    assert lateness_between(b, b) == {"frames": 0, "late_mean_s": 0.0, "late_over_100us_share": 0.0}
    assert lateness_between(None, b) is None and lateness_between(a, None) is None
