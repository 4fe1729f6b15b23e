"""InferenceStage on the real tiny ONNX model: trimming, batching, ordering, deadlines, faults."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from ostinato.runtime import InferenceError, InputError, Wav2Vec2Model
from ostinato.runtime.w2v_frontend import FrontEndConfig
from ostinato.stream.breaker import BreakerConfig, BreakerState
from ostinato.stream.errors import ConfigError, StageError
from ostinato.stream.frames import StreamEnd, StreamFeatures, Window
from ostinato.stream.health import HealthMonitor
from ostinato.stream.infer import InferenceConfig, InferenceStage
from ostinato.stream.metrics import StreamMetrics
from ostinato.stream.retry import RetryPolicy
from ostinato.stream.windowing import Windower, WindowerConfig, num_frames
from harness import run_stage

CONFIG = WindowerConfig(hop_samples=3200, left_context_samples=1600, right_context_samples=640)


@pytest.fixture
def model(tiny_w2v_dir: Path) -> Iterator[Wav2Vec2Model]:
    m = Wav2Vec2Model.from_dir(tiny_w2v_dir, provider="cpu", intra_op_threads=1)
    yield m
    m.close()


def _windows(audio: npt.NDArray[np.float32], stream_id: str = "s", ready_s: float = 0.0) -> list[Window]:
    w = Windower(CONFIG, stream_id)
    return w.push(audio, now_s=ready_s) + w.flush(now_s=ready_s)


class FaultyModel:
    """Wraps a real model; ``fail(call_index)`` returns an exception to raise or None."""

    def __init__(self, inner: Wav2Vec2Model, fail: Callable[[int], BaseException | None]) -> None:
        self.inner = inner
        self.fail = fail
        self.calls = 0
        self.sample_rate = inner.sample_rate
        self.frame_stride_samples = inner.frame_stride_samples
        self.receptive_field_samples = inner.receptive_field_samples
        self.output_names = inner.output_names
        self.default_output = inner.default_output

    def run_batch(self, windows: npt.NDArray[np.float32], outputs: Sequence[str] | None = None) -> dict[str, Any]:
        self.calls += 1
        error = self.fail(self.calls)
        if error is not None:
            raise error
        return self.inner.run_batch(windows, outputs)


def _frames_of(outputs: list[Any], stream_id: str) -> list[StreamFeatures]:
    return [o for o in outputs if isinstance(o, StreamFeatures) and o.stream_id == stream_id]


async def test_frames_are_trimmed_exactly_and_timestamps_match_offline(
    model: Wav2Vec2Model, speech_like: Callable[..., npt.NDArray[np.float32]]
) -> None:
    audio = speech_like(3.3, seed=1)
    windows = _windows(audio)
    # frontend=None: whole windows through model.onnx (the path of model dirs without the split).
    config = InferenceConfig(batch_size=3, max_lag_s=float("inf"), frontend=None)
    stage = InferenceStage([model], config, metrics=StreamMetrics())
    assert stage.frontend_cache is None
    outputs = await run_stage(stage, [*windows, StreamEnd("s", len(audio))])
    await stage.close()
    feats = _frames_of(outputs, "s")
    assert isinstance(outputs[-1], StreamEnd)
    starts = np.concatenate([f.start_samples for f in feats])
    assert np.array_equal(starts, np.arange(num_frames(len(audio))) * 320)  # identical to offline
    # Each window's features equal the model run on that window alone, trimmed to its core.
    for f, w in zip(feats, windows, strict=True):
        alone = model.run_batch(w.samples[None, :])[model.default_output][0]
        offset = w.core_start_frame - w.start_sample // 320
        np.testing.assert_allclose(f.frames, alone[offset : offset + w.core_frames], rtol=1e-4, atol=1e-4)
    assert stage.stats.batches < len(windows)  # windows were batched


async def test_conv_cache_runs_each_frame_once_with_identical_frame_times(
    model: Wav2Vec2Model, speech_like: Callable[..., npt.NDArray[np.float32]]
) -> None:
    audio = speech_like(4.1, seed=2)
    windows = _windows(audio)
    # kv=None: the transformer runs whole windows (the K/V path is tested in test_kv_cache.py).
    config = InferenceConfig(batch_size=3, max_lag_s=float("inf"), frontend=FrontEndConfig(freeze_after_s=0.0), kv=None)
    cached = InferenceStage([model, model], config)
    plain = InferenceStage([model], dataclasses.replace(config, frontend=None))
    assert cached.frontend_cache is not None and plain.frontend_cache is None
    got = _frames_of(await run_stage(cached, [*windows, StreamEnd("s", len(audio))]), "s")
    want = _frames_of(await run_stage(plain, [*windows, StreamEnd("s", len(audio))]), "s")
    await cached.close()
    await plain.close()
    # Frame count and timestamps exactly as without the cache (and as offline).
    starts = np.concatenate([f.start_samples for f in got])
    assert np.array_equal(starts, np.concatenate([f.start_samples for f in want]))
    assert np.array_equal(starts, np.arange(num_frames(len(audio))) * 320)
    # The front end ran once per frame, not once per window.
    assert cached.frontend_cache.frames_computed == num_frames(len(audio))
    assert cached.frontend_cache.frames_reused > cached.frontend_cache.frames_computed
    assert cached.frontend_cache.streams == 0  # the stream's cache went with its end
    # Where the statistics match (frozen after the first window), the features are those of
    # each whole window through the split graph with those statistics.
    state = model.new_frontend_state(FrontEndConfig(freeze_after_s=0.0))
    state.conv_frames(model.frontend, windows[0].samples, 0)
    stats = state.stats.snapshot()
    for f, w in zip(got, windows, strict=True):
        alone = model.encode(model.frontend(w.samples[None, :], stats))[model.default_output][0]
        offset = w.core_start_frame - w.start_sample // 320
        np.testing.assert_allclose(f.frames, alone[offset : offset + w.core_frames], rtol=0, atol=1e-4)


async def test_model_dirs_without_the_split_run_whole_windows(
    tiny_w2v_dir: Path, tmp_path: Path, speech_like: Callable[..., npt.NDArray[np.float32]]
) -> None:
    old = tmp_path / "old"
    shutil.copytree(tiny_w2v_dir, old)
    manifest = json.loads((old / "ostinato.json").read_text())
    for role in ("frontend", "encoder"):
        (old / manifest["files"].pop(role)).unlink()
    (old / "ostinato.json").write_text(json.dumps(manifest))
    audio = speech_like(2.5, seed=4)
    stage = InferenceStage.from_dir(old, provider="cpu", config=InferenceConfig(max_lag_s=float("inf")))
    assert stage.frontend_cache is None  # the default config asks for the cache; the model cannot
    feats = _frames_of(await run_stage(stage, [*_windows(audio), StreamEnd("s", len(audio))]), "s")
    await stage.close()
    starts = np.concatenate([f.start_samples for f in feats])
    assert np.array_equal(starts, np.arange(num_frames(len(audio))) * 320)


async def test_streams_are_batched_together_and_stay_in_order(
    model: Wav2Vec2Model, speech_like: Callable[..., npt.NDArray[np.float32]]
) -> None:
    per_stream = {f"s{i}": _windows(speech_like(2.0 + 0.3 * i, seed=i), f"s{i}") for i in range(3)}
    interleaved: list[Any] = []
    for k in range(max(len(v) for v in per_stream.values())):
        interleaved += [v[k] for v in per_stream.values() if k < len(v)]
    interleaved += [StreamEnd(s) for s in per_stream]
    metrics = StreamMetrics()
    stage = InferenceStage([model, model], InferenceConfig(batch_size=4, max_wait_ms=20, max_lag_s=float("inf")), metrics=metrics)
    outputs = await run_stage(stage, interleaved)
    await stage.close()
    for sid, windows in per_stream.items():
        assert [f.window_index for f in _frames_of(outputs, sid)] == [w.index for w in windows]
    assert metrics.value("ostinato_inference_batch_size_windows_sum") > metrics.value("ostinato_inference_batch_size_windows_count")
    assert metrics.value("ostinato_pipeline_frames_total") == sum(w.core_frames for v in per_stream.values() for w in v)


async def test_deadline_drops_stale_windows(model: Wav2Vec2Model, sine: Callable[..., npt.NDArray[np.float32]]) -> None:
    audio = sine(440, 2.0)
    stale = _windows(audio, "old", ready_s=time.monotonic() - 10.0)
    fresh = _windows(audio, "new", ready_s=time.monotonic() + 5.0)
    dropped: list[tuple[int, str]] = []
    metrics = StreamMetrics()
    stage = InferenceStage(
        [model], InferenceConfig(max_lag_s=1.0), metrics=metrics, on_drop=lambda w, r: dropped.append((w.index, r))
    )
    outputs = await run_stage(stage, [*stale, *fresh])
    await stage.close()
    assert dropped == [(w.index, "deadline") for w in stale]
    assert len(_frames_of(outputs, "new")) == len(fresh) and not _frames_of(outputs, "old")
    assert metrics.value("ostinato_pipeline_dropped_windows_total", {"reason": "deadline"}) == len(stale)


async def test_transient_failures_are_retried(model: Wav2Vec2Model, sine: Callable[..., npt.NDArray[np.float32]]) -> None:
    faulty = FaultyModel(model, lambda call: InferenceError("CUDA hiccup") if call in (1, 2) else None)
    metrics = StreamMetrics()
    stage = InferenceStage([faulty], InferenceConfig(batch_size=1, retry=RetryPolicy(3, 0.001, 0.01)), metrics=metrics)
    windows = _windows(sine(300, 1.0))
    outputs = await run_stage(stage, windows)
    await stage.close()
    assert len(outputs) == len(windows) and stage.stats.dropped == {}
    assert metrics.value("ostinato_retry_attempts_total", {"operation": "inference"}) == 2
    assert metrics.value("ostinato_stage_errors_total", {"stage": "inference", "error_class": "transient"}) == 2


async def test_breaker_opens_fails_fast_then_recovers(model: Wav2Vec2Model, sine: Callable[..., npt.NDArray[np.float32]]) -> None:
    broken = {"on": True}
    faulty = FaultyModel(model, lambda call: InferenceError("device lost") if broken["on"] else None)
    health = HealthMonitor()
    now = {"t": 1000.0}
    stage = InferenceStage(
        [faulty],
        InferenceConfig(batch_size=1, retry=RetryPolicy(1), breaker=BreakerConfig(failure_threshold=2, cooldown_s=5)),
        metrics=StreamMetrics(), health=health, clock=lambda: now["t"],
    )
    windows = _windows(sine(300, 2.0))
    assert len(windows) >= 5
    outputs = await run_stage(stage, windows[:5])
    assert outputs == [] and stage.breaker.state is BreakerState.OPEN
    assert stage.stats.dropped == {"inference_error": 2, "breaker_open": 3}
    assert faulty.calls == 2  # fail fast: the open breaker never called the model
    assert health.stage("inference").state.value == "failing"
    broken["on"] = False
    now["t"] += 5.0  # cool-down over: the next batch is the half-open probe
    outputs = await run_stage(stage, windows[5:])
    await stage.close()
    assert len(outputs) == len(windows) - 5 and stage.breaker.state is BreakerState.CLOSED


async def test_input_errors_drop_the_batch_and_continue(model: Wav2Vec2Model, sine: Callable[..., npt.NDArray[np.float32]]) -> None:
    faulty = FaultyModel(model, lambda call: InputError("bad window") if call == 1 else None)
    stage = InferenceStage([faulty], InferenceConfig(batch_size=1), metrics=StreamMetrics())
    windows = _windows(sine(300, 1.5))
    outputs = await run_stage(stage, windows)
    await stage.close()
    assert len(outputs) == len(windows) - 1 and stage.stats.dropped == {"input": 1}
    assert faulty.calls == len(windows)  # input errors are not retried


async def test_permanent_errors_fail_the_stage(model: Wav2Vec2Model, sine: Callable[..., npt.NDArray[np.float32]]) -> None:
    faulty = FaultyModel(model, lambda call: KeyError("a bug"))
    stage = InferenceStage([faulty], InferenceConfig(batch_size=1), metrics=StreamMetrics())
    with pytest.raises(ExceptionGroup) as info:
        await run_stage(stage, _windows(sine(300, 1.0)))
    await stage.close()
    assert info.group_contains(StageError)


async def test_from_dir_owns_its_sessions(tiny_w2v_dir: Path) -> None:
    metrics = StreamMetrics()
    stage = InferenceStage.from_dir(tiny_w2v_dir, workers=2, provider="cpu", metrics=metrics)
    assert len({id(m) for m in stage.models}) == 2
    assert metrics.value("ostinato_model_memory_bytes", {"model": tiny_w2v_dir.name}) >= 0
    await stage.close()
    assert all(not m.loaded for m in stage.models)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="output"):
        InferenceStage(stage.models, InferenceConfig(output="nope"))
    with pytest.raises(ConfigError, match="workers"):
        InferenceStage.from_dir(tiny_w2v_dir, workers=0)
