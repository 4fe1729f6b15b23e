"""ostinato plan: calibration on the tiny model and the arithmetic of the predictions (not timing)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ostinato.__main__ import main
from ostinato.cmd_plan import Calibration, PlanConfig, calibrate, predict
from ostinato.stream.errors import ConfigError


def _calibration(wall_1: float = 0.02, wall_4: float = 0.06) -> Calibration:
    return Calibration(window_samples=31680, frames_per_window=98, feature_floats_per_frame=64,
                       wall_s={1: wall_1, 4: wall_4}, cpu_s={1: wall_1 * 0.9, 4: wall_4 * 0.9},
                       process_rss_mb=60.0, runtime_rss_mb=20.0, session_rss_mb=10.0, arena_rss_mb=5.0, provider="CPUExecutionProvider")


def test_predict_arithmetic_is_consistent() -> None:
    cal = _calibration()
    cfg = PlanConfig(streams=6, hop_s=0.5, batch_size=4, workers=2, cores=2, target_utilization=0.8)
    plan = predict(cal, cfg)
    assert plan.batch == 3  # 6 streams over 2 workers, under the batch size
    assert plan.windows_per_s == pytest.approx(12.0)
    # batch 3 interpolates per-window cost between batch 1 (20 ms) and batch 4 (15 ms)
    per_window_wall = 0.02 + (0.015 - 0.02) * (3 - 1) / 3
    assert plan.cpu_cores == pytest.approx(12.0 * per_window_wall * 0.9)
    assert plan.session_utilization == pytest.approx(12.0 * per_window_wall / 2)
    # capacity at the full batch size: min(sessions, cores) bound at 80 %
    assert plan.max_streams == math.floor(min(0.8 * 2 * 0.5 / 0.015, 0.8 * 2 * 0.5 / (0.015 * 0.9)))
    assert plan.sustainable == (6 <= plan.max_streams)
    assert plan.algorithmic_latency_ms == pytest.approx(480 + 5)
    assert plan.latency_ms == pytest.approx(485 + per_window_wall * 3 * 1000)
    per_stream = 4 * (31680 + 8 * 8000 + 8 * 98 * 64) / 2**20
    assert plan.per_stream_mb == pytest.approx(per_stream)
    assert plan.memory_mb == pytest.approx(60 + 20 + 2 * 15 + 6 * per_stream)


def test_more_streams_cost_more_and_a_slow_model_is_not_sustainable() -> None:
    cal = _calibration()
    few, many = predict(cal, PlanConfig(streams=2)), predict(cal, PlanConfig(streams=20))
    assert many.cpu_cores > few.cpu_cores and many.memory_mb > few.memory_mb
    assert few.max_streams == many.max_streams
    slow = predict(_calibration(wall_1=2.0, wall_4=8.0), PlanConfig(streams=1))
    assert slow.max_streams == 0 and not slow.sustainable


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="streams=0"):
        PlanConfig(streams=0)
    with pytest.raises(ConfigError, match="hop_s"):
        PlanConfig(streams=1, hop_s=0)
    assert PlanConfig(streams=1, hop_s=0.5, left_context_s=1.0, right_context_s=0.48).window_samples == 31760  # 1.985 s, as windowed


def test_calibrate_on_tiny_model_and_cli_table(tiny_w2v_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = PlanConfig(streams=2, hop_s=0.5, left_context_s=0.5, right_context_s=0.24, batch_size=2)
    cal = calibrate(tiny_w2v_dir, cfg, "cpu", 1, 0.5)
    assert set(cal.wall_s) == {1, 2} and all(v > 0 for v in cal.wall_s.values())
    assert cal.window_samples == cfg.window_samples and cal.frames_per_window == (cfg.window_samples - 400) // 320 + 1
    assert cal.feature_floats_per_frame > 0 and cal.session_rss_mb >= 0 and cal.runtime_rss_mb >= 0
    rc = main(["plan", "--model", str(tiny_w2v_dir), "--streams", "2", "--calibrate-s", "0.5", "--batch-size", "2"])
    out = capsys.readouterr().out
    assert rc in (0, 1)
    assert "max real-time streams" in out and "per-stream latency" in out and "memory" in out
    assert ("sustainable" in out) and (("NOT sustainable" in out) == (rc == 1))


def test_edge_profile_sets_small_windows_one_worker(tiny_w2v_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["plan", "--model", str(tiny_w2v_dir), "--streams", "1", "--profile", "edge", "--calibrate-s", "0.3"])
    out = capsys.readouterr().out
    assert rc in (0, 1)
    assert "workers 1 x 1 thread(s), profile edge" in out
    assert "1.245 s (19920 samples, 62 frames)" in out and "batches of 1" in out
    assert "(new audio's conv front end + encoder)" in out  # the fixture is a split export: timed as the stage runs it
    # an option given explicitly wins over the profile
    main(["plan", "--model", str(tiny_w2v_dir), "--streams", "1", "--profile", "edge", "--window", "0.25", "--calibrate-s", "0.3"])
    assert "0.985 s (15760 samples" in capsys.readouterr().out
