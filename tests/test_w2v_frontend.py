"""Split-graph statistics and the per-stream conv-frame cache (runtime/w2v_frontend.py)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from ostinato.runtime.errors import InputError, ManifestError
from ostinato.runtime.w2v_frontend import FrontEndConfig, FrontEndState, FrontEndStats, RunningStats, window_stats
from ostinato.runtime.wav2vec2 import Wav2Vec2Model

Audio = Callable[..., npt.NDArray[np.float32]]
PATCH = (10, 5)


@pytest.fixture(scope="module")
def model(tiny_w2v_dir: Path) -> Iterator[Wav2Vec2Model]:
    with Wav2Vec2Model.from_dir(tiny_w2v_dir, provider="cpu", intra_op_threads=1) as m:
        yield m


def _cos(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos: npt.NDArray[np.float64] = (a64 * b64).sum(-1) / (np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1))
    return cos


def test_split_reproduces_run_batch(model: Wav2Vec2Model, speech_like: Audio) -> None:
    assert model.has_split and model.patch_geometry == PATCH and model.conv_dim == 32
    x = np.stack([speech_like(1.3, seed=1), 0.01 * speech_like(1.3, seed=2)])  # a quiet row too
    conv = model.frontend(x)
    assert conv.shape == (2, model.num_frames(x.shape[1]), 32)
    whole, split = model.run_batch(x), model.encode(conv)
    for name in model.output_names:
        np.testing.assert_allclose(split[name], whole[name], atol=1e-4, rtol=0)
    # Explicit per-row statistics are the default.
    np.testing.assert_allclose(model.frontend(x, model.frontend_stats(x)), conv, atol=1e-6, rtol=0)


def test_int8_split_matches_its_monolithic_graph(tiny_w2v_int8_dir: Path, speech_like: Audio) -> None:
    with Wav2Vec2Model.from_dir(tiny_w2v_int8_dir, provider="cpu") as m:
        x = speech_like(2.0, seed=4)[None]
        cos = _cos(m.encode(m.frontend(x))["last_hidden_state"], m.run_batch(x)["last_hidden_state"])
        assert m.manifest.validation["split"]["mode"] == "cosine"
    assert cos.min() > 0.98 and cos.mean() > 0.995


def test_statistics_change_the_front_end(model: Wav2Vec2Model, speech_like: Audio) -> None:
    # The statistics really are inputs: other statistics, other frames.
    x = speech_like(1.0, seed=3)[None]
    other = window_stats(np.concatenate([x, 3 * x + 0.1], axis=1), True, PATCH)
    assert np.abs(model.frontend(x, other) - model.frontend(x)).max() > 1e-2


def test_bad_split_inputs_are_input_errors(model: Wav2Vec2Model) -> None:
    x = np.zeros((2, 800), np.float32)
    with pytest.raises(InputError, match="row"):
        model.frontend(x, model.frontend_stats(x[:1]))
    with pytest.raises(InputError, match="conv_features"):
        model.encode(np.zeros((1, 3, 7), np.float32))
    with pytest.raises(InputError, match="not in this model"):
        model.encode(np.zeros((1, 3, 32), np.float32), ["logits"])
    with pytest.raises(ValueError, match="expected \\[B, 1\\]"):
        FrontEndStats(np.zeros((2, 1), np.float32), np.zeros((2,), np.float32))


def test_old_dirs_without_split_still_work(tiny_w2v_dir: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(tiny_w2v_dir, old)
    manifest = json.loads((old / "ostinato.json").read_text())
    for role in ("frontend", "encoder"):
        (old / manifest["files"].pop(role)).unlink()
    manifest["extra"].pop("split")
    (old / "ostinato.json").write_text(json.dumps(manifest))
    with Wav2Vec2Model.from_dir(old, provider="cpu") as m:
        assert not m.has_split
        assert m.run_batch(np.zeros((1, 800), np.float32))["last_hidden_state"].shape == (1, 2, 32)
        with pytest.raises(ManifestError, match="no frontend.onnx") as info:
            m.frontend(np.zeros((1, 800), np.float32))
        assert "re-export" in info.value.hint


def test_running_stats_equal_whole_input_stats(speech_like: Audio) -> None:
    x = speech_like(2.0, seed=6)
    running = RunningStats(True, PATCH)
    cut = 320 * 37
    # Each call passes its own samples plus the patch tail the next call would re-read.
    running.add(x[:cut], x[: cut + 5])
    running.add(x[cut:])
    got, want = running.snapshot(), window_stats(x[None], True, PATCH)
    np.testing.assert_allclose(got.input_mean, want.input_mean, atol=1e-7)
    np.testing.assert_allclose(got.input_std, want.input_std, rtol=1e-6)
    assert got.patch_mean is not None and want.patch_mean is not None
    np.testing.assert_allclose(got.patch_mean, want.patch_mean, atol=1e-7)
    assert got.patch_cov is not None and want.patch_cov is not None
    np.testing.assert_allclose(got.patch_cov, want.patch_cov, rtol=1e-4, atol=1e-8)
    assert running.patches == (len(x) - 10) // 5 + 1
    # Without normalisation and GroupNorm nothing is measured but the sample count.
    plain = RunningStats(False, None)
    plain.add(x)
    snap = plain.snapshot()
    assert (float(snap.input_mean[0, 0]), float(snap.input_std[0, 0]), snap.patch_cov) == (0.0, 1.0, None)


def _windows(n_frames: int, hop: int, width: int) -> list[tuple[int, int]]:
    """(first_frame, frames) of windows like the Windower cuts (start clipped at 0)."""
    return [(max(0, k - (width - hop)), width) for k in range(hop, n_frames - width + 1, hop)]


def test_cache_computes_each_frame_once_and_matches_frozen_recompute(model: Wav2Vec2Model, speech_like: Audio) -> None:
    audio = speech_like(4.0, seed=7)
    state = model.new_frontend_state(FrontEndConfig(freeze_after_s=0.0, cache_frames=64))
    first_stats = None
    windows = [(0, 30), *_windows(180, 10, 30)]
    for first, frames in windows:
        samples = audio[320 * first : 320 * (first + frames - 1) + 400]
        got = state.conv_frames(model.frontend, samples, first)
        if first_stats is None:
            first_stats = state.stats.snapshot()  # frozen after the first window
        np.testing.assert_allclose(got, model.frontend(samples[None], first_stats)[0], atol=1e-5, rtol=0)
    end = max(first + frames for first, frames in windows)
    assert state.frames_computed == state.next_frame == end  # every frame once
    assert state.first_cached == end - 64 and state.uncached_windows == 0
    # A window older than the ring is computed without touching the cache.
    computed = state.frames_computed
    old = audio[: 320 * 29 + 400]
    np.testing.assert_allclose(state.conv_frames(model.frontend, old, 0), model.frontend(old[None], first_stats)[0], atol=1e-5)
    assert state.frames_computed == computed and state.uncached_windows == 1


def test_cache_restarts_after_skipped_frames(model: Wav2Vec2Model, speech_like: Audio) -> None:
    audio = speech_like(3.0, seed=8)
    state = model.new_frontend_state()
    state.conv_frames(model.frontend, audio[: 320 * 19 + 400], 0)
    # Frames 20..39 were dropped upstream: the next window starts at frame 40.
    state.conv_frames(model.frontend, audio[320 * 40 : 320 * 59 + 400], 40)
    assert (state.first_cached, state.next_frame, state.frames_computed) == (40, 60, 40)
    assert state.stats.samples == 40 * 320  # the skipped audio was never counted


def test_frontend_config_validation() -> None:
    with pytest.raises(ValueError, match="freeze_after_s"):
        FrontEndConfig(freeze_after_s=-1.0)
    with pytest.raises(ValueError, match="cache_frames"):
        FrontEndConfig(cache_frames=0)
    state = FrontEndState(FrontEndConfig(), True, None, 4)
    with pytest.raises(ValueError, match="in order"):
        state.store(3, np.zeros((2, 4), np.float32))
