"""bench/report.py and bench/check.py on small synthetic results folders (real files, real parsing)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


report = _load("report")
check = _load("check")
run_all = _load("run_all")


def _w2v(engine: str, window_s: float, rtf: float, speedup_min: float) -> dict[str, Any]:
    return {"engine": engine, "window_s": window_s, "threads": 2, "p50_ms": rtf * window_s * 1000, "rtf": rtf,
            "speedup_vs_torch": speedup_min, "speedup_vs_torch_min": speedup_min, "cos_min": 0.999}


def _write_results(folder: Path, int8_speedup: float = 1.9, overhead_pct: float = 3.0, with_matcher: bool = True) -> Path:
    folder.mkdir(parents=True)
    w2v = [{"machine": {"cpu": "x"}, "command": "bench_wav2vec2.py --quick"}]
    for window_s, rtf in ((1.0, 0.07), (2.0, 0.06)):
        w2v += [_w2v("torch-eager", window_s, rtf * 1.9, 1.0), _w2v("ort-fp32", window_s, rtf * 1.6, 1.15),
                _w2v("ort-int8", window_s, rtf, int8_speedup)]
    stream = [{"bench": "stream_overhead", "overhead_pct_median": overhead_pct + 1, "overhead_pct_min": overhead_pct}]
    stream += [{"bench": "stream_latency", "streams": n, "latency_p50_ms": 20.0 * n, "latency_p99_ms": 50.0 * n} for n in (1, 2, 4)]
    files = {"bench_wav2vec2": w2v, "bench_stream": stream}
    if with_matcher:
        matcher = [{"run": "matcher_eval", "argv": ["--quick"]}]
        for cond, tp, fp, fn in (("snr20", 9, 1, 1), ("snr5", 6, 2, 4)):
            matcher.append({"stream": f"s-{cond}", "condition": cond, "method": "ostinato-logmel", "tp": tp, "fp": fp, "fn": fn})
        matcher += [{"cost": "ostinato-logmel", "buffer_s": 60.0, "core_fraction": 0.01},
                    {"cost": "selfsim-logmel", "buffer_s": 60.0, "core_fraction": 0.05}]
        files["matcher_eval"] = matcher
    for name, rows in files.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = {"mode": "quick", "command": "run_all.py --quick", "started_utc": "2026-01-01T00:00:00+00:00",
           "machine": {"cpu": "Test CPU", "cores": 2, "versions": {"onnxruntime": "1.0"}, "git_commit": "abc"},
           "loadavg_start": [1.0, 1.0, 1.0], "loadavg_end": [2.0, 1.0, 1.0],
           "scripts": [{"script": n, "ok": True, "rc": 0, "json_lines": len(r), "wall_s": 1.0,
                        "loadavg_before": [1.0], "loadavg_after": [1.5], "command": f"python bench/{n}.py"} for n, r in files.items()]
           + [{"script": "bench_gama", "ok": False, "rc": None, "timed_out": True, "json_lines": 0, "command": "python bench/bench_gama.py"}]}
    (folder / "run.json").write_text(json.dumps(run))
    return folder


def test_f1_by_snr_pools_streams_per_condition() -> None:
    rows = [{"condition": "snr20", "method": "m", "tp": 9, "fp": 1, "fn": 1},
            {"condition": "snr20", "method": "m", "tp": 1, "fp": 0, "fn": 1},
            {"condition": "clean", "method": "m", "tp": 5, "fp": 0, "fn": 0},
            {"calibration": "selfsim", "threshold": 0.6, "f1": 0.5}]
    got = report.f1_by_snr(rows)
    assert list(got) == ["m"]
    (snr, f1), = got["m"]
    assert snr == 20.0
    assert f1 == pytest.approx(2 * 10 / (2 * 10 + 1 + 2))


def test_report_writes_tables_and_plots_present_data(tmp_path: Path) -> None:
    folder = _write_results(tmp_path / "run")
    out_md, plots = tmp_path / "REPORT.md", tmp_path / "plots"
    assert report.main([str(folder), "--report", str(out_md), "--plots", str(plots)]) == 0
    text = out_md.read_text()
    assert "Test CPU" in text and "run_all.py --quick" in text and '"onnxruntime": "1.0"' in text
    assert "| bench_gama | timed out |" in text
    assert "## bench_wav2vec2" in text and "| ort-int8 | 2 |" in text
    # Plots with data are drawn (real PNGs); the one without data is named as skipped.
    for name in ("rtf_vs_window.png", "latency_vs_streams.png", "matcher_f1_vs_snr.png", "matcher_cost_vs_buffer.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    folder2 = _write_results(tmp_path / "run2", with_matcher=False)
    plots2 = tmp_path / "plots2"
    assert report.main([str(folder2), "--report", str(out_md), "--plots", str(plots2)]) == 0
    text = out_md.read_text()
    assert "matcher_f1_vs_snr.png: skipped" in text and "matcher_cost_vs_buffer.png: skipped" in text
    assert not (plots2 / "matcher_f1_vs_snr.png").exists() and (plots2 / "rtf_vs_window.png").exists()


def test_extract_metrics_are_ratios_from_the_run(tmp_path: Path) -> None:
    metrics = check.extract_metrics(check.load_rows(_write_results(tmp_path / "run", int8_speedup=2.0)))
    assert metrics["wav2vec2.ort_int8_speedup_vs_torch"] == pytest.approx(2.0)
    assert metrics["wav2vec2.ort_fp32_speedup_vs_torch"] == pytest.approx(1.15)
    assert metrics["stream.pipeline_overhead_pct_vs_raw_run_batch"] == pytest.approx(3.0)
    assert metrics["matcher.cost_selfsim_over_ostinato"] == pytest.approx(5.0)
    assert metrics["matcher.f1_ostinato_logmel"] == pytest.approx(2 * 15 / (2 * 15 + 3 + 5), abs=1e-4)
    assert "gama.audio_ort_fp32_speedup_vs_torch" not in metrics


def _baseline(path: Path) -> Path:
    path.write_text(json.dumps({"metrics": {
        "wav2vec2.ort_int8_speedup_vs_torch": {"value": 1.9, "direction": "higher", "tolerance_rel": 0.25},
        "stream.pipeline_overhead_pct_vs_raw_run_batch": {"value": 3.0, "direction": "lower", "tolerance_abs": 5.0},
        "gama.audio_ort_fp32_speedup_vs_torch": {"value": 1.5, "direction": "higher", "tolerance_rel": 0.5},
    }}))
    return path


def test_check_passes_within_tolerance_and_names_regressions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _baseline(tmp_path / "baseline.json")
    ok = _write_results(tmp_path / "ok", int8_speedup=1.5, overhead_pct=7.5)  # 1.5 >= 1.425, 7.5 <= 8
    assert check.main([str(ok), "--baseline", str(base)]) == 0
    out = capsys.readouterr().out
    assert "missing" in out and "gama.audio_ort_fp32_speedup_vs_torch" in out
    assert check.main([str(ok), "--baseline", str(base), "--require-all"]) == 1
    capsys.readouterr()
    slow = _write_results(tmp_path / "slow", int8_speedup=1.3, overhead_pct=9.0)
    assert check.main([str(slow), "--baseline", str(base)]) == 1
    err = capsys.readouterr().err
    assert "wav2vec2.ort_int8_speedup_vs_torch" in err and "stream.pipeline_overhead_pct_vs_raw_run_batch" in err


def test_check_rejects_bad_baseline_and_seeds_one(tmp_path: Path) -> None:
    run = _write_results(tmp_path / "run")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"metrics": {"wav2vec2.ort_int8_speedup_vs_torch": {"value": 1, "direction": "up"}}}))
    assert check.main([str(run), "--baseline", str(bad)]) == 2
    seeded = tmp_path / "seeded.json"
    seeded.write_text(json.dumps({"note": "keep me", "metrics": {
        "stream.pipeline_overhead_pct_vs_raw_run_batch": {"value": 99, "direction": "lower", "tolerance_abs": 4},
        "gama.audio_ort_fp32_speedup_vs_torch": {"value": 2.0, "direction": "higher", "tolerance_rel": 0.5}}}))
    assert check.main([str(run), "--write-baseline", str(seeded)]) == 0
    doc = json.loads(seeded.read_text())
    assert doc["note"] == "keep me"
    spec = doc["metrics"]["stream.pipeline_overhead_pct_vs_raw_run_batch"]
    assert spec == {"value": 3.0, "direction": "lower", "tolerance_abs": 4}
    # absent from the run: kept as it was; new metrics get their known direction
    assert doc["metrics"]["gama.audio_ort_fp32_speedup_vs_torch"]["value"] == 2.0
    assert doc["metrics"]["wav2vec2.ort_int8_speedup_vs_torch"]["direction"] == "higher"
    assert check.main([str(run), "--baseline", str(seeded)]) == 0


def test_run_all_captures_json_lines_and_survives_failures(tmp_path: Path) -> None:
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "good.py").write_text(
        "import json, sys\nprint('| a table |')\nprint(json.dumps({'x': 1, 'arg': sys.argv[1]}))\n"
        "print('{not json')\nprint(json.dumps([1, 2]))\nprint(json.dumps({'x': 2}))\n")
    (scripts / "bad.py").write_text("import sys, json\nprint(json.dumps({'partial': True}))\nsys.exit('boom: bad input')\n")
    (scripts / "slow.py").write_text("import json, time\nprint(json.dumps({'before': 1}), flush=True)\ntime.sleep(30)\n")
    out = tmp_path / "out"
    out.mkdir()
    good = run_all.run_script(run_all.Script("good", ("{out}",), (), 30, 30), "quick", out, tmp_path, 30, scripts)
    assert good["ok"] and good["rc"] == 0 and good["json_lines"] == 2
    rows = [json.loads(x) for x in (out / "good.jsonl").read_text().splitlines()]
    assert rows == [{"x": 1, "arg": str(out)}, {"x": 2}]
    assert "| a table |" in (out / "good.log").read_text()
    bad = run_all.run_script(run_all.Script("bad", (), (), 30, 30), "quick", out, tmp_path, 30, scripts)
    assert not bad["ok"] and bad["rc"] == 1 and bad["json_lines"] == 1 and "boom: bad input" in bad["stderr_tail"][-1]
    slow = run_all.run_script(run_all.Script("slow", (), (), 2, 2), "quick", out, tmp_path, 2, scripts)
    assert slow["timed_out"] and not slow["ok"] and slow["wall_s"] < 20
