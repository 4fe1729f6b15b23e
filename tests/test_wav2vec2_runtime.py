"""Wav2Vec2Model on real exported tiny models (built by the exporter in conftest)."""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ostinato.runtime import load_model
from ostinato.runtime.errors import InputError, ManifestError, ModelLoadError, SessionError
from ostinato.runtime.wav2vec2 import Wav2Vec2Model, ctc_greedy_decode

Audio = Callable[..., np.ndarray]


@pytest.fixture
def model(tiny_w2v_dir: Path):  # type: ignore[no-untyped-def]
    with Wav2Vec2Model.from_dir(tiny_w2v_dir, provider="cpu", intra_op_threads=1) as m:
        yield m


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_outputs_and_geometry(model: Wav2Vec2Model) -> None:
    assert set(model.output_names) >= {"last_hidden_state", "hidden_state_0", "hidden_state_2"}
    assert (model.sample_rate, model.frame_stride_samples, model.receptive_field_samples) == (16000, 320, 400)
    assert model.session.providers == ("CPUExecutionProvider",)
    assert model.manifest.random_init


@pytest.mark.parametrize("n_samples", [400, 719, 720, 16000, 16321])
def test_frame_count_and_times(model: Wav2Vec2Model, speech_like: Audio, n_samples: int) -> None:
    audio = speech_like(2.0)[:n_samples]
    feats = model.features(audio, 16000)
    expected = (n_samples - 400) // 320 + 1
    assert feats.frames.shape == (expected, model.manifest.hidden_size)
    np.testing.assert_array_equal(feats.start_samples, 320 * np.arange(expected))
    assert feats.output == "last_hidden_state"
    assert np.isfinite(feats.frames).all()


def test_runtime_applies_the_models_input_normalisation(model: Wav2Vec2Model, speech_like: Audio) -> None:
    assert model.manifest.normalize_input, "random:tiny mirrors wav2vec2-base (do_normalize)"
    audio = 0.05 * speech_like(1.0) + 0.02  # quiet and off-centre: normalisation matters
    raw = ort.InferenceSession(str(model.directory / "model.onnx"), providers=["CPUExecutionProvider"])
    normed = ((audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)).astype(np.float32)[None]
    expected = raw.run(["last_hidden_state"], {"input_values": normed})[0][0]
    unnormalised = raw.run(["last_hidden_state"], {"input_values": audio[None]})[0][0]
    got = model.features(audio, 16000).frames
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(got - unnormalised).max() > 1e-3


def test_hidden_layers_are_distinct_outputs(model: Wav2Vec2Model, speech_like: Audio) -> None:
    audio = speech_like(1.0)
    out = model.run_batch(audio[None], ["hidden_state_1", "hidden_state_2", "last_hidden_state"])
    np.testing.assert_allclose(out["hidden_state_2"], out["last_hidden_state"], atol=1e-6)
    assert np.abs(out["hidden_state_1"] - out["hidden_state_2"]).max() > 1e-3


def test_batch_rows_match_single_runs(model: Wav2Vec2Model, speech_like: Audio) -> None:
    windows = np.stack([speech_like(0.5, seed=s) for s in range(3)])
    batch = model.run_batch(windows)["last_hidden_state"]
    assert batch.shape[:2] == (3, model.num_frames(windows.shape[1]))
    for row in range(3):
        single = model.run_batch(windows[row : row + 1])["last_hidden_state"][0]
        np.testing.assert_allclose(batch[row], single, atol=1e-5)


@pytest.fixture(scope="module")
def local_w2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny layer-norm Wav2Vec2 (HF dir → export) whose layer 0 only sees nearby samples.

    With ``feat_extract_norm="layer"``, ``do_stable_layer_norm`` and no input normalisation,
    ``hidden_state_0`` depends on the audio within ±8 frames (positional conv), so windowed
    processing with enough context must reproduce the one-pass frames exactly.
    """
    import torch
    from transformers import Wav2Vec2Config
    from transformers import Wav2Vec2Model as TorchWav2Vec2

    from ostinato.export.specs import random_config_kwargs
    from ostinato.export.wav2vec2 import Wav2Vec2ExportConfig, export_wav2vec2

    kwargs = random_config_kwargs("random:tiny")
    kwargs.update(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
    torch.manual_seed(3)
    src = tmp_path_factory.mktemp("hf") / "local"
    TorchWav2Vec2(Wav2Vec2Config(**kwargs)).save_pretrained(src)
    (src / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False, "sampling_rate": 16000}))
    out = tmp_path_factory.mktemp("w2v") / "local"
    export_wav2vec2(Wav2Vec2ExportConfig(model=str(src), out_dir=out, layers=(0,)))
    return out


def test_long_input_windows_stitch_frame_exactly(local_w2v_dir: Path, speech_like: Audio) -> None:
    audio = speech_like(3.3)
    with Wav2Vec2Model.from_dir(local_w2v_dir, provider="cpu") as model:
        assert not model.manifest.normalize_input
        whole = model.features(audio, 16000, output="hidden_state_0")
        windowed = model.features(audio, 16000, output="hidden_state_0", max_window_s=1.0, context_s=0.2)
        shifted = model.features(audio[320:], 16000, output="hidden_state_0")
    assert len(windowed) == len(whole) == (len(audio) - 400) // 320 + 1
    np.testing.assert_array_equal(windowed.start_samples, whole.start_samples)
    np.testing.assert_allclose(windowed.frames, whole.frames, atol=2e-4)
    # The comparison can fail: frames one hop off are far apart.
    assert np.abs(shifted.frames[10:50] - whole.frames[10:50]).max() > 1e-2


def test_features_batch_groups_equal_lengths(model: Wav2Vec2Model, speech_like: Audio) -> None:
    audios = [speech_like(0.5, seed=1), speech_like(0.8, seed=2), speech_like(0.5, seed=3)]
    batch = model.features_batch(audios, 16000)
    for audio, feats in zip(audios, batch, strict=True):
        np.testing.assert_allclose(feats.frames, model.features(audio, 16000).frames, atol=1e-5)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.features(np.zeros(16000, np.float32), 8000), "sample_rate=8000"),
        (lambda m: m.features(np.zeros((2, 16000), np.float32), 16000), "expected 1-D"),
        (lambda m: m.features(np.full(1000, np.nan, np.float32), 16000), "1000 NaN/Inf"),
        (lambda m: m.features(np.zeros(399, np.float32), 16000), "shorter than one frame"),
        (lambda m: m.run_batch(np.zeros((1, 800), np.float64)), "expected float32"),
        (lambda m: m.run_batch(np.zeros(800, np.float32)), r"expected \[batch, samples\]"),
        (lambda m: m.run_batch(np.zeros((1, 800), np.float32), ["nope"]), "not in this model"),
        (lambda m: m.features(np.zeros(800, np.float32), 16000, output="x"), "output='x'"),
        (lambda m: m.transcribe(np.zeros(800, np.float32), 16000), "transcribe needs ctc"),
    ],
)
def test_bad_input_is_a_clear_input_error(model: Wav2Vec2Model, call, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=match):
        call(model)
    # The model keeps serving after rejecting bad input.
    assert len(model.features(np.zeros(800, np.float32), 16000)) == 2


def test_lifecycle(tiny_w2v_dir: Path) -> None:
    m = Wav2Vec2Model.from_dir(tiny_w2v_dir, provider="cpu")
    m.unload()
    assert not m.loaded
    with pytest.raises(SessionError, match="unloaded"):
        m.run_batch(np.zeros((1, 800), np.float32))
    m.load()
    assert m.run_batch(np.zeros((1, 800), np.float32))["last_hidden_state"].shape[1] == 2
    m.close()
    leaked = Wav2Vec2Model.from_dir(tiny_w2v_dir, provider="cpu")
    with pytest.warns(ResourceWarning, match="not closed"):
        leaked.__del__()


def test_int8_stays_close_to_fp32(tiny_w2v_dir: Path, tiny_w2v_int8_dir: Path, speech_like: Audio) -> None:
    audio = speech_like(2.0, seed=5)
    with Wav2Vec2Model.from_dir(tiny_w2v_dir, "cpu") as fp32, Wav2Vec2Model.from_dir(tiny_w2v_int8_dir, "cpu") as int8:
        assert int8.manifest.precision == "int8"
        cos = _cos(fp32.features(audio, 16000).frames, int8.features(audio, 16000).frames)
        required = int8.manifest.validation["int8"]["min_cosine_required"]
    # What the export's validation promised holds on audio it never saw.
    assert cos.min() >= required
    assert np.median(cos) >= 0.995


def test_registry_and_damaged_models(tiny_w2v_dir: Path, tmp_path: Path) -> None:
    with load_model(tiny_w2v_dir, provider="cpu") as m:
        assert isinstance(m, Wav2Vec2Model)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_w2v_dir, broken)
    # The front end and the streaming encoder (encoder_cached.onnx) load at once; encoder.onnx on
    # the first encode(), model.onnx on the first run_batch().
    for name in ("encoder_cached.onnx", "encoder.onnx", "model.onnx"):
        data = (tiny_w2v_dir / name).read_bytes()
        (broken / name).write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match="cannot load"):
        Wav2Vec2Model.from_dir(broken, provider="cpu")
    shutil.copy(tiny_w2v_dir / "encoder_cached.onnx", broken / "encoder_cached.onnx")
    with Wav2Vec2Model.from_dir(broken, provider="cpu") as m:
        with pytest.raises(ModelLoadError, match="cannot load"):
            m.encode(m.frontend(np.zeros((1, 4000), np.float32)))
    shutil.copy(tiny_w2v_dir / "encoder.onnx", broken / "encoder.onnx")
    with Wav2Vec2Model.from_dir(broken, provider="cpu") as m:
        assert m.encode(m.frontend(np.zeros((1, 4000), np.float32))).keys() == set(m.output_names)
        with pytest.raises(ModelLoadError, match="cannot load"):
            m.run_batch(np.zeros((1, 4000), np.float32))
    manifest = json.loads((broken / "ostinato.json").read_text())
    manifest["kind"] = "whisper"
    (broken / "ostinato.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="whisper"):
        load_model(broken)


def test_ctc_greedy_decode() -> None:
    vocab = ["<pad>", "<s>", "|", "A", "B"]
    ids = np.array([0, 3, 3, 0, 3, 2, 2, 4, 0, 0, 4, 1, 2])
    assert ctc_greedy_decode(ids, vocab, blank_id=0, word_delimiter="|") == "AA BB"
