"""GamaModel (runtime/gama.py), the generation loop (runtime/generate.py) and `ostinato describe`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ostinato.__main__ import main
from ostinato.runtime.errors import InputError, ManifestError, ModelLoadError, ModelNotFoundError
from ostinato.runtime.gama import GamaModel
from ostinato.runtime.generate import DecoderSpec, GenerationConfig, generate_tokens, process_logits
from ostinato.runtime.tokenizer import TokenizerError


def _tone(seconds: float, sample_rate: int = 16000, freq: float = 330.0) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def model(tiny_gama_dir: Path) -> GamaModel:
    with GamaModel.from_dir(tiny_gama_dir, provider="cpu") as m:
        yield m


def test_describe_greedy_is_deterministic_and_sampling_seeded(model: GamaModel) -> None:
    audio = _tone(2.0)
    a = model.describe(audio, 16000, temperature=0.0, max_new_tokens=16)
    assert a == model.describe(audio, 16000, temperature=0.0, max_new_tokens=16) and a
    s1 = model.describe(audio, 16000, temperature=1.0, top_k=0, top_p=1.0, seed=5, max_new_tokens=16)
    assert s1 == model.describe(audio, 16000, temperature=1.0, top_k=0, top_p=1.0, seed=5, max_new_tokens=16)
    others = {model.describe(audio, 16000, temperature=1.0, top_k=0, top_p=1.0, seed=s, max_new_tokens=16)
              for s in range(6, 10)}
    assert len(others | {s1}) > 1
    assert model.random_init and model.num_audio_tokens == 96


def test_window_padding_truncation_and_resampling(model: GamaModel) -> None:
    long = _tone(20.0)
    assert model.window_samples == 164080  # 1024 frames of 25 ms every 10 ms
    np.testing.assert_allclose(model.features(long, 16000), model.features(long[:164080], 16000), atol=1e-5)
    assert not np.allclose(model.features(long[:163840], 16000)[-2:], model.features(long, 16000)[-2:])
    short = model.features(_tone(1.0), 16000)
    np.testing.assert_allclose(short[200:], (0 + 5.081) / 4.4849, rtol=1e-6)  # padded rows
    at_48k = model.features(_tone(2.0, 48000), 48000)
    at_16k = model.features(_tone(2.0, 16000), 16000)
    assert np.abs(at_48k[:190] - at_16k[:190]).max() < 0.05
    stereo = np.stack([_tone(1.0), _tone(1.0)], axis=1)
    np.testing.assert_allclose(model.features(stereo, 16000), short, atol=1e-6)


async def test_async_stream_yields_the_same_text(model: GamaModel) -> None:
    audio = _tone(1.5)
    pieces = [p async for p in model.stream(audio, 16000, temperature=0.0, max_new_tokens=12)]
    assert len(pieces) > 1
    assert "".join(pieces) == model.describe(audio, 16000, temperature=0.0, max_new_tokens=12)


def test_bad_requests(model: GamaModel) -> None:
    with pytest.raises(InputError, match="empty"):
        model.describe(np.zeros(0, np.float32), 16000)
    with pytest.raises(InputError, match="NaN"):
        model.describe(np.full(1600, np.nan, np.float32), 16000)
    with pytest.raises(InputError, match="sample_rate"):
        model.describe(_tone(0.5), 0)
    with pytest.raises(InputError, match="temperature"):
        model.describe(_tone(0.5), 16000, temperature=-1.0)
    with pytest.raises(InputError, match="prompt"):
        model.describe(_tone(0.5), 16000, prompt="  ")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_damaged_exports_raise_typed_errors(tiny_gama_dir: Path, tmp_path: Path, tiny_w2v_dir: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        GamaModel.from_dir(tmp_path / "nothing")
    with pytest.raises(ManifestError, match="wav2vec2"):
        GamaModel.from_dir(tiny_w2v_dir)
    d = _copy(tiny_gama_dir, tmp_path / "truncated")
    data = (d / "decoder.onnx").read_bytes()
    (d / "decoder.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match="decoder.onnx"):
        GamaModel.from_dir(d, provider="cpu")
    d = _copy(tiny_gama_dir, tmp_path / "no-embeddings")
    (d / "embed_tokens.npy").unlink()
    with pytest.raises(ModelNotFoundError, match="embed_tokens.npy"):
        GamaModel.from_dir(d, provider="cpu")
    d = _copy(tiny_gama_dir, tmp_path / "bad-tokenizer")
    (d / "tokenizer.json").write_text("{")
    with pytest.raises(TokenizerError):
        GamaModel.from_dir(d, provider="cpu")
    d = _copy(tiny_gama_dir, tmp_path / "bad-manifest")
    manifest = json.loads((d / "ostinato.json").read_text())
    del manifest["extra"]["decoder"]
    (d / "ostinato.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="decoder"):
        GamaModel.from_dir(d, provider="cpu")


def test_logit_processing_matches_transformers() -> None:
    torch = pytest.importorskip("torch")
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    rng = np.random.default_rng(0)
    for cfg in (GenerationConfig(temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.3),
                GenerationConfig(temperature=0.1, top_k=50, top_p=0.95),
                GenerationConfig(temperature=1.0, top_k=0, top_p=0.5, repetition_penalty=1.1)):
        logits = rng.standard_normal(300).astype(np.float32) * 3
        history = list(rng.integers(0, 300, 12))
        ids, scores = torch.tensor([history]), torch.from_numpy(logits)[None].clone()
        if cfg.repetition_penalty != 1.0:
            scores = RepetitionPenaltyLogitsProcessor(cfg.repetition_penalty)(ids, scores)
        scores = TemperatureLogitsWarper(cfg.temperature)(ids, scores)
        if cfg.top_k:
            scores = TopKLogitsWarper(cfg.top_k)(ids, scores)
        scores = TopPLogitsWarper(cfg.top_p)(ids, scores)
        ours = process_logits(logits, history, cfg)
        want = scores[0].double().numpy()
        assert np.array_equal(np.isinf(ours), np.isinf(want))
        np.testing.assert_allclose(ours[np.isfinite(ours)], want[np.isfinite(want)], rtol=1e-5)


def test_generation_loop_feeds_and_stops() -> None:
    spec = DecoderSpec(num_layers=1, kv_heads=1, head_dim=2, max_positions=10)
    calls: list[dict[str, np.ndarray]] = []

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(feeds)
        total = feeds["attention_mask"].shape[1]
        logits = np.zeros((1, feeds["inputs_embeds"].shape[1], 5), np.float32)
        logits[0, -1, [3, 4][total % 2]] = 1.0  # alternates 3, 4, …
        kv = np.zeros((1, 1, total, 2), np.float32)
        return {"logits": logits, "present.0.key": kv, "present.0.value": kv}

    table = np.eye(5, 3, dtype=np.float32)
    tokens = list(generate_tokens(run, spec, np.zeros((1, 4, 3), np.float32), table, [1, 2],
                                  GenerationConfig(temperature=0.0, max_new_tokens=50)))
    assert tokens == [3, 4, 3, 4, 3, 4]  # stops at max_positions 10 = 4 prefill + 6 new
    assert [c["position_ids"].tolist() for c in calls[:3]] == [[[0, 1, 2, 3]], [[4]], [[5]]]
    assert calls[1]["past_key_values.0.key"].shape == (1, 1, 4, 2)
    np.testing.assert_array_equal(calls[1]["inputs_embeds"][0, 0], table[3])
    stopped = list(generate_tokens(run, spec, np.zeros((1, 4, 3), np.float32), table, [1],
                                   GenerationConfig(temperature=0.0), stop_ids=(4,)))
    assert stopped == [3]


def test_describe_cli_streams_tokens(tiny_gama_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav = tmp_path / "clip.wav"
    sf.write(wav, _tone(12.0, 22050), 22050)
    assert main(["describe", str(wav), "--model", str(tiny_gama_dir), "--temperature", "0",
                 "--max-new-tokens", "8", "--start-s", "1.5", "--provider", "cpu"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() and "RANDOM WEIGHTS" in out.err and "window 1.50-11.76 s" in out.err
    assert main(["describe", str(wav), "--model", str(tiny_gama_dir), "--start-s", "99"]) == 2
    assert "past the end" in capsys.readouterr().err
