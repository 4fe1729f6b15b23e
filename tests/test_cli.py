"""The ostinato command line, run as users run it (subprocess) and in-process."""

import json
import subprocess
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest
import soundfile as sf

from ostinato.__main__ import main

DEMO_WAV = Path(__file__).parents[1] / "ostinato" / "data" / "demo.wav"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ostinato", *args], capture_output=True, text=True, timeout=120)


def test_demo_wav_is_small_and_16k() -> None:
    info = sf.info(DEMO_WAV)
    assert info.samplerate == 16000 and info.channels == 1
    assert DEMO_WAV.stat().st_size < 1_000_000


def test_features_npy_and_summary(tiny_w2v_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "f.npy"
    proc = _cli("features", str(DEMO_WAV), "--model", str(tiny_w2v_dir), "--out", str(out), "--provider", "cpu")
    assert proc.returncode == 0, proc.stderr
    frames = np.load(out)
    n = sf.info(DEMO_WAV).frames
    assert frames.shape == ((n - 400) // 320 + 1, 32)
    assert "RANDOM WEIGHTS" in proc.stdout
    assert "real-time factor" in proc.stdout and "CPUExecutionProvider" in proc.stdout


def test_features_msgpack_resamples_any_rate(tiny_w2v_dir: Path, tmp_path: Path, speech_like) -> None:  # type: ignore[no-untyped-def]
    wav = tmp_path / "in44k.wav"
    sf.write(wav, np.stack([speech_like(1.0, sample_rate=44100)] * 2, axis=1), 44100)
    out = tmp_path / "f.msgpack"
    assert main(["features", str(wav), "--model", str(tiny_w2v_dir), "--out", str(out), "--output", "hidden_state_1"]) == 0
    record = msgpack.unpackb(out.read_bytes())
    frames = np.frombuffer(record["frames"], "<f4").reshape(record["shape"])
    assert record["output"] == "hidden_state_1" and record["random_init"] is True
    assert frames.shape[0] == len(record["start_samples"]) == (16000 - 400) // 320 + 1
    assert record["start_samples"][:3] == [0, 320, 640]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["features", "missing.wav", "--model", "{model}", "--out", "x.npy"], "does not exist"),
        (["features", str(DEMO_WAV), "--model", "{model}", "--out", "x.txt"], "expected a .npy or .msgpack"),
        (["features", str(DEMO_WAV), "--model", "/nonexistent/model", "--out", "x.npy"], "does not exist"),
    ],
)
def test_features_errors_are_clear(tiny_w2v_dir: Path, tmp_path: Path, args: list[str], message: str) -> None:
    args = [a.replace("{model}", str(tiny_w2v_dir)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "ostinato", *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert "hint:" in proc.stderr


def test_doctor_reports_models_and_providers(tiny_w2v_dir: Path) -> None:
    proc = _cli("doctor", "--json", "--model", str(tiny_w2v_dir))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert "CPUExecutionProvider" in report["providers"]["loadable"]
    model = next(m for m in report["models"] if m["dir"] == str(tiny_w2v_dir))
    assert model["random_init"] and "RANDOM WEIGHTS" in model["label"] and model["ok"]
    for name in report["providers"]["available"]:
        assert name in report["providers"]["loadable"] or report["providers"]["errors"][name]
    text = _cli("doctor", "--model", str(tiny_w2v_dir))
    assert "RANDOM WEIGHTS" in text.stdout and "--provider auto will use" in text.stdout


def test_doctor_flags_a_broken_model(tmp_path: Path) -> None:
    (tmp_path / "ostinato.json").write_text("{broken")
    proc = _cli("doctor", "--model", str(tmp_path))
    assert proc.returncode == 1
    assert "BROKEN" in proc.stdout and "not valid JSON" in proc.stdout
