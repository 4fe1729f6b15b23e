"""Wav2Vec2 → ONNX export: graphs, manifest, validation and every refusal path.

Real exports of ``random:tiny`` (and tiny Hugging Face directories written with
``save_pretrained``), checked with plain ``onnxruntime.InferenceSession`` against the
Hugging Face model itself.
"""

from __future__ import annotations

import datetime
import errno
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import (
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Model,
)

from conftest import TINY_INT8_MIN_COSINE

from ostinato.export import specs
from ostinato.export.errors import (
    ExportError,
    ExportOptionError,
    SourceModelError,
    ToleranceError,
    UnsupportedArchitectureError,
)
from ostinato.export.quantize import Int8Recipe
from ostinato.export.validate import ValidationCase, frame_cosine, validate_onnx
from ostinato.export.wav2vec2 import Wav2Vec2ExportConfig, export_wav2vec2
from ostinato.runtime.manifest import Manifest, sha256_file

Audio = Callable[..., np.ndarray]


def _session(model_dir: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])


def _run(model_dir: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = _session(model_dir)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"input_values": x}), strict=True))


def _normalized(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return ((x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-7)).astype(np.float32)


def _hf_tiny(cls: type = Wav2Vec2Model, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """The Hugging Face model random:tiny stands for, built the plain HF way (weight norm kept)."""
    torch.manual_seed(seed)
    return cls(Wav2Vec2Config(**{**specs.random_config_kwargs("random:tiny"), **overrides})).eval()


def _export(tmp_path: Path, name: str = "out", **kwargs: Any) -> tuple[Manifest, Path]:
    out = tmp_path / name
    kwargs.setdefault("model", "random:tiny")
    return export_wav2vec2(Wav2Vec2ExportConfig(out_dir=out, **kwargs)), out


# --- the session fixtures other tests build on ------------------------------------------


def test_fp32_fixture_manifest(tiny_w2v_dir: Path) -> None:
    m = Manifest.read(tiny_w2v_dir)
    assert (m.kind, m.task, m.precision, m.source) == ("wav2vec2", "features", "fp32", "random:tiny")
    assert m.random_init is True and "RANDOM WEIGHTS" in m.label
    assert m.files == {
        "model": "model.onnx", "frontend": "frontend.onnx", "encoder": "encoder.onnx",
        "encoder_cached": "encoder_cached.onnx",
    }
    assert [(o.name, o.layer, o.dim) for o in m.outputs] == [
        ("last_hidden_state", 2, 32),
        ("hidden_state_0", 0, 32),
        ("hidden_state_1", 1, 32),
        ("hidden_state_2", 2, 32),
    ]
    assert (m.sample_rate, m.frame_stride_samples, m.receptive_field_samples) == (16000, 320, 400)
    assert (m.hidden_size, m.num_layers, m.normalize_input, m.feat_extract_norm) == (32, 2, True, "group")
    assert m.opset == specs.DEFAULT_OPSET
    for name in m.files.values():
        assert m.sha256[name] == sha256_file(tiny_w2v_dir / name)
    assert {"torch", "transformers", "onnx", "optimum-onnx"} <= set(m.versions)
    assert "onnxruntime" in m.versions or "onnxruntime-gpu" in m.versions
    assert datetime.datetime.fromisoformat(m.created_at).tzinfo is not None
    fp32 = m.validation["fp32"]
    assert fp32["mode"] == "exact" and 0 < fp32["max_abs_diff"] <= 1e-4
    assert len(fp32["cases"]) >= 6 and m.validation["skipped"] is False


def test_fp32_layers_match_huggingface(tiny_w2v_dir: Path, speech_like: Audio) -> None:
    x = _normalized(np.stack([speech_like(0.73, seed=1), speech_like(0.73, seed=2)]))
    got = _run(tiny_w2v_dir, x)
    with torch.inference_mode():
        ref = _hf_tiny()(torch.from_numpy(x), output_hidden_states=True)
    frames = (x.shape[1] - 400) // 320 + 1
    assert got["last_hidden_state"].shape == (2, frames, 32)
    np.testing.assert_allclose(got["last_hidden_state"], ref.last_hidden_state.numpy(), atol=1e-4, rtol=0)
    for layer in range(3):
        np.testing.assert_allclose(got[f"hidden_state_{layer}"], ref.hidden_states[layer].numpy(), atol=1e-4, rtol=0)
    # Layers really differ: the outputs are not one tensor under several names.
    assert np.abs(got["hidden_state_0"] - got["hidden_state_1"]).max() > 1e-2


@pytest.mark.parametrize("samples", [400, 719, 720, 1_037, 16_000])
def test_frame_count_and_dynamic_batch(tiny_w2v_dir: Path, samples: int) -> None:
    x = np.random.default_rng(samples).standard_normal((3, samples)).astype(np.float32)
    out = _run(tiny_w2v_dir, x)["last_hidden_state"]
    assert out.shape == (3, (samples - 400) // 320 + 1, 32)


def test_int8_fixture(tiny_w2v_int8_dir: Path, tiny_w2v_dir: Path, speech_like: Audio) -> None:
    m = Manifest.read(tiny_w2v_int8_dir)
    assert m.precision == "int8" and [o.name for o in m.outputs][0] == "last_hidden_state"
    assert m.validation["fp32"]["max_abs_diff"] <= 1e-4  # the rewritten fp32 graph, before quantizing
    assert m.validation["int8"]["mode"] == "cosine"
    assert m.validation["int8"]["min_cosine"] >= m.validation["int8"]["min_cosine_required"] == TINY_INT8_MIN_COSINE
    assert m.extra["conversion"]["recipe"]["front_end_layers"] == [1, 2, 3, 4, 5, 6]
    ops = {n.op_type for n in onnx.load(str(tiny_w2v_int8_dir / "model.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops and ("MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops)
    assert "Conv" in ops  # conv layer 0 stays fp32 (the positional conv is DFT MatMuls: test_w2v_posconv.py)
    x = _normalized(speech_like(1.5, seed=3)[None])
    cos = frame_cosine(_run(tiny_w2v_int8_dir, x)["hidden_state_2"], _run(tiny_w2v_dir, x)["hidden_state_2"])
    assert cos.mean() > 0.99 and cos.min() > 0.9


# --- precisions, tasks, sources ----------------------------------------------------------


def test_fp16_keeps_float32_io(tmp_path: Path) -> None:
    m, out = _export(tmp_path, precision="fp16", layers=(1,))
    model = onnx.load(str(out / "model.onnx"))
    io_types = {v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    assert io_types == {onnx.TensorProto.FLOAT}
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    assert m.extra["io_dtype"] == "float32" and m.validation["fp16"]["min_cosine"] >= 0.99
    assert [o.name for o in m.outputs] == ["last_hidden_state", "hidden_state_1"]
    assert not (out / "model.fp32.onnx").exists()


def test_ctc_random_writes_vocab(tmp_path: Path) -> None:
    m, out = _export(tmp_path, task="ctc")
    assert m.files == {
        "model": "model.onnx", "vocab": "vocab.json", "tokenizer_config": "tokenizer_config.json",
        "frontend": "frontend.onnx", "encoder": "encoder.onnx", "encoder_cached": "encoder_cached.onnx",
    }
    vocab = json.loads((out / "vocab.json").read_text())
    assert vocab == {tok: i for i, tok in enumerate(specs.DEFAULT_CTC_VOCAB)}
    assert m.extra["blank_id"] == 0 and m.extra["word_delimiter_token"] == "|"
    assert [(o.name, o.layer, o.dim) for o in m.outputs] == [("logits", None, 32)]
    assert m.extra["exporter"] == "optimum-onnx"
    assert set(m.sha256) == {
        "model.onnx", "vocab.json", "tokenizer_config.json", "frontend.onnx", "encoder.onnx", "encoder_cached.onnx",
    }
    assert _run(out, np.zeros((1, 1_000), np.float32))["logits"].shape == (1, 2, 32)
    assert m.validation["split"]["max_abs_diff"] <= 1e-4  # the CTC head is in encoder.onnx


def test_split_graphs_take_the_statistics_as_inputs(tiny_w2v_dir: Path, speech_like: Audio) -> None:
    m = Manifest.read(tiny_w2v_dir)
    split = m.extra["split"]
    assert (split["patch_kernel"], split["patch_stride"], split["conv_dim"]) == (10, 5, 32)
    front = ort.InferenceSession(str(tiny_w2v_dir / "frontend.onnx"), providers=["CPUExecutionProvider"])
    enc = ort.InferenceSession(str(tiny_w2v_dir / "encoder.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in front.get_inputs()]
    assert names == split["frontend_inputs"] == ["input_values", "input_mean", "input_std", "patch_mean", "patch_cov"]
    assert [i.name for i in enc.get_inputs()] == ["conv_features"]
    assert [o.name for o in enc.get_outputs()] == [o.name for o in m.outputs]
    figures = m.validation["split"]
    assert figures["mode"] == "exact" and figures["max_abs_diff"] <= 1e-4 and len(figures["cases"]) >= 6
    # Split at the conv frames, with the whole input's statistics, it is the monolithic graph.
    x = _normalized(speech_like(1.1, seed=9)[None])
    patches = np.lib.stride_tricks.sliding_window_view(x[0].astype(np.float64), 10)[::5]
    mean = patches.mean(0)
    cov = (patches - mean).T @ (patches - mean) / len(patches)
    feeds = {
        "input_values": x, "input_mean": np.zeros((1, 1), np.float32), "input_std": np.ones((1, 1), np.float32),
        "patch_mean": mean[None].astype(np.float32), "patch_cov": cov[None].astype(np.float32),
    }
    (conv,) = front.run(["conv_features"], feeds)
    assert conv.shape == (1, (x.shape[1] - 400) // 320 + 1, 32)
    got = enc.run(["last_hidden_state"], {"conv_features": conv})[0]
    np.testing.assert_allclose(got, _run(tiny_w2v_dir, x)["last_hidden_state"], atol=1e-4, rtol=0)


def test_split_can_be_left_out(tmp_path: Path) -> None:
    m, out = _export(tmp_path, split=False)
    assert m.files == {"model": "model.onnx"} and "split" not in m.extra and "split" not in m.validation
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "ostinato.json"]


def _save_hf_dir(path: Path, model: torch.nn.Module, *, vocab: bool, do_normalize: bool | None) -> Path:
    model.save_pretrained(path)
    if vocab:
        vocab_file = path.parent / f"{path.name}-vocab.json"
        vocab_file.write_text(json.dumps({t: i for i, t in enumerate(specs.DEFAULT_CTC_VOCAB)}))
        Wav2Vec2CTCTokenizer(str(vocab_file)).save_pretrained(path)
    if do_normalize is not None:
        Wav2Vec2FeatureExtractor(do_normalize=do_normalize).save_pretrained(path)
    return path


def test_hf_dir_ctc_matches_huggingface(tmp_path: Path, speech_like: Audio) -> None:
    hf = _hf_tiny(Wav2Vec2ForCTC, seed=5)
    src = _save_hf_dir(tmp_path / "hf", hf, vocab=True, do_normalize=False)
    m, out = _export(tmp_path, model=str(src), task="ctc", layers=(1,))
    assert m.random_init is False and m.source == str(src.resolve()) and m.normalize_input is False
    assert m.extra["exporter"].startswith("torch.onnx")
    assert (out / "special_tokens_map.json").is_file() and m.extra["pad_token"] == "<pad>"
    x = speech_like(1.1, seed=4)[None]
    got = _run(out, x)
    reloaded = Wav2Vec2ForCTC.from_pretrained(src).eval()
    with torch.inference_mode():
        ref = reloaded(torch.from_numpy(x), output_hidden_states=True)
    np.testing.assert_allclose(got["logits"], ref.logits.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["hidden_state_1"], ref.hidden_states[1].numpy(), atol=1e-4, rtol=0)


def test_hf_dir_stable_layer_norm_int8(tmp_path: Path) -> None:
    # large-lv60 layout (LayerNorm conv layers, pre-LN transformer) through the int8 rewrite.
    hf = _hf_tiny(seed=7, feat_extract_norm="layer", do_stable_layer_norm=True)
    src = _save_hf_dir(tmp_path / "hf", hf, vocab=False, do_normalize=None)
    m, _ = _export(tmp_path, model=str(src), precision="int8", layers=(0, 2), min_cosine=TINY_INT8_MIN_COSINE)
    assert m.feat_extract_norm == "layer" and m.extra["do_stable_layer_norm"] is True
    assert m.normalize_input is True  # no preprocessor_config.json: the HF default
    assert m.validation["fp32"]["max_abs_diff"] <= 1e-4
    assert m.validation["int8"]["min_cosine"] >= TINY_INT8_MIN_COSINE


def test_hf_encoder_only_refuses_ctc(tmp_path: Path) -> None:
    src = _save_hf_dir(tmp_path / "hf", _hf_tiny(), vocab=True, do_normalize=True)
    with pytest.raises(SourceModelError, match="no CTC head") as info:
        _export(tmp_path, model=str(src), task="ctc")
    assert "--task features" in info.value.hint
    m, _ = _export(tmp_path, model=str(src), task="features")
    assert m.normalize_input is True


def test_hf_ctc_without_vocab_is_refused(tmp_path: Path) -> None:
    src = _save_hf_dir(tmp_path / "hf", _hf_tiny(Wav2Vec2ForCTC), vocab=False, do_normalize=True)
    with pytest.raises(SourceModelError, match="vocab.json"):
        _export(tmp_path, model=str(src), task="ctc")
    assert not (tmp_path / "out").exists()


# --- refusals ------------------------------------------------------------------------------


def test_missing_and_invalid_model_dirs(tmp_path: Path) -> None:
    with pytest.raises(SourceModelError, match="does not exist"):
        _export(tmp_path, model=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceModelError, match="no config.json"):
        _export(tmp_path, model=str(tmp_path / "empty"))
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UnsupportedArchitectureError, match="'bert'"):
        _export(tmp_path, model=str(bert))
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    _hf_tiny().config.to_json_file(no_weights / "config.json")
    with pytest.raises(SourceModelError, match="no weights"):
        _export(tmp_path, model=str(no_weights))
    (no_weights / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SourceModelError, match="cannot load"):
        _export(tmp_path, model=str(no_weights))
    (tmp_path / "badjson").mkdir()
    (tmp_path / "badjson" / "config.json").write_text("{")
    with pytest.raises(SourceModelError, match="cannot read"):
        _export(tmp_path, model=str(tmp_path / "badjson"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precision": "int4"}, r"precision='int4'; expected one of \('fp32', 'fp16', 'int8'\)"),
        ({"task": "asr"}, r"task='asr'; expected one of \('features', 'ctc'\)"),
        ({"model": "random:huge"}, r"model='random:huge'; expected a directory or one of"),
        ({"layers": (-1,)}, r"layers=\(-1,\)"),
        ({"opset": 9}, r"opset=9; expected 14\.\.20"),
    ],
)
def test_invalid_options(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ExportOptionError, match=match) as info:
        Wav2Vec2ExportConfig(**{"model": "random:tiny", "out_dir": tmp_path / "o", **kwargs})
    assert isinstance(info.value, ValueError)


def test_layer_beyond_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExportOptionError, match=r"layers 0\.\.2 \(got \[3\]\)"):
        _export(tmp_path, layers=(1, 3))
    assert list(tmp_path.iterdir()) == []


def test_foreign_out_dir_is_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(ExportError, match="refusing to overwrite"):
        _export(tmp_path)
    assert (out / "thesis.tex").read_text() == "precious"


def test_reexport_replaces_previous_export(tmp_path: Path) -> None:
    _export(tmp_path, layers=(1,))
    m, out = _export(tmp_path, task="ctc")
    assert Manifest.read(out).task == "ctc" and (out / "vocab.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp or backup dirs left


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_tolerance_failure_writes_nothing(tmp_path: Path) -> None:
    # A real comparison: the fp32 graph differs from PyTorch by ~1e-6, more than 1e-9.
    with pytest.raises(ToleranceError, match="max abs diff .* > allowed 1e-09") as info:
        _export(tmp_path, atol=1e-9)
    report = info.value.report  # type: ignore[attr-defined]
    assert 0 < report["max_abs_diff"] < 1e-4
    with pytest.raises(ToleranceError, match="per-frame cosine min"):
        _export(tmp_path, precision="int8", min_cosine=0.9999999)
    assert _leftovers(tmp_path) == []


def test_tampered_graph_fails_validation(tmp_path: Path, tiny_w2v_dir: Path) -> None:
    model = onnx.load(str(tiny_w2v_dir / "model.onnx"))
    weight = [i for i in model.graph.initializer if len(i.dims) == 2][-1]  # last layer's FFN
    array = onnx.numpy_helper.to_array(weight).copy()
    array *= 1.01  # a 1 % error in one weight matrix
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    x = np.random.default_rng(0).standard_normal((1, 4_000)).astype(np.float32)
    reference = _run(tiny_w2v_dir, x)
    case = ValidationCase("noise", x, reference)
    assert validate_onnx(tiny_w2v_dir / "model.onnx", [case], "exact")["max_abs_diff"] == 0.0
    with pytest.raises(ToleranceError, match="'last_hidden_state'|'hidden_state_2'"):
        validate_onnx(bad, [case], "exact")


def test_no_validate_records_skip(tmp_path: Path) -> None:
    m, _ = _export(tmp_path, atol=1e-12, validate=False)
    assert m.validation == {"skipped": True}


def test_disk_space_precheck(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=1 << 20))
    with pytest.raises(ExportError, match="not enough disk space") as info:
        _export(tmp_path)
    assert "--out" in info.value.hint and _leftovers(tmp_path) == []


def test_disk_full_while_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self: Manifest, directory: Path) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Manifest, "write", full)
    with pytest.raises(ExportError, match="no space left") as info:
        _export(tmp_path)
    assert "MiB" in info.value.hint and _leftovers(tmp_path) == []


def test_progress_reports_each_step(tmp_path: Path) -> None:
    calls: list[tuple[str, float, float]] = []
    export_wav2vec2(
        Wav2Vec2ExportConfig(
            model="random:tiny", out_dir=tmp_path / "o", precision="int8", min_cosine=TINY_INT8_MIN_COSINE
        ),
        progress=lambda step, done, total: calls.append((step, done, total)),
    )
    steps = list(dict.fromkeys(step for step, _, _ in calls))
    assert steps == [
        "load model",
        "reference outputs",
        "export onnx",
        "validate exact",
        "convert int8",
        "validate cosine",
        "export split",
        "export cached encoder",
        "write",
    ]
    for step in steps:
        assert (step, max(d for s, d, _ in calls if s == step)) in {(s, t) for s, _, t in calls}


def test_frame_cosine_edges() -> None:
    a = np.array([[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [3.0, 4.0]]])
    b = np.array([[[2.0, 0.0], [0.0, 0.0], [1.0, 0.0], [-3.0, -4.0]]])
    np.testing.assert_allclose(frame_cosine(a, b), [[1.0, 1.0, 0.0, -1.0]])


def test_random_configs() -> None:
    base = specs.random_config_kwargs("random:base")
    large = specs.random_config_kwargs("random:large")
    assert (base["hidden_size"], base["num_hidden_layers"], base["feat_extract_norm"]) == (768, 12, "group")
    assert (large["hidden_size"], large["num_hidden_layers"], large["do_stable_layer_norm"]) == (1024, 24, True)
    for kw in (base, large, specs.random_config_kwargs("random:tiny")):
        stride = int(np.prod(kw["conv_stride"]))
        field = 1
        for k, s in zip(reversed(kw["conv_kernel"]), reversed(kw["conv_stride"]), strict=True):
            field = (field - 1) * s + k
        assert (stride, field) == (320, 400)


def test_int8_recipe_rejects_unknown_ops() -> None:
    with pytest.raises(ValueError, match="op_types"):
        Int8Recipe(op_types=("Softmax",))


def test_runtime_reads_ctc_export(tmp_path: Path, speech_like: Audio) -> None:
    # The contract with ostinato.runtime: blank id, delimiter and vocab come from the export.
    from ostinato.runtime import Wav2Vec2Model

    _, out = _export(tmp_path, task="ctc", seed=3)
    audio = speech_like(1.0)
    with Wav2Vec2Model.from_dir(out, provider="cpu") as model:
        text = model.transcribe(audio, 16_000)
        ids = model.run_batch(audio[None])["logits"][0].argmax(-1)
    vocab = specs.DEFAULT_CTC_VOCAB
    kept = [int(i) for j, i in enumerate(ids) if (j == 0 or i != ids[j - 1]) and i != 0]
    chars = "".join(" " if vocab[i] == "|" else vocab[i] for i in kept if not vocab[i].startswith("<"))
    assert text == " ".join(chars.split())
    assert len(kept) > 0  # random logits: something is decoded, so the comparison is not vacuous
