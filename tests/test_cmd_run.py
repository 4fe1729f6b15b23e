"""``ostinato run``: sinks, seed config, stdin, errors, and a graceful SIGINT drain (subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from ostinato.__main__ import main
from ostinato.cmd_run import status_line
from ostinato.stream.sinks import read_msgpack_features
from ostinato.stream.windowing import num_frames
from ostinato.stream.wire import encode_pcm


@pytest.fixture
def wav(tmp_path: Path, speech_like) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path / "in.wav"
    sf.write(path, np.stack([speech_like(3.0, sample_rate=22050)] * 2, axis=1), 22050)
    return path


def _run_file(model: Path, wav: Path, *args: str) -> int:
    """``ostinato run`` over ``wav`` with ``model`` on the CPU, quietly, plus ``args``."""
    return main(["run", "--source", str(wav), "--model", str(model), "--provider", "cpu", "--quiet", *args])


def test_run_file_writes_every_sink(tiny_w2v_dir: Path, wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["run", "--source", f"file:{wav}", "--model", str(tiny_w2v_dir), "--provider", "cpu", "--quiet",
                 "--out", str(out / "f.npy"), "--out", str(out / "f.msgpack"), "--out", str(out / "w.jsonl"),
                 "--summary-json", str(out / "summary.json")])
    assert code == 0
    err = capsys.readouterr().err
    assert "RANDOM WEIGHTS" in err and "drops: none" in err and "latency p50" in err
    frames = np.load(out / "f.npy")
    assert frames.shape == (num_frames(48000), 32) and np.isfinite(frames).all()
    packed = list(read_msgpack_features(out / "f.msgpack"))
    assert np.array_equal(np.concatenate([f.to_array() for f in packed]), frames)
    lines = [json.loads(x) for x in (out / "w.jsonl").read_text().splitlines()]
    assert sum(x.get("frames", 0) for x in lines) == len(frames) and lines[-1]["end"] is True
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == len(frames) and summary["streams"][0]["frames_expected"] == len(frames)


def test_seed_configuration_runs(tiny_w2v_dir: Path, wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "seed.npy"
    code = _run_file(tiny_w2v_dir, wav, "--chunk-samples", "1600", "--overlap-samples", "400", "--max-queue", "10",
                     "--batch-size", "4", "--streams", "2", "--out", str(out))
    assert code == 0
    assert "hop 1600 + left 320 + right 0 + 80 = 2000 samples" in capsys.readouterr().err
    files = sorted(tmp_path.glob("seed.*.npy"))
    assert len(files) == 2 and all(np.load(f).shape == (num_frames(48000), 32) for f in files)


def test_run_stdin_pipe(tiny_w2v_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sine) -> None:  # type: ignore[no-untyped-def]
    read_fd, write_fd = os.pipe()
    data = encode_pcm(sine(300, 1.0), "s16le")

    def writer() -> None:
        with os.fdopen(write_fd, "wb") as w:
            w.write(data)

    thread = threading.Thread(target=writer)
    thread.start()
    with os.fdopen(read_fd, "rb") as r:
        monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=r))
        out = tmp_path / "stdin.npy"
        assert main(["run", "--source", "stdin:16000:s16le", "--model", str(tiny_w2v_dir), "--provider", "cpu", "--quiet", "--out", str(out)]) == 0
    thread.join()
    assert np.load(out).shape[0] == num_frames(16000)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "x.txt"], "expected a .npy, .msgpack, .jsonl"),
        (["--hop-s", "0.5", "--chunk-samples", "1600"], "not both"),
        (["--overlap-samples", "500"], "overlap_samples=500"),
        (["--batch-size", "0"], "batch_size"),
    ],
)
def test_bad_options_are_user_errors(tiny_w2v_dir: Path, wav: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = _run_file(tiny_w2v_dir, wav, *extra)
    assert code == 2
    assert message in capsys.readouterr().err


def test_missing_file_gives_hint(tiny_w2v_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--source", "file:/nope.wav", "--model", str(tiny_w2v_dir)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "hint:" in err


def test_sigint_drains_and_prints_summary(tiny_w2v_dir: Path, wav: Path, tmp_path: Path) -> None:
    out = tmp_path / "live.npy"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ostinato", "run", "--source", f"file:{wav}", "--realtime", "--loop", "--model",
         str(tiny_w2v_dir), "--provider", "cpu", "--out", str(out), "--summary-json", str(tmp_path / "s.json")],
        stderr=subprocess.PIPE, text=True,
    )
    time.sleep(6.0)  # interpreter start, model load, then a few windows of real-time audio
    assert proc.poll() is None, "the looping real-time run must still be going"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped on request, drained" in err
    summary = json.loads((tmp_path / "s.json").read_text())
    (stream,) = summary["streams"]
    assert stream["frames_out"] == stream["frames_expected"] == np.load(out).shape[0] > 0


def test_status_line() -> None:
    status = SimpleNamespace(level_dbfs=-20.0, audio_s=12.3, inference_rtf=0.081, lag_s=0.12, dropped=3, frames=615,
                             health="degraded", reasons=("lag 1.20 s > 1 s",))
    line = status_line(status, "matches 2")
    assert line.startswith("[########----]  -20 dBFS")
    assert "RTF 0.081" in line and "drops 3" in line and "degraded (lag 1.20 s > 1 s)" in line and line.endswith("matches 2")
    silent = SimpleNamespace(**{**vars(status), "level_dbfs": float("-inf"), "health": "ok"})
    assert "-- dBFS" in status_line(silent)


def test_edge_profile_sets_geometry_and_explicit_options_win(tiny_w2v_dir: Path, wav: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    summary = tmp_path / "s.json"
    assert _run_file(tiny_w2v_dir, wav, "--profile", "edge", "--summary-json", str(summary)) == 0
    assert "hop 8000 + left 8000 + right 3840 + 80 = 19920 samples" in capsys.readouterr().err
    assert json.loads(summary.read_text())["mean_batch_size"] == 1.0  # edge: no batching
    assert _run_file(tiny_w2v_dir, wav, "--profile", "edge", "--hop-s", "0.24", "--right-context-s", "0") == 0
    assert "hop 3840 + left 8000 + right 0 + 80 = 11920 samples" in capsys.readouterr().err
    # seed-style geometry given explicitly wins too (the profile's seconds must not collide with it)
    assert _run_file(tiny_w2v_dir, wav, "--profile", "edge", "--chunk-samples", "1600", "--overlap-samples", "400") == 0
    assert "hop 1600 + left 320 + right 0 + 80 = 2000 samples" in capsys.readouterr().err


def test_edge_profile_model_settings_are_a_valid_served_model(tiny_w2v_dir: Path) -> None:
    from ostinato.cmd_serve import _model_settings
    from ostinato.models import ModelConfig
    from ostinato.profiles import PROFILES

    config = ModelConfig.from_json({"name": "m", "model_dir": str(tiny_w2v_dir), **_model_settings(PROFILES["edge"])})
    w = config.streaming.windower_config()
    assert (w.hop_samples, w.left_context_samples, w.right_context_samples) == (8000, 8000, 0)
    assert config.intra_op_threads == 1 and config.streaming.batch_size == 1 and config.streaming.max_queue == 4
    assert _model_settings(PROFILES["default"]) == {}  # the default profile keeps the server's own defaults


def test_low_latency_profile_runs_no_right_context_on_the_kv_path(tiny_w2v_dir: Path, wav: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from ostinato.cmd_serve import _model_settings
    from ostinato.models import ModelConfig
    from ostinato.profiles import PROFILES

    out, ref = tmp_path / "ll.npy", tmp_path / "ref.npy"
    assert _run_file(tiny_w2v_dir, wav, "--profile", "low-latency", "--out", str(out)) == 0
    err = capsys.readouterr().err
    assert "hop 8000 + left 32000 + right 0 + 80 = 40080 samples (added latency 5 ms)" in err
    assert "cached left-context K/V" in err
    assert _run_file(tiny_w2v_dir, wav, "--out", str(ref)) == 0
    got, want = np.load(out), np.load(ref)
    assert got.shape == want.shape  # same frames, same times: only the context differs
    config = ModelConfig.from_json({"name": "m", "model_dir": str(tiny_w2v_dir), **_model_settings(PROFILES["low-latency"])})
    w = config.streaming.windower_config()
    assert (w.hop_samples, w.left_context_samples, w.right_context_samples) == (8000, 32000, 0)


def test_frontend_cache_is_the_default_for_split_exports_and_can_be_turned_off(
        tiny_w2v_dir: Path, wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cached, whole = tmp_path / "cached.npy", tmp_path / "whole.npy"
    assert _run_file(tiny_w2v_dir, wav, "--out", str(cached)) == 0
    assert "compute  conv front end cached per stream, running statistics" in capsys.readouterr().err
    assert _run_file(tiny_w2v_dir, wav, "--no-frontend-cache", "--out", str(whole)) == 0
    assert "compute  whole windows" in capsys.readouterr().err
    a, b = np.load(cached), np.load(whole)
    assert a.shape == b.shape and not np.allclose(a, b, atol=1e-4)  # running vs per-window statistics


def test_kv_cache_is_the_default_for_cached_encoders_and_can_be_turned_off(
        tiny_w2v_dir: Path, wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kv, plain = tmp_path / "kv.npy", tmp_path / "plain.npy"
    assert _run_file(tiny_w2v_dir, wav, "--out", str(kv)) == 0
    assert "cached left-context K/V" in capsys.readouterr().err
    assert _run_file(tiny_w2v_dir, wav, "--no-kv-cache", "--out", str(plain)) == 0
    err = capsys.readouterr().err
    assert "conv front end cached per stream" in err and "K/V" not in err
    assert np.load(kv).shape == np.load(plain).shape  # same frames either way
