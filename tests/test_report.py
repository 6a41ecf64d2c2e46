"""The validation report (validation.report, validation.plots): both files written atomically, the headline
numbers in them, a self-contained HTML page that parses, and, where a Chromium binary exists, a real
headless browser that loads every embedded figure and renders a non-blank page."""
from __future__ import annotations

import base64
import html.parser
import io
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from validation.errors import component_errors, noise_pct
from validation.loop import summary_of
from validation import plots as P
from validation.report import noise_band_pct, write_report

CHROMIUM_SKIP = "chromium not installed (apt-get install chromium; .ci/run installs it)"


# ==========================================================================================================
# Synthetic results with known numbers
# ==========================================================================================================
def make_result(model: str, ranks: int, batch: int, *, measured_s: float, predicted_s: float, simulated_s: float,
                optimizer: str = "sgd", allreduce: str = "auto", bucket_mb: float = 25.0, overlap: bool = True,
                comm_s: float = 0.0, pred_comm_s: float = 0.0, cv: float = 0.02, n_iter: int = 20,
                repeats: tuple[float, ...] = (), seed: int = 0) -> dict[str, Any]:
    """A point result shaped like validation.loop.run_point's, with the given mean times (seconds)."""
    rng = np.random.default_rng(seed)
    iters = measured_s * (1 + cv * rng.standard_normal(n_iter))
    iters *= measured_s / iters.mean()  # the mean is exactly measured_s
    samples = simulated_s * (1 + cv * rng.standard_normal(200))
    samples *= simulated_s / samples.mean()
    opt_s = 0.003

    def breakdown(total: float, comm: float) -> dict[str, float]:
        return {"compute_s": total - comm - opt_s, "comm_total_s": comm, "comm_exposed_s": comm,
                "optimizer_s": opt_s, "io_s": 0.0}

    meas = {"iteration_s": measured_s, "breakdown": breakdown(measured_s, comm_s),
            "images_per_s": batch / measured_s, "iteration_times_s": iters.tolist(),
            "repeat_iteration_s": list(repeats) or [measured_s], "allreduce_algorithm": "mpi" if ranks > 1 else None,
            "cores_per_rank": 2 // ranks or 1,
            "software": {"python": "3.11.7", "torch": "2.13.0+cpu", "mpich": "5.0.2"},
            "machine": {"hostname": "testbox", "cpus": 2, "memory_bytes": 8 * 2**30},
            "noise": noise_pct(iters.tolist(), repeats)}
    pred = {"iteration_s": predicted_s, "breakdown": breakdown(predicted_s, pred_comm_s)}
    sim = {"iteration_s": simulated_s, "iteration_p50_s": float(np.percentile(samples, 50)),
           "iteration_p99_s": float(np.percentile(samples, 99)), "breakdown": breakdown(simulated_s, pred_comm_s),
           "iteration_samples_s": samples.tolist(), "jitter_cv": cv}
    point = {"model": model, "ranks": ranks, "batch": batch, "optimizer": optimizer, "allreduce": allreduce,
             "bucket_mb": bucket_mb, "overlap": overlap, "iterations": n_iter, "warmup_iterations": 2,
             "options": []}
    pid = f"{model}-r{ranks}-b{batch}-{optimizer}-{allreduce}-{bucket_mb:g}MB-{'ov' if overlap else 'noov'}-" \
          f"{seed:08x}"
    return {"id": pid, "point": point, "system": "local", "prediction": pred, "simulation": sim,
            "measurement": meas,
            "errors": {"analytic": component_errors(pred, meas), "simulation": component_errors(sim, meas)}}


def synthetic_results() -> list[dict[str, Any]]:
    """Six points: a resnet20 family at 1/2/4 ranks (32 images per rank), a second configuration at 4 ranks
    (ring, no overlap), and a LARS family at 1/2 ranks. Known iteration errors (analytic):
    +10, -20, +5, +30, 0, -10 percent."""
    R = make_result
    return [
        R("resnet20", 1, 32, measured_s=0.100, predicted_s=0.110, simulated_s=0.112, seed=1),
        R("resnet20", 2, 64, measured_s=0.125, predicted_s=0.100, simulated_s=0.120, comm_s=0.010,
          pred_comm_s=0.008, seed=2, repeats=(0.124, 0.126, 0.128)),
        R("resnet20", 4, 128, measured_s=0.160, predicted_s=0.168, simulated_s=0.176, comm_s=0.020,
          pred_comm_s=0.025, seed=3, cv=0.05),
        R("resnet20", 4, 128, allreduce="ring", bucket_mb=0.25, overlap=False, measured_s=0.200,
          predicted_s=0.260, simulated_s=0.270, comm_s=0.040, pred_comm_s=0.090, seed=4),
        R("resnet20", 1, 32, optimizer="lars", measured_s=0.105, predicted_s=0.105, simulated_s=0.107, seed=5),
        R("resnet20", 2, 64, optimizer="lars", measured_s=0.140, predicted_s=0.126, simulated_s=0.150,
          comm_s=0.012, pred_comm_s=0.009, seed=6),
    ]


KNOWN_ERRORS = [10.0, -20.0, 5.0, 30.0, 0.0, -10.0]


def synthetic_tta() -> dict[str, Any]:
    rows = [{"model": "resnet20", "batch": b, "optimizer": o, "ranks": k, "measured_s": m, "predicted_s": p,
             "error_pct": 100 * (p - m) / m, "measured_epochs": me, "predicted_epochs": pe, "fit_on": [128, 512]}
            for b, o, k, m, p, me, pe in ((128, "sgd", 1, 1800.0, 1700.0, 20.0, 19.0),
                                          (256, "sgd", 2, 1500.0, 1650.0, 24.0, 26.0),
                                          (512, "lars", 4, 1300.0, 1250.0, 30.0, 29.0))]
    e = [abs(r["error_pct"]) for r in rows]
    return {"target_top1": 0.8, "rows": rows, "mape": float(np.mean(e)), "max_ape": max(e)}


def synthetic_published() -> dict[str, Any]:
    def row(paper, system, nodes, batch, quantity, published, predicted, role):
        time_row = quantity == "time_to_train_s"
        return {"row": f"published_results.csv:{nodes}", "paper": paper, "system": system, "nodes": nodes,
                "batch": batch, "quantity": quantity, "published_s": published if time_row else None,
                "predicted_s": predicted if time_row else None,
                "published_images_per_s": None if time_row else published,
                "predicted_images_per_s": None if time_row else predicted,
                "error_pct": 100 * (predicted - published) / published, "role": role,
                "scope": "single-node" if nodes == 1 else "multi-node"}
    rows = [row("Goyal et al. 2017 (1706.02677)", "big-basin-p100", 1, 256, "time_to_train_s", 104400, 104406,
                "calibration"),
            row("Goyal et al. 2017 (1706.02677)", "big-basin-p100", 32, 8192, "time_to_train_s", 3600, 3384,
                "validation"),
            row("Akiba et al. 2017 (1711.04325)", "dgx1-p100", 128, 32768, "images_per_s", 80000, 88000,
                "validation")]
    return {"rows": rows, "median_abs_error_pct": 8.0, "max_abs_error_pct": 10.0, "count": 2,
            "validation": {"count": 2, "median_abs_error_pct": 8.0, "max_abs_error_pct": 10.0,
                           "by_scope": {"single-node": {"count": 0, "median_abs_error_pct": None,
                                                        "max_abs_error_pct": None},
                                        "multi-node": {"count": 2, "median_abs_error_pct": 8.0,
                                                       "max_abs_error_pct": 10.0}}},
            "calibration": {"count": 1, "median_abs_error_pct": 0.0, "max_abs_error_pct": 0.0, "rows": []},
            "skipped": [{"row": "published_results.csv:32", "paper": "You et al. 2018", "model": "ResNet-50",
                         "hardware": "NVIDIA M40", "reason": "no catalog system: NVIDIA M40"}]}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("report")
    results = synthetic_results()
    summary = dict(summary_of(results), time_to_accuracy=synthetic_tta(), published=synthetic_published(),
                   emulated=synthetic_emulated())
    paths = write_report(out, results, summary, title="Test report")
    return {"out": out, "paths": paths, "results": results, "summary": summary,
            "md": Path(paths["markdown"]).read_text(encoding="utf-8"),
            "html": Path(paths["html"]).read_text(encoding="utf-8")}


# ==========================================================================================================
# Files and content
# ==========================================================================================================
def test_synthetic_errors_are_the_known_ones(report):
    errs = [r["errors"]["analytic"]["iteration"]["error_pct"] for r in report["results"]]
    assert errs == pytest.approx(KNOWN_ERRORS, abs=1e-9)
    s = report["summary"]
    assert s["mape_iteration"] == pytest.approx(np.mean(np.abs(KNOWN_ERRORS)))
    assert s["max_ape_iteration"] == pytest.approx(30.0)
    assert s["bias_iteration"] == pytest.approx(np.mean(KNOWN_ERRORS))


def test_both_files_written_atomically(report):
    out = report["out"]
    assert report["paths"] == {"markdown": str(out / "report.md"), "html": str(out / "report.html")}
    assert (out / "report.md").stat().st_size > 0 and (out / "report.html").stat().st_size > 0
    leftovers = [p.name for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []
    for name in ("predicted_vs_measured", "component_errors", "scaling", "step_distributions", "time_to_accuracy",
                 "published", "emulated"):
        png = (out / "plots" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"](plots/{name}.png)" in report["md"]


def test_markdown_has_the_headline_numbers(report):
    md, s = report["md"], report["summary"]
    head = md.split("## 2.")[0]
    sim = s["simulation_components"]["iteration"]
    assert "Test report" in md
    assert "6 configurations" in head
    # MAPE 12.5, max 30.0, bias +2.5 (analytic); the simulation's, from its own errors
    assert "| mean absolute error, MAPE (%) | 12.5 | " + f"{sim['mape']:.1f} |" in head
    assert "| max absolute error (%) | 30.0 | " + f"{sim['max_ape']:.1f} |" in head
    assert "| bias, mean signed error (%) | +2.5 | " + f"{sim['bias']:+.1f} |" in head
    assert f"{s['noise']['median_sem_pct']:.2f} %" in head and "run-to-run" in head
    assert "as good as it gets" in head
    # within +-10 %: errors +10, +5, 0, -10 -> 4 of 6
    assert "| within ±10 % (configurations) | 4 of 6 |" in head


def test_markdown_sections_and_tables(report):
    md = report["md"]
    for heading in ("## 1. Headline", "## 2. Predicted vs measured", "## 3. Errors per component",
                    "## 4. Scaling curves", "## 5. Step-time distributions", "## 6. Time to accuracy",
                    "## 7. Published results", "## 8. Every configuration"):
        assert heading in md
    # per-component table: comm_exposed is scored on the three multi-rank points with >= 2 ms of communication
    comm = next(line for line in md.splitlines() if line.startswith("| communication, exposed |"))
    assert comm.split("|")[2].strip() == "4"
    # every configuration appears once in the configuration table, with its signed error
    table = md.split("## 8. Every configuration")[1]
    for r, e in zip(report["results"], KNOWN_ERRORS):
        line = next(l for l in table.splitlines() if l.startswith(f"| {P.short_id(r)} |"))
        assert f"| {e:+.1f} |" in line if e else "| 0.0 |" in line  # a zero error carries no sign
    assert "auto → mpi" in table
    # time to accuracy: the rows and the error of each
    tta = md.split("## 6.")[1].split("## 7.")[0]
    assert "80.0 %" in tta and "(in fit)" in tta and "| -5.6 |" in tta and "| +10.0 |" in tta
    # published: the skipped row with its reason, the throughput row in images/s
    pub = md.split("## 7.")[1].split("## 8.")[0]
    assert "no catalog system: NVIDIA M40" in pub and "88,000" in pub and "| 60.0 |" in pub


def test_noise_band():
    r = make_result("m", 1, 8, measured_s=0.1, predicted_s=0.1, simulated_s=0.1, repeats=(0.09, 0.11), seed=7)
    sem = r["measurement"]["noise"]["sem_pct"]
    assert r["measurement"]["noise"]["repeat_pct"] == pytest.approx(10.0)
    assert noise_band_pct(r) == pytest.approx(max(2 * sem, 10.0))
    r["measurement"]["noise"] = {"cv_pct": None, "sem_pct": None, "repeat_pct": None}
    assert noise_band_pct(r) is None


def test_scaling_families_and_distribution_points():
    res = synthetic_results()
    fams = P.scaling_families(res)
    assert list(fams) == [("resnet20", 32, "lars"), ("resnet20", 32, "sgd")]
    sgd = fams[("resnet20", 32, "sgd")]
    assert sorted(sgd) == [1, 2, 4] and len(sgd[4]) == 2
    assert P.representative(sgd[4])["point"]["allreduce"] == "auto"  # default comm settings carry the curve
    pts = P.distribution_points(res)
    assert pts[0]["point"]["ranks"] == 1 and all(p["point"]["ranks"] > 1 for p in pts[1:])
    assert pts[1]["point"]["ranks"] == 4 and pts[1]["point"]["allreduce"] == "auto"
    assert len(pts) == 4 and len({id(p) for p in pts}) == 4


def test_nothing_to_draw_is_said_in_words(tmp_path):
    res = [make_result("resnet20", 1, 32, measured_s=0.1, predicted_s=0.12, simulated_s=0.12, seed=1)]
    paths = write_report(tmp_path, res, summary_of(res))
    md = Path(paths["markdown"]).read_text()
    assert "No (model, per-rank batch, optimizer) family was measured at two or more rank counts." in md
    assert "not part of this validation" in md
    assert not (tmp_path / "plots" / "scaling.png").exists()


# ==========================================================================================================
# HTML: self-contained, parses
# ==========================================================================================================
class _Collector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.refs: list[tuple[str, str, str]] = []
        self.imgs: list[str] = []
        self.stack: list[str] = []
        self.text: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("src", "href"):
            if k in a:
                self.refs.append((tag, k, a[k] or ""))
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        if tag == "table":
            self.tables += 1
        if tag not in ("img", "meta", "br", "link", "input"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_self_contained_and_parses(report):
    page = report["html"]
    c = _Collector()
    c.feed(page)
    c.close()
    assert c.stack == []  # every element closed, in order
    assert c.tables >= 6
    assert len(c.imgs) == 7   # six figures of the loop and the emulated cluster's
    for src in c.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for tag, attr, ref in c.refs:
        assert not re.match(r"\s*(https?:)?//", ref, re.I), (tag, attr, ref)
        assert ref.startswith(("data:", "#")), (tag, attr, ref)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<link" not in page and "@import" not in page and "url(" not in page
    text = " ".join(c.text)
    assert "12.5 %" in text and "30.0 %" in text  # headline cards
    assert "document.body.dataset.plots" in page


def test_plot_is_800px_wide_at_rendering_scale():
    png = P.png_predicted_vs_measured(synthetic_results())
    width = int.from_bytes(png[16:20], "big")
    assert width == int(P.FIG_WIDTH_IN * P.DPI)


# ==========================================================================================================
# A real browser
# ==========================================================================================================
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
        if path:
            return path
    return None


def _browser(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    exe = _chromium()
    if exe is None:
        pytest.skip(CHROMIUM_SKIP)
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})


@pytest.mark.slow
def test_browser_loads_every_plot(report, tmp_path):
    url = Path(report["paths"]["html"]).resolve().as_uri()
    proc = _browser(tmp_path, "--dump-dom", url)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = re.search(r"<body[^>]*\bdata-plots=\"(\d+)/(\d+)\"", proc.stdout)
    assert m, f"no data-plots on <body>: {proc.stdout[:500]!r} {proc.stderr[-1000:]!r}"
    loaded, total = int(m.group(1)), int(m.group(2))
    assert total >= 4 and loaded == total, (loaded, total)


@pytest.mark.slow
def test_browser_screenshot_is_not_blank(report, tmp_path):
    import matplotlib.image as mpimg

    shot = tmp_path / "shot.png"
    url = Path(report["paths"]["html"]).resolve().as_uri()
    proc = _browser(tmp_path, f"--screenshot={shot}", "--window-size=1100,1800", "--hide-scrollbars", url)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    img = mpimg.imread(io.BytesIO(shot.read_bytes()), format="png")
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    rgb = img[..., :3]
    assert float(rgb.std()) > 0.05  # text, tables and figures, not one flat colour
    dark = float((rgb.mean(axis=2) < 0.5).mean())
    assert 0.005 < dark < 0.5  # some ink, but not a black page


# ==========================================================================================================
# Emulated cluster and host-speed normalisation
# ==========================================================================================================
def synthetic_emulated() -> dict[str, Any]:
    """Two networks shaped like benchmarks/bench_emulated.py --out: allreduce errors +5, -8, +12 (1 MiB and up)
    and one 64 KiB row that is not scored; one iteration row at -4 %; the second network saturated."""
    def ar(alg, nbytes, meas, pred):
        return {"algorithm": alg, "bytes": nbytes, "ranks": 2, "measured_s": meas, "predicted_s": pred,
                "error_pct": 100 * (pred - meas) / meas}
    ok = {"network": {"hosts": 2, "link_gbps": 1.0, "latency_us": 100.0}, "description": "2 hosts, 1 Gbit/s",
          "measured_link": {"latency_s": 1.1e-4, "rate_Bps": 0.94e9 / 8},
          "allreduce": [ar("ring", 1 << 20, 0.020, 0.021), ar("halving_doubling", 4 << 20, 0.080, 0.0736),
                        ar("ring", 64 << 10, 0.002, 0.004)],
          "iterations": [{"model": "resnet20", "batch": 32, "measured_s": 0.25, "predicted_s": 0.24,
                          "error_pct": -4.0}]}
    sat = {"network": {"hosts": 4, "link_gbps": 5.0, "latency_us": 100.0}, "description": "4 hosts, 5 Gbit/s",
           "saturated": True, "measured_link": {"latency_s": 1.0e-4, "rate_Bps": 3e9 / 8},
           "allreduce": [ar("ring", 16 << 20, 0.050, 0.056)]}
    from validation.emulated import error_summary
    rows = [r for r in ok["allreduce"]]
    return {"summary": {"allreduce_1MiB_and_above": error_summary(rows, min_bytes=1 << 20),
                        "iterations": error_summary(ok["iterations"]),
                        "saturated_allreduce_1MiB_and_above": error_summary(sat["allreduce"], min_bytes=1 << 20)},
            "results": [ok, sat]}


def test_emulated_section_and_figure(tmp_path):
    results = synthetic_results()
    emu = synthetic_emulated()
    assert emu["summary"]["allreduce_1MiB_and_above"]["count"] == 2   # the 64 KiB row is not scored
    assert emu["summary"]["allreduce_1MiB_and_above"]["max_abs_pct"] == pytest.approx(8.0)
    assert emu["summary"]["allreduce_1MiB_and_above"]["within_10pct"] == 2
    paths = write_report(tmp_path, results, dict(summary_of(results), emulated=emu))
    md = Path(paths["markdown"]).read_text(encoding="utf-8")
    sec = md.split("## 9. Emulated cluster")[1]
    assert "| allreduce >= 1 MiB | 2 | 6.5 | 6.5 | 8.0 | 2 of 2 |" in sec
    assert "| training iterations | 1 | 4.0 | 4.0 | 4.0 | 1 of 1 |" in sec
    assert "0.94 Gbit/s, 110 us" in sec and "saturated" in sec
    assert "switch late" not in sec   # files before the switch's lateness was recorded: no note
    assert "exchange_residual_s" not in sec   # link calibrations without per-size times: the line only
    emu["results"][0]["measured_link"].update(sizes=[1 << 18, 1 << 20], times_s=[3e-3, 9e-3])
    sec2 = Path(write_report(tmp_path / "b", results, dict(summary_of(results), emulated=emu))["markdown"]
                ).read_text(encoding="utf-8").split("## 9. Emulated cluster")[1]
    assert "what the measurement at that step's size differs from the line" in sec2
    assert "training iterations, sgd" not in sec2   # one optimizer: no per-optimizer rows
    emu["results"][1]["switch_allreduce"] = {"frames": 5000, "late_mean_s": 93e-6, "late_over_100us_share": 0.234}
    sec4 = Path(write_report(tmp_path / "d", results, dict(summary_of(results), emulated=emu))["markdown"]
                ).read_text(encoding="utf-8").split("## 9. Emulated cluster")[1]
    assert "| saturated; switch late 93 us on average, 23 % of frames over 100 us |" in sec4
    from validation.emulated import error_summary
    kf = {"model": "resnet20", "batch": 32, "optimizer": "kfac", "measured_s": 0.5, "predicted_s": 0.45,
          "error_pct": -10.0, "error_raw_pct": -2.0}
    its = [dict(emu["results"][0]["iterations"][0], optimizer="sgd", error_raw_pct=3.0), kf]
    emu["summary"].update(iterations=error_summary(its),
                          iterations_unscaled=error_summary([dict(r, error_pct=r["error_raw_pct"]) for r in its]),
                          iterations_by_optimizer={"kfac": error_summary([kf]), "sgd": error_summary(its[:1])})
    sec3 = Path(write_report(tmp_path / "c", results, dict(summary_of(results), emulated=emu))["markdown"]
                ).read_text(encoding="utf-8").split("## 9. Emulated cluster")[1]
    assert "| training iterations | 2 | 7.0 | 7.0 | 10.0 | 2 of 2 |" in sec3
    assert "| training iterations, without the speed factor | 2 | 2.5 | 2.5 | 3.0 | 2 of 2 |" in sec3
    assert "| training iterations, kfac | 1 | 10.0 | 10.0 | 10.0 | 1 of 1 |" in sec3
    assert "| training iterations, sgd | 1 | 4.0 | 4.0 | 4.0 | 1 of 1 |" in sec3
    png = (tmp_path / "plots" / "emulated.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and "](plots/emulated.png)" in md
    assert P.png_emulated({"results": [{"allreduce": [], "iterations": []}]}) is None


def test_headline_gives_the_unscaled_errors_beside_the_speed_normalised_ones(tmp_path):
    from validation.loop import scaled

    results = synthetic_results()
    for r, f in zip(results, (1.1, 1.2, 1.0, 1.3, 0.9, 1.25)):   # raw prediction = normalised / factor
        r["speed_factor"] = f
        r["prediction_raw"] = scaled(r["prediction"], 1 / f)
        r["errors"]["analytic_raw"] = component_errors(r["prediction_raw"], r["measurement"])
    s = summary_of(results)
    raw = [100 * (r["prediction"]["iteration_s"] / f - r["measurement"]["iteration_s"]) / r["measurement"]["iteration_s"]
           for r, f in zip(results, (1.1, 1.2, 1.0, 1.3, 0.9, 1.25))]
    assert s["mape_iteration_raw"] == pytest.approx(np.mean(np.abs(raw)))
    assert s["mape_iteration"] == pytest.approx(np.mean(np.abs(KNOWN_ERRORS)))      # the headline is unchanged
    assert s["speed_factor"] == {"min": 0.9, "median": pytest.approx(1.15), "max": 1.3}
    md = Path(write_report(tmp_path, results, s)["markdown"]).read_text(encoding="utf-8")
    head = md.split("## 2.")[0]
    assert "Host speed" in head and f"MAPE is {s['mape_iteration_raw']:.1f} %" in head and "0.90 to 1.30" in head


def test_scaled_multiplies_every_time_and_nothing_else():
    from validation.loop import scaled

    pred = {"iteration_s": 0.1, "iteration_p99_s": 0.2, "iteration_samples_s": [0.1, 0.3], "jitter_cv": 0.05,
            "breakdown": {"compute_s": 0.08, "sync_wait_s": 0.01, "note": "x"}}
    out = scaled(pred, 1.5)
    assert out["iteration_s"] == pytest.approx(0.15) and out["iteration_p99_s"] == pytest.approx(0.3)
    assert out["iteration_samples_s"] == pytest.approx([0.15, 0.45]) and out["jitter_cv"] == 0.05
    assert out["breakdown"] == {"compute_s": pytest.approx(0.12), "sync_wait_s": pytest.approx(0.015), "note": "x"}
    assert scaled(pred, None) == pred and pred["iteration_s"] == 0.1   # no factor: unchanged; input untouched


def test_predicted_communication_includes_the_wait_for_the_slowest_rank():
    pred = {"iteration_s": 0.12, "breakdown": {"compute_s": 0.1, "comm_total_s": 0.004, "comm_exposed_s": 0.002,
                                               "optimizer_s": 0.003, "sync_wait_s": 0.008}}
    meas = {"iteration_s": 0.12, "breakdown": {"compute_s": 0.1, "comm_total_s": 0.012, "comm_exposed_s": 0.010,
                                               "optimizer_s": 0.003}}
    e = component_errors(pred, meas)
    assert e["comm_total"]["predicted_s"] == pytest.approx(0.012) and e["comm_total"]["error_pct"] == pytest.approx(0)
    assert e["comm_exposed"]["predicted_s"] == pytest.approx(0.010)
    assert e["compute"]["predicted_s"] == pytest.approx(0.1)
