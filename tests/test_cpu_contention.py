"""Overlapped bucket collectives take CPU from the backward on a CPU host (perfmodel.predict): the overlapped
part of their time (total less exposed) times one core's share of the rank's cores
(``_collective_cpu_share``, at most 1) is added to the backward.

Known answers: with one core per rank (this machine's 2 ranks on 2 cores) the share is 1, so overlap on and
off predict the same iteration; on GPUs overlap still hides communication; a rank with 24 cores loses 1/24
of the overlapped time."""
from __future__ import annotations

import pytest

import executor.calibrate as cal
from hardware.catalog import load_system
from perfmodel.config import load_config
from perfmodel.predict import _collective_cpu_share, predict


@pytest.fixture(scope="module")
def local_spec(tmp_path_factory):
    from test_bench_calibrate import fake_report   # tests/ is on sys.path

    path, _ = cal.write_spec(fake_report(), tmp_path_factory.mktemp("contention") / "local.toml")
    return str(path)


def _pred(system: str, model: str, nodes: int, rpn: int, per_rank: int, overlap: bool, bucket_mb: float = 25.0):
    return predict(load_config(model=model, batch=per_rank * nodes * rpn, optimizer="sgd", epochs=1, system=system,
                               nodes=nodes, ranks_per_node=rpn, overlap=overlap, bucket_bytes=bucket_mb * 1e6))


@pytest.mark.parametrize("model,bucket_mb", [("alexnet", 25.0), ("resnet20", 0.25)])
def test_on_one_cpu_node_overlap_hides_nothing(local_spec, model, bucket_mb):
    on = _pred(local_spec, model, 1, 2, 8, True, bucket_mb)
    off = _pred(local_spec, model, 1, 2, 8, False, bucket_mb)
    b_on, b_off = on.breakdown, off.breakdown
    assert b_on["comm_total_s"] > 0 and b_on["comm_exposed_s"] < b_off["comm_total_s"]   # something overlapped
    # the collectives' wall spans stretch by what they take from the backward (all of the overlapped part)
    stolen = b_off["comm_total_s"] - b_on["comm_exposed_s"]
    assert b_on["comm_total_s"] == pytest.approx(2 * b_off["comm_total_s"] - b_on["comm_exposed_s"], rel=1e-9)
    assert b_on["backward_s"] == pytest.approx(b_off["backward_s"] + stolen, rel=1e-9)
    assert on.iteration_s == pytest.approx(off.iteration_s, rel=1e-9)


def test_on_gpus_overlap_still_hides_communication():
    on = _pred("dgx1-v100", "resnet50", 2, 8, 32, True)
    off = _pred("dgx1-v100", "resnet50", 2, 8, 32, False)
    assert on.breakdown["backward_s"] == pytest.approx(off.breakdown["backward_s"], rel=1e-12)
    assert on.iteration_s < off.iteration_s - 0.5 * (off.breakdown["comm_exposed_s"] - on.breakdown["comm_exposed_s"])


def test_a_rank_with_many_cores_loses_one_cores_share():
    system = load_system("stampede2-skx")   # a 24-core Skylake socket per device
    assert system.device.cores == 24
    assert _collective_cpu_share(system, 1.0) == pytest.approx(1 / 24)
    assert _collective_cpu_share(system, 12.0) == pytest.approx(1 / 2)
    assert _collective_cpu_share(system, 48.0) == 1.0   # half a core per rank: still at most all of it
    # the predictor adds exactly that share of the overlapped time to the backward (2 ranks per node: one per
    # socket)
    on = _pred("stampede2-skx", "resnet50", 4, 2, 32, True)
    off = _pred("stampede2-skx", "resnet50", 4, 2, 32, False)
    b = on.breakdown
    assert off.breakdown["comm_total_s"] > b["comm_exposed_s"]
    stolen = (off.breakdown["comm_total_s"] - b["comm_exposed_s"]) / 24
    assert b["backward_s"] == pytest.approx(off.breakdown["backward_s"] + stolen, rel=1e-9)
    assert b["comm_total_s"] == pytest.approx(off.breakdown["comm_total_s"] + stolen, rel=1e-9)
