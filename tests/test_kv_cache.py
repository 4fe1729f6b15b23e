"""Left-context K/V cache: the cached-encoder export, the per-stream ring, the stream gate, the stage path."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

from ostinato.runtime import InferenceError, Wav2Vec2Model
from ostinato.runtime.manifest import Manifest
from ostinato.runtime.w2v_frontend import FrontEndConfig
from ostinato.runtime.w2v_kv import KVConfig, KVLayout, KVState, cached_feeds
from ostinato.stream.frames import StreamEnd, StreamFeatures, Window
from ostinato.stream.infer import InferenceConfig, InferenceStage
from ostinato.stream.frontend_cache import ConvFrameCache
from ostinato.stream.kv_cache import KVCache, StreamGate
from ostinato.stream.metrics import StreamMetrics
from ostinato.stream.retry import RetryPolicy
from ostinato.stream.windowing import Windower, WindowerConfig, num_frames
from harness import run_stage

# hop 10 frames, left context 5, right context 2 (the tiny model's positional conv reads 8 back)
CONFIG = WindowerConfig(hop_samples=3200, left_context_samples=1600, right_context_samples=640)
Audio = Callable[..., npt.NDArray[np.float32]]


@pytest.fixture
def model(tiny_w2v_dir: Path) -> Iterator[Wav2Vec2Model]:
    m = Wav2Vec2Model.from_dir(tiny_w2v_dir, provider="cpu", intra_op_threads=1)
    yield m
    m.close()


def _windows(audio: npt.NDArray[np.float32], stream_id: str = "s") -> list[Window]:
    w = Windower(CONFIG, stream_id)
    return w.push(audio) + w.flush()


def _features(outputs: list[Any], stream_id: str) -> list[StreamFeatures]:
    return [o for o in outputs if isinstance(o, StreamFeatures) and o.stream_id == stream_id]


def _config(**kwargs: Any) -> InferenceConfig:
    defaults: dict[str, Any] = {"batch_size": 4, "max_lag_s": float("inf"), "frontend": FrontEndConfig(freeze_after_s=0.0)}
    return InferenceConfig(**(defaults | kwargs))


# --- export ---------------------------------------------------------------------------------


def test_export_writes_and_validates_the_cached_encoder(tiny_w2v_dir: Path) -> None:
    m = Manifest.read(tiny_w2v_dir)
    assert m.files["encoder_cached"] == "encoder_cached.onnx"
    info = m.extra["cached_encoder"]
    assert (info["context_frames"], info["num_layers"], info["num_heads"], info["head_dim"]) == (8, 2, 2, 16)
    figures = m.validation["cached_encoder"]
    # Empty past: the graph equals the whole model (PyTorch references), like encoder.onnx.
    assert figures["mode"] == "exact" and figures["max_abs_diff"] <= 1e-4 and len(figures["cases"]) >= 6
    # Chunked with a carried K/V past: ONNX Runtime equals the PyTorch reference of the cached computation.
    assert figures["chunked_vs_pytorch"]["max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(str(tiny_w2v_dir / "encoder_cached.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == info["inputs"]
    assert [o.name for o in session.get_outputs()] == [o.name for o in m.outputs] + ["present_key_values"]


def test_int8_export_has_a_quantized_cached_encoder(tiny_w2v_int8_dir: Path) -> None:
    m = Manifest.read(tiny_w2v_int8_dir)
    figures = m.validation["cached_encoder"]
    assert figures["mode"] == "cosine" and figures["min_cosine"] >= figures["min_cosine_required"]
    assert figures["chunked_vs_pytorch"]["mode"] == "cosine"
    import onnx

    nodes = onnx.load(str(tiny_w2v_int8_dir / "encoder_cached.onnx")).graph.node
    assert {n.op_type for n in nodes} & {"MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul"}  # quantized
    # The recipe's trace-time rewrites apply as for encoder.onnx (the positional convolution as DFT
    # MatMuls that stay fp32, when the recipe asks for it).
    encoder = onnx.load(str(tiny_w2v_int8_dir / "encoder.onnx")).graph.node
    spectral = [n for n in nodes if "/spectral_fp32/" in n.name]
    assert bool(spectral) == any("/spectral_fp32/" in n.name for n in encoder)
    assert not any(n.op_type == "MatMulInteger" for n in spectral)


def test_stable_layer_norm_models_are_built_too() -> None:
    torch = pytest.importorskip("torch")
    from transformers import Wav2Vec2Config
    from transformers import Wav2Vec2Model as HFModel

    from ostinato.export import specs
    from ostinato.export._w2v_cached import CachedEncoder, empty_feeds
    from ostinato.export._w2v_source import load_source, onnx_graph_module
    from ostinato.export._w2v_split import _encoder_only

    source = load_source("random:tiny", "features", 0)
    kwargs = specs.random_config_kwargs("random:tiny") | {"do_stable_layer_norm": True, "feat_extract_norm": "layer"}
    source.hf_config = Wav2Vec2Config(**kwargs)
    torch.manual_seed(0)
    source.model = HFModel(source.hf_config).eval()
    module = onnx_graph_module(source, (0, 1, 2))
    conv = torch.randn(2, 30, 32)
    with torch.no_grad(), _encoder_only(source.model):
        want = module(conv)
        got = CachedEncoder(source, module).eval()(*(torch.from_numpy(v) for v in empty_feeds(source, conv.numpy()).values()))
    for a, b in zip(got, want, strict=False):  # got has present_key_values last
        assert float((a - b).abs().max()) < 1e-5


# --- runtime --------------------------------------------------------------------------------


def test_empty_past_equals_the_encoder(model: Wav2Vec2Model, speech_like: Audio) -> None:
    x = speech_like(1.3, seed=3)[None]
    conv = model.frontend(x)
    layout = model.kv_layout
    p = layout.context_frames
    feeds = cached_feeds(
        layout, [np.concatenate([np.zeros((p, conv.shape[2]), np.float32), conv[0]])], [np.zeros(p, np.float32)], [()],
    )
    got = model.encode_cached(feeds)
    want = model.encode(conv)
    for name in model.output_names:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5, rtol=0)
    assert got["present_key_values"].shape == (2, 2, 1, 2, conv.shape[1], 16)


def _past(state: KVState, first: int, end: int) -> np.ndarray:
    return np.concatenate(state.past_parts(first, end), axis=3)


def test_kv_ring_is_bounded_and_ordered() -> None:
    layout = KVLayout(num_layers=2, num_heads=2, head_dim=4, context_frames=8)
    state = KVState(layout, KVConfig(max_past_frames=16))
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((2, 2, 2, 100, 4)).astype(np.float32)
    for start in range(0, 100, 10):
        state.store(start, frames[:, :, :, start : start + 10], want=40)  # asks for more than the bound
        assert state.capacity <= 16 and state.nbytes == state.capacity * layout.frame_bytes  # bounded
    assert state.capacity == 16 and (state.first_frame, state.next_frame) == (84, 100)
    np.testing.assert_array_equal(_past(state, 90, 100), frames[:, :, :, 90:100])
    assert state.has(84, 100) and not state.has(80, 100) and not state.has(90, 99)
    with pytest.raises(ValueError, match="not cached"):
        _past(state, 80, 100)
    with pytest.raises(ValueError, match="in order"):
        state.store(120, frames[:, :, :, :10], want=16)
    state.restart(120)
    assert state.restarts == 1 and not state.has(90, 100) and state.has(120, 120)
    with pytest.raises(ValueError, match="max_past_frames"):
        KVConfig(max_past_frames=0)


def test_ring_grows_keeping_its_frames() -> None:
    layout = KVLayout(num_layers=1, num_heads=1, head_dim=2, context_frames=4)
    state = KVState(layout, KVConfig())
    frames = np.arange(80, dtype=np.float32).reshape(1, 2, 1, 20, 2)
    state.store(0, frames[:, :, :, :5], want=5)
    state.store(5, frames[:, :, :, 5:12], want=12)
    assert state.capacity == 12
    np.testing.assert_array_equal(_past(state, 0, 12), frames[:, :, :, :12])


def test_ring_views_match_the_stored_frames_under_any_chunking() -> None:
    layout = KVLayout(num_layers=1, num_heads=1, head_dim=2, context_frames=4)
    state = KVState(layout, KVConfig(max_past_frames=20))
    rng = np.random.default_rng(3)
    frames = rng.standard_normal((1, 2, 1, 2000, 2)).astype(np.float32)
    pos = kept = 0
    while pos < 1900:
        n, want = int(rng.integers(1, 30)), int(rng.integers(5, 26))
        state.store(pos, frames[:, :, :, pos : pos + n], want=want)
        pos += n
        kept = min(kept + n, state.capacity)
        assert (state.first_frame, state.next_frame) == (pos - kept, pos)
        np.testing.assert_array_equal(_past(state, pos - kept, pos), frames[:, :, :, pos - kept : pos])
    assert state.capacity == 20 and state.nbytes == 20 * layout.frame_bytes


def test_wrapped_past_is_fed_in_order_without_a_gather() -> None:
    layout = KVLayout(num_layers=1, num_heads=1, head_dim=2, context_frames=2)
    state = KVState(layout, KVConfig(max_past_frames=8))
    frames = np.arange(2 * 2 * 30, dtype=np.float32).reshape(1, 2, 1, 30, 2)
    for start in range(0, 30, 5):
        state.store(start, frames[:, :, :, start : start + 5], want=8)
    parts = state.past_parts(22, 30)
    assert len(parts) == 2 and all(q.base is not None for q in parts)  # the ring wrapped: two views
    conv, ctx = [np.zeros((3, 4), np.float32)] * 2, [np.ones(2, np.float32)] * 2
    feeds = cached_feeds(layout, conv, ctx, [parts, state.past_parts(27, 30)])
    np.testing.assert_array_equal(feeds["past_key_values"][:, :, 0], frames[:, :, :, 22:30])
    np.testing.assert_array_equal(feeds["past_key_values"][:, :, 1, :, 5:], frames[:, :, :, 27:30])
    np.testing.assert_array_equal(feeds["past_mask"], [[1.0] * 8, [0.0] * 5 + [1.0] * 3])
    assert state.past_parts(30, 30) == ()


# --- the gate -------------------------------------------------------------------------------


def _w(stream: str, index: int, samples: int = 1000) -> Window:
    return Window(stream, index, np.zeros(samples, np.float32), 0, 0, 1)


def test_gate_holds_a_streams_later_windows_and_its_end() -> None:
    gate = StreamGate(max_held=8)
    a0, a1, b0 = _w("a", 0), _w("a", 1), _w("b", 0)
    assert gate.admit(a0, set())
    assert not gate.admit(a1, {"a"})  # same stream as the batch being built
    assert gate.admit(b0, {"a"})
    gate.start([a0, b0])
    end_a = StreamEnd("a", 10)
    assert not gate.admit(end_a, set())  # behind a held window of its stream
    assert gate.take(set()) is None  # a is busy, its end waits behind a1
    assert gate.admit(StreamEnd("b", 10), set())  # b holds nothing: its end may go (b0 is in flight before it)
    gate.finish([a0])
    assert gate.freed.is_set()
    assert gate.take(set()) is a1
    assert gate.take(set()) is end_a
    assert gate.take(set()) is None and gate.in_flight == {"b"}
    gate.finish([b0])
    assert gate.idle and gate.max_held_seen == 2


# --- the stage ------------------------------------------------------------------------------


class _Recording(KVCache):
    """The real K/V cache, recording how many windows of each stream run at once."""

    def __init__(self, config: KVConfig, stride: int) -> None:
        super().__init__(config, stride)
        self.running: dict[str, int] = {}
        self.most_at_once = 0
        self.guard = threading.Lock()

    def encode(self, model: Any, batch: Sequence[Window], *args: Any) -> Any:
        with self.guard:
            for w in batch:
                self.running[w.stream_id] = self.running.get(w.stream_id, 0) + 1
                self.most_at_once = max(self.most_at_once, self.running[w.stream_id])
        try:
            return super().encode(model, batch, *args)
        finally:
            with self.guard:
                for w in batch:
                    self.running[w.stream_id] -= 1


def _expected_new_frames(windows: Sequence[Window]) -> int:
    """Hop + right context per window: frames from the core's start to the window's end —
    except for a stream's windows that start at sample 0 behind one that did, whose cores that
    run already covered (same samples: they run nothing)."""
    total, shared = 0, {}
    for w in windows:
        n = num_frames(w.num_samples) - (w.core_start_frame - w.start_sample // 320)
        prior = shared.get(w.stream_id)
        if w.start_sample == 0 and prior is not None and prior[0] == w.num_samples \
                and prior[1] <= w.core_start_frame and w.core_start_frame + w.core_frames <= prior[2]:
            continue
        total += n
        if w.start_sample == 0:
            shared[w.stream_id] = (w.num_samples, w.core_start_frame, w.core_start_frame + n)
        else:
            shared.pop(w.stream_id, None)
    return total


async def test_cached_path_runs_each_frame_once_per_hop_with_offline_frame_times(model: Wav2Vec2Model, speech_like: Audio) -> None:
    audios = {f"s{i}": speech_like(4.1 + 0.3 * i, seed=i) for i in range(3)}
    windows = {s: _windows(a, s) for s, a in audios.items()}
    stage = InferenceStage([model, model], _config())
    assert stage.kv_cache is not None and stage.gate is not None
    geometry = WindowerConfig()
    assert stage.windower_config(geometry) == dataclasses.replace(geometry, short_start=True)  # K/V: short start
    recording = _Recording(stage.kv_cache.config, 320)
    stage.kv_cache = recording
    items: list[Any] = [w for group in zip(*windows.values(), strict=False) for w in group]
    items += [w for ws in windows.values() for w in ws[min(map(len, windows.values())) :]]
    items += [StreamEnd(s, len(a)) for s, a in audios.items()]
    outputs = await run_stage(stage, items)
    await stage.close()
    for s, audio in audios.items():
        got = _features(outputs, s)
        starts = np.concatenate([f.start_samples for f in got])
        assert np.array_equal(starts, np.arange(num_frames(len(audio))) * 320)  # identical to offline
        assert isinstance(outputs[-1], StreamEnd) or any(isinstance(o, StreamEnd) and o.stream_id == s for o in outputs)
    # The transformer ran hop + right context per window, never the left context again.
    everything = [w for ws in windows.values() for w in ws]
    assert stage.stats.transformer_frames == _expected_new_frames(everything)
    assert stage.stats.transformer_frames < sum(num_frames(w.num_samples) for w in everything)
    assert recording.frames_encoded == stage.stats.transformer_frames
    assert recording.windows_short == 0 and recording.restarts == 0
    assert recording.most_at_once == 1  # at most one window per stream in flight
    assert stage.stats.batches < len(everything)  # still batched across streams
    assert recording.streams == 0  # the rings went with the streams' ends
    # A streaming process holds the weights once: encoder.onnx and model.onnx were never loaded.
    assert model.loaded_graphs == ("encoder_cached", "frontend")


async def test_whole_window_path_runs_the_left_context_again(model: Wav2Vec2Model, speech_like: Audio) -> None:
    windows = _windows(speech_like(3.0, seed=5))
    stage = InferenceStage([model], _config(kv=None))
    assert stage.kv_cache is None and stage.gate is None
    assert stage.windower_config(WindowerConfig()) == WindowerConfig()  # fixed shapes off the K/V path
    await run_stage(stage, [*windows, StreamEnd("s", 48_000)])
    await stage.close()
    assert stage.stats.transformer_frames == sum(num_frames(w.num_samples) for w in windows)
    assert stage.stats.transformer_frames > _expected_new_frames(windows)


async def test_cached_features_stay_close_to_whole_windows(model: Wav2Vec2Model, speech_like: Audio) -> None:
    audio = speech_like(4.0, seed=7)
    windows = _windows(audio)
    got, want = [], []
    for config, out in ((_config(), got), (_config(kv=None), want)):
        stage = InferenceStage([model], config)
        out += _features(await run_stage(stage, [*windows, StreamEnd("s", len(audio))]), "s")
        await stage.close()
    a = np.concatenate([f.frames for f in got])
    b = np.concatenate([f.frames for f in want])
    # The first window is computed identically (no past yet); later ones attend to cached K/V.
    np.testing.assert_allclose(a[: windows[0].core_frames], b[: windows[0].core_frames], atol=1e-4, rtol=0)
    cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
    assert np.isfinite(a).all() and float(cos.mean()) > 0.5


async def test_a_dropped_window_restarts_the_past_and_is_counted(model: Wav2Vec2Model, speech_like: Audio) -> None:
    audio = speech_like(5.0, seed=4)
    windows = _windows(audio)
    now = 1000.0
    stale = dataclasses.replace(windows[3], received_s=1.0)  # arrived 999 s ago: past the deadline
    items = [*windows[:3], stale, *windows[4:], StreamEnd("s", len(audio))]
    dropped: list[tuple[int, str]] = []
    config = _config(max_lag_s=5.0)
    metrics = StreamMetrics()
    stage = InferenceStage([model], config, clock=lambda: now, on_drop=lambda w, r: dropped.append((w.index, r)),
                           metrics=metrics)
    outputs = await run_stage(stage, items)
    await stage.close()
    assert dropped == [(3, "deadline")] and stage.stats.dropped["deadline"] == 1
    # ... and so do the metrics: one restart, one short window, the rings' memory, nothing held at the end
    assert metrics.kv_restarts._value.get() == 1 and metrics.kv_short_windows._value.get() == 1
    assert metrics.cache_bytes.labels("kv")._value.get() > 0 and metrics.held_windows._value.get() == 0
    kv = stage.kv_cache
    # The next window ran with no past (the stream's K/V restarted at its core), counted.
    assert kv is not None and kv.restarts == 1 and kv.windows_short == 1
    got = _features(outputs, "s")
    starts = np.concatenate([f.start_samples for f in got])
    lost = np.arange(windows[3].core_start_frame, windows[3].core_start_frame + windows[3].core_frames) * 320
    assert np.array_equal(starts, np.setdiff1d(np.arange(num_frames(len(audio))) * 320, lost))
    # No window recomputed its left context: hop + right context each, also after the gap.
    assert stage.stats.transformer_frames == _expected_new_frames([w for w in windows if w.index != 3])
    assert all(np.isfinite(f.frames).all() for f in got)
    assert stage.prefetch is not None and stage.prefetch.pending == 0  # the dropped window's front end released


class _FailingCached:
    """A real model whose cached encoder raises on the calls ``fail`` names (everything else delegates)."""

    def __init__(self, inner: Wav2Vec2Model, fail: set[int]) -> None:
        self.inner, self.fail, self.calls = inner, fail, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def encode_cached(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls in self.fail:
            raise InferenceError("injected failure", hint="test")
        return self.inner.encode_cached(*args, **kwargs)


async def test_a_failed_window_does_not_corrupt_the_next(model: Wav2Vec2Model, speech_like: Audio) -> None:
    audio = speech_like(5.0, seed=8)
    windows = _windows(audio)
    failing = _FailingCached(model, fail={4, 5, 6})  # window 3 and its two retries
    config = _config(batch_size=1, retry=RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.001))
    stage = InferenceStage([failing], config)  # type: ignore[list-item]
    outputs = await run_stage(stage, [*windows, StreamEnd("s", len(audio))])
    await stage.close()
    assert stage.stats.dropped["inference_error"] == 1
    kv = stage.kv_cache
    assert kv is not None and kv.restarts == 1 and kv.windows_short == 1
    got = _features(outputs, "s")
    assert [f.window_index for f in got] == [w.index for w in windows if w.index != 3]
    # Window 4 ran with no past, hop + right context like the others (nothing half-stored by window 3).
    assert stage.stats.transformer_frames == _expected_new_frames([w for w in windows if w.index != 3])
    assert all(np.isfinite(f.frames).all() for f in got)
    assert stage.prefetch is not None and stage.prefetch.pending == 0


async def test_a_gap_shortens_the_past_until_it_is_refilled(model: Wav2Vec2Model, speech_like: Audio) -> None:
    # Left context of two hops: after a dropped window the next one attends to no past, the one
    # after to one hop of it, then the past is whole again.
    config = WindowerConfig(hop_samples=3200, left_context_samples=6400, right_context_samples=640)
    audio = speech_like(6.0, seed=11)
    w = Windower(config, "s")
    windows = w.push(audio) + w.flush()
    kept = [x for x in windows if x.index != 5]
    stage = InferenceStage([model], _config())
    outputs = await run_stage(stage, [*kept, StreamEnd("s", len(audio))])
    await stage.close()
    kv = stage.kv_cache
    assert kv is not None and kv.restarts == 1 and kv.windows_short == 2
    assert [f.window_index for f in _features(outputs, "s")] == [x.index for x in kept]
    assert stage.stats.transformer_frames == _expected_new_frames(kept)


async def test_a_stream_never_waits_on_another(model: Wav2Vec2Model, speech_like: Audio) -> None:
    # Stream a floods the inbox; b's windows still go in the same batches (held ones wait for a only).
    wa, wb = _windows(speech_like(6.0, seed=1), "a"), _windows(speech_like(2.0, seed=2), "b")
    stage = InferenceStage([model, model], _config(max_held_windows=2))
    outputs = await run_stage(stage, [*wa, *wb, StreamEnd("a", 96_000), StreamEnd("b", 32_000)], inbox_capacity=2)
    await stage.close()
    assert stage.gate is not None and stage.gate.max_held_seen <= 2 and stage.gate.idle
    assert len(_features(outputs, "a")) == len(wa) and len(_features(outputs, "b")) == len(wb)
    ends = [o.stream_id for o in outputs if isinstance(o, StreamEnd)]
    assert sorted(ends) == ["a", "b"]
    last_a = max(i for i, o in enumerate(outputs) if isinstance(o, StreamFeatures) and o.stream_id == "a")
    assert outputs.index(next(o for o in outputs if isinstance(o, StreamEnd) and o.stream_id == "a")) > last_a


async def test_batches_spread_the_streams_over_the_workers(model: Wav2Vec2Model, speech_like: Audio) -> None:
    # A stream waits for its previous window, so one batch holding every stream would idle the
    # other worker: once the streams are known, a batch takes at most streams / workers of them.
    per_stream = [_windows(speech_like(4.0, seed=20 + i), f"s{i}") for i in range(4)]
    items: list[Any] = [w for group in zip(*per_stream, strict=True) for w in group]
    items += [StreamEnd(f"s{i}", 64_000) for i in range(4)]
    stage = InferenceStage([model, model], _config(batch_size=8))
    outputs = await run_stage(stage, items, inbox_capacity=16)
    await stage.close()
    got = [o for o in outputs if isinstance(o, StreamFeatures)]
    assert len(got) == sum(len(g) for g in per_stream)
    later = [f.timing.batch_size for f in got if f.window_index > 0]  # after each stream's first window
    assert later and max(later) <= 2
    # every front end submitted ahead of the gate was consumed: none left behind
    assert stage.prefetch is not None and stage.prefetch.pending == 0


def test_config_validation() -> None:
    from ostinato.stream.errors import ConfigError

    with pytest.raises(ConfigError, match="max_held_windows"):
        InferenceConfig(max_held_windows=0)


async def test_exports_without_the_cached_encoder_stream_as_before(tiny_w2v_dir: Path, tmp_path: Path, speech_like: Audio) -> None:
    import json
    import shutil

    old = tmp_path / "split-only"
    shutil.copytree(tiny_w2v_dir, old)
    manifest = json.loads((old / "ostinato.json").read_text())
    (old / manifest["files"].pop("encoder_cached")).unlink()
    manifest["extra"].pop("cached_encoder")
    (old / "ostinato.json").write_text(json.dumps(manifest))
    audio = speech_like(3.0, seed=9)
    with Wav2Vec2Model.from_dir(old, provider="cpu") as m:
        assert m.has_split and not m.has_cached_encoder and m.loaded_graphs == ("encoder", "frontend")
        stage = InferenceStage([m], _config())
        assert stage.frontend_cache is not None and stage.kv_cache is None and stage.gate is None
        outputs = await run_stage(stage, [*_windows(audio), StreamEnd("s", len(audio))])
        await stage.close()
    starts = np.concatenate([f.start_samples for f in _features(outputs, "s")])
    assert np.array_equal(starts, np.arange(num_frames(len(audio))) * 320)


def test_windows_on_the_streams_first_samples_share_one_run(model: Wav2Vec2Model, speech_like: Audio) -> None:
    # Left context of two hops: windows 0-2 all start at sample 0 (same samples). The first run
    # covers the next two cores with exactly their inputs and past, so they run nothing and
    # their outputs equal what their own runs give.
    config = WindowerConfig(hop_samples=3200, left_context_samples=6400, right_context_samples=640)
    windows = Windower(config, "s").push(speech_like(3.0, seed=5))[:4]
    assert [w.start_sample for w in windows[:3]] == [0, 0, 0] and windows[3].start_sample > 0

    def run(share: bool) -> tuple[list[npt.NDArray[np.float32]], list[int]]:
        front, kv = ConvFrameCache(FrontEndConfig(), 320), KVCache(KVConfig(), 320)
        outs, encoded = [], []
        for w in windows:
            conv = front.conv_batch(model, [w])
            if not share:
                kv._shared.clear()
            o, n = kv.encode(model, [w], conv, model.default_output, front)
            outs.append(o[0])
            encoded.append(n)
        return outs, encoded

    shared, n_shared = run(True)
    ran, n_ran = run(False)
    assert n_shared[1] == n_shared[2] == 0 and min(n_ran) > 0 and n_shared[3] == n_ran[3]
    for a, b in zip(shared, ran, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
