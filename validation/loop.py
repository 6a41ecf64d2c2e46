"""The validation loop: for every point of a matrix, run for real, predict (analytic and simulated) from the
calibration alone, compare; every result is a file, so an interrupted validation resumes where it stopped.

Layout of the output folder::

    OUT/runs/<point id>/run-<r>.json   the point's run in pass r (runs of one point are passes apart)
    OUT/measured/<point id>.json   one measurement per point (written atomically when its runs are done)
    OUT/points/<point id>.json     one result per point: prediction, simulation, measurement, errors
    OUT/summary.json               headline errors, per-component errors, noise, time to accuracy, published
    OUT/report.md, OUT/report.html the report (validation.report)

A point's result holds the configuration, the analytic prediction, the simulation (with the compute
jitter that ``perfmodel calibrate`` measured, so that the simulated step-time distribution of the runs is a
prediction, not a fit), the measurement (summary, per-iteration times of the slowest rank, repeats) and the
errors per component.

Host speed: the runs record the host speed probe (:mod:`executor.speed_probe`) after every iteration, and
the calibration recorded it beside its compute measurements. ``speed_factor`` = the run's probe time over
the calibration's (same number of ranks sharing the host). Errors are given twice: ``raw`` (the prediction
as calibrated) and speed-normalised (``analytic``/``simulation``: every predicted time multiplied by the
speed factor, since on one host every component is work of the same CPU and memory). The normalised error
removes most of the host's drift between calibration and run, not all of it (see
:mod:`executor.speed_probe`); the raw error contains all of it.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Mapping


from executor.measurement import write_json_atomic
from perfmodel.predict import predict
from perfmodel.simulate import simulate
from validation.errors import component_errors, noise_pct, summarise_errors
from validation.matrix import Point

__all__ = ["run_point", "compare_point", "combine_runs", "probe_statistic", "speed_factor", "run_matrix",
           "load_points", "load_measured", "summary_of"]


def _slowest(measurement: Mapping[str, Any], key: str) -> list[float] | None:
    """Per measured iteration, the slowest rank's record ``key`` (seconds; None when a record lacks it)."""
    recs = measurement["records"]
    n = min(len(r) for r in recs)
    rows = [i for i in range(n) if not recs[0][i]["warmup"]]
    if not all(key in r[i] for r in recs for i in rows):
        return None
    return [max(r[i][key] for r in recs) for i in rows]


def probe_statistic(measurement: Mapping[str, Any]) -> float | None:
    """The run's host speed probe (seconds): the *typical* per-iteration value (median of the fastest half of
    the slowest rank's samples), the calibration's statistic of its own probe samples; the median for a
    measurement written before the executor recorded it. The probe's samples can be bimodal on this host
    (about 6 or 13 ms at one rank), and the median of the few samples of a short run lands on either mode."""
    probe = measurement.get("speed_probe") or {}
    return probe.get("typical_s") or probe.get("median_s")


def _run_once(point: Point, system: str, timeout_s: float) -> dict[str, Any]:
    """One real run of ``point`` (with the host speed probe), reduced to what the comparison keeps."""
    from executor.launch import launch

    t0 = time.perf_counter()
    m = launch(point.config(system), point.ranks, iterations=point.iterations,
               warmup_iterations=point.warmup_iterations, timeout_s=timeout_s, extra={"speed_probe": True})
    return {
        "iteration_s": m["iteration_s"], "breakdown": m["breakdown"], "images_per_s": m["images_per_s"],
        "iteration_p50_s": m["iteration_p50_s"], "iteration_p99_s": m["iteration_p99_s"],
        "iteration_times_s": _slowest(m, "iteration_s"), "iteration_probe_s": _slowest(m, "probe_s") or None,
        "iteration_probe_cold_s": _slowest(m, "probe_cold_s") or None,
        "speed_probe_cold_s": (m.get("speed_probe") or {}).get("cold_typical_s"),
        "cores_per_rank": m.get("cores_per_rank"), "allreduce_algorithm": m.get("allreduce_algorithm"),
        "software": m.get("software"), "machine": m.get("machine"),
        "speed_probe_s": probe_statistic(m),
        "run_wall_s": time.perf_counter() - t0,
    }


def combine_runs(runs: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The measurement of a point from its runs (each from :func:`_run_once`): the run with the median
    *speed-normalised* time (iteration over its speed probe; the plain iteration time when a run has no
    probe), with every run's time and probe kept. Normalising first means the run chosen is the typical one
    for the host's speed at the time, not the one that happened to fall in a slow minute; with two runs
    the faster-normalised is taken (the lower median)."""
    if not runs:
        raise ValueError("combine_runs: no runs")
    probes = [r.get("speed_probe_s") for r in runs]
    key = ([r["iteration_s"] / p for r, p in zip(runs, probes)] if all(probes)
           else [r["iteration_s"] for r in runs])
    order = sorted(range(len(runs)), key=lambda i: key[i])
    pick = order[(len(order) - 1) // 2]
    best = runs[pick]
    times = [r["iteration_s"] for r in runs]
    out = {k: v for k, v in best.items() if k != "run_wall_s"}
    out.update({"repeat_iteration_s": times, "repeat_speed_probe_s": probes, "selected_run": pick,
                "noise": noise_pct(best.get("iteration_times_s") or [], times),
                "run_wall_s": sum(float(r.get("run_wall_s") or 0.0) for r in runs)})
    if len(runs) > 1 and all(probes):
        norm = [t / p for t, p in zip(times, probes)]
        out["noise"]["repeat_normalised_pct"] = float(100 * (max(norm) - min(norm)) / 2 / statistics.fmean(norm))
    return out


def _measure(point: Point, system: str, repeats: int, timeout_s: float) -> dict[str, Any]:
    """``repeats`` runs of ``point`` back to back, combined (:func:`combine_runs`)."""
    return combine_runs([_run_once(point, system, timeout_s) for _ in range(repeats)])


def speed_factor(system: str, ranks: int, probe_s: float | None, model: str | None = None) -> float | None:
    """The run's host speed probe over the calibration's for ``ranks`` ranks sharing the host, sampled after
    the same ``model``'s steps where the calibration measured it (None when either is missing)."""
    from hardware.catalog import load_system

    cal = load_system(system).calibration
    ref = cal.speed_probe_for(ranks, model) if cal is not None else None
    return float(probe_s / ref) if probe_s and ref else None


def scaled(prediction: Mapping[str, Any], factor: float | None) -> dict[str, Any]:
    """``prediction`` with every time (iteration, percentiles, samples, breakdown) multiplied by ``factor``."""
    f = 1.0 if factor is None else float(factor)
    out: dict[str, Any] = {}
    for k, v in prediction.items():
        if k == "breakdown":
            out[k] = {bk: (bv * f if isinstance(bv, (int, float)) else bv) for bk, bv in v.items()}
        elif k.endswith("_s") and isinstance(v, (int, float)):
            out[k] = v * f
        elif k.endswith("samples_s"):
            out[k] = [x * f for x in v]
        else:
            out[k] = v
    return out


def compare_point(point: Point, meas: Mapping[str, Any], *, system: str = "local",
                  sim_iterations: int = 200) -> dict[str, Any]:
    """Predict and simulate ``point`` on ``system`` and compare with its measurement ``meas`` (from
    :func:`_measure`); returns the point's result record."""
    cfg = point.config(system)
    pred = predict(cfg)
    sim = simulate(cfg, seed=0, iterations=sim_iterations, prediction=pred)  # calibrated jitter, if any
    sd = sim.to_dict()
    analytic_raw = {"iteration_s": pred.iteration_s, "breakdown": dict(pred.breakdown)}
    simulated_raw = {"iteration_s": sd["iteration_s"], "iteration_p50_s": sd["iteration_p50_s"],
                     "iteration_p99_s": sd["iteration_p99_s"], "breakdown": sd["breakdown"],
                     "iteration_samples_s": [float(x) for x in sim.iteration_samples_s],
                     "jitter_cv": sd["simulation"]["variability"]["cv"]}
    factor = speed_factor(system, point.ranks, meas.get("speed_probe_s"), point.model)
    analytic, simulated = scaled(analytic_raw, factor), scaled(simulated_raw, factor)
    return {
        "id": point.id, "point": {k: getattr(point, k) for k in point.__dataclass_fields__},
        "config": cfg.to_dict(), "config_hash": cfg.config_hash, "system": system,
        "speed_factor": factor,
        "prediction": analytic, "simulation": simulated, "measurement": dict(meas),
        "prediction_raw": analytic_raw, "simulation_raw": simulated_raw,
        "errors": {"analytic": component_errors(analytic, meas), "simulation": component_errors(simulated, meas),
                   "analytic_raw": component_errors(analytic_raw, meas),
                   "simulation_raw": component_errors(simulated_raw, meas)},
        "run_wall_s": meas.get("run_wall_s"),
    }


def run_point(point: Point, *, system: str = "local", repeats: int = 1, timeout_s: float = 900.0,
              sim_iterations: int = 200) -> dict[str, Any]:
    """Run ``point`` for real, then predict, simulate and compare (:func:`compare_point`)."""
    return compare_point(point, _measure(point, system, repeats, timeout_s), system=system,
                         sim_iterations=sim_iterations)


def load_measured(out_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Every stored measurement by point id: ``OUT/measured/<id>.json``, and the measurements inside result
    records of an output folder written before measurements were stored apart (``OUT/points``)."""
    out: dict[str, dict[str, Any]] = {}
    for r in load_points(out_dir):
        if "measurement" in r:
            out[r["id"]] = r["measurement"]
    for f in sorted((Path(out_dir) / "measured").glob("*.json")):
        try:
            doc = json.loads(f.read_text())
            out[doc["id"]] = doc["measurement"]
        except (ValueError, KeyError, TypeError):
            continue   # never half-written (atomic), but a foreign file is skipped
    return out


def load_points(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every finished point result in ``out_dir/points``."""
    folder = Path(out_dir) / "points"
    out = []
    for f in sorted(folder.glob("*.json")):
        try:
            out.append(json.loads(f.read_text()))
        except ValueError:
            continue  # never half-written (atomic), but a foreign file is skipped
    return out


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # never half-written (atomic); a foreign file is measured again


def run_matrix(points: list[Point], out_dir: str | os.PathLike, *, system: str = "local", repeats: int = 1,
               progress: Callable[[int, int, str], None] | None = None, timeout_s: float = 900.0,
               control: Point | None = None, control_every: int = 4,
               before_pass: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Measure every point not yet measured (resumable), then predict and compare all of them, and return the
    error summary over all finished points.

    The ``repeats`` runs of a point are taken in ``repeats`` passes over the whole matrix (pass ``r`` runs
    every point once, ``OUT/runs/<id>/run-<r>.json``), not back to back: the host's speed drifts over
    minutes, and a slow minute then falls on one run of several points instead of on every run of one. When
    a point has all its runs, its measurement is the run with the median speed-normalised time
    (:func:`combine_runs`, ``OUT/measured/<id>.json``).

    The runs come first and the predictions after the last run, so that the system spec file ``system`` can
    hold a calibration merged from sessions spread over the passes (``before_pass(r, passes)`` is called
    before pass ``r`` = 0, 1, ..., measured or not, e.g. to measure a calibration session there and rewrite
    the spec). The predictions use the calibration only, never the runs.

    With ``control`` (:mod:`validation.control`): that configuration is run before the first point of every
    pass (the reference, merged over the passes) and after every ``control_every`` points and after the
    last; the summary's ``noise_floor`` is the error a perfect model would show on those runs (the runs at
    one place of the passes combined as the points' runs are)."""
    from validation.control import control_name, ensure_control, load_controls, summarise_controls

    out = Path(out_dir)
    folder, mfolder, rfolder = out / "points", out / "measured", out / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    mfolder.mkdir(parents=True, exist_ok=True)
    ordered = sorted(points, key=lambda p: (p.ranks > 1, p.ranks))
    measured = load_measured(out_dir)
    passes = max(1, int(repeats))

    def measure_control() -> dict[str, Any]:
        return {"point_id": control.id, **_measure(control, system, 1, timeout_s)}

    n = len(ordered)
    for r in range(passes):
        if before_pass:
            before_pass(r, passes)
        if control is not None:
            ensure_control(out_dir, control_name(None, r + 1), measure_control)
        for i, point in enumerate(ordered):
            if progress:
                progress(r * n + i, passes * n, point.id if passes == 1 else f"pass {r + 1}/{passes}: {point.id}")
            if point.id not in measured:
                path = rfolder / point.id / f"run-{r + 1}.json"
                if _load_json(path) is None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_json_atomic(path, _run_once(point, system, timeout_s))
            if control is not None and ((i + 1) % max(1, control_every) == 0 or i + 1 == n):
                ensure_control(out_dir, control_name(i + 1, r + 1), measure_control)
    if progress:
        progress(passes * n, passes * n, "done")
    for point in ordered:
        if point.id not in measured:
            runs = [_load_json(rfolder / point.id / f"run-{r + 1}.json") for r in range(passes)]
            measured[point.id] = combine_runs([x for x in runs if x is not None])
            write_json_atomic(mfolder / f"{point.id}.json", {"id": point.id, "measurement": measured[point.id]})
        write_json_atomic(folder / f"{point.id}.json", compare_point(point, measured[point.id], system=system))
    wanted = {p.id for p in points}
    results = [r for r in load_points(out_dir) if r["id"] in wanted]
    summary = summary_of(results)
    if control is not None:
        summary["noise_floor"] = summarise_controls(*load_controls(out_dir))
    return summary


def summary_of(results: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Headline numbers over point results."""
    analytic = summarise_errors(results, "analytic")
    simulated = summarise_errors(results, "simulation")
    raw = summarise_errors(results, "analytic_raw")
    factors = [r["speed_factor"] for r in results if r.get("speed_factor")]
    noise = [r["measurement"]["noise"]["sem_pct"] for r in results if r["measurement"]["noise"]["sem_pct"] is not None]
    rep = [r["measurement"]["noise"]["repeat_pct"] for r in results
           if r["measurement"]["noise"]["repeat_pct"] is not None]
    rep_n = [r["measurement"]["noise"]["repeat_normalised_pct"] for r in results
             if r["measurement"]["noise"].get("repeat_normalised_pct") is not None]
    return {
        "configs": len(results),
        "mape_iteration": analytic["iteration"]["mape"], "max_ape_iteration": analytic["iteration"]["max_ape"],
        "bias_iteration": analytic["iteration"]["bias"],
        "mape_iteration_raw": raw["iteration"]["mape"], "max_ape_iteration_raw": raw["iteration"]["max_ape"],
        "bias_iteration_raw": raw["iteration"]["bias"],
        "speed_factor": {"min": min(factors), "median": statistics.median(factors), "max": max(factors)}
        if factors else None,
        "components": analytic, "simulation_components": simulated, "raw_components": raw,
        "noise": {"median_sem_pct": statistics.median(noise) if noise else None,
                  "median_repeat_pct": statistics.median(rep) if rep else None,
                  "median_repeat_normalised_pct": statistics.median(rep_n) if rep_n else None},
    }
