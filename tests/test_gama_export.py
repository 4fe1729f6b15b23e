"""GAMA export: manifest, tolerances, ONNX vs PyTorch (independent of the exporter's own check)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ostinato.export import gama_check  # noqa: E402
from ostinato.export.errors import ExportOptionError, MemoryBudgetError, ToleranceError  # noqa: E402
from ostinato.export.gama import (  # noqa: E402
    GamaExportConfig,
    estimate_export_memory,
    export_gama,
    random_reference,
)
from ostinato.export.gama_model import format_prompt, preset_config  # noqa: E402
from ostinato.runtime.gama import GamaModel  # noqa: E402
from ostinato.runtime.manifest import Manifest  # noqa: E402


@pytest.fixture(scope="module")
def reference() -> object:
    """The same random weights the fixtures exported (seed 0)."""
    return random_reference(preset_config("tiny", vocab_size=400), seed=0)


def _tone(seconds: float, sample_rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng(3)
    return (0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def test_manifest_records_files_tolerances_and_random_label(tiny_gama_dir: Path) -> None:
    m = Manifest.read(tiny_gama_dir)
    assert m.kind == "gama" and m.random_init is True and m.source == "random:tiny"
    assert "RANDOM WEIGHTS" in m.label
    for key in ("audio", "decoder", "embeddings", "tokenizer"):
        assert (tiny_gama_dir / m.files[key]).is_file()
        assert len(m.sha256[key]) == 64
    v = m.validation
    assert v["validated"] is True
    assert v["audio_branch"]["synthetic-audio-b1"]["max_abs_diff"] <= v["audio_branch"]["synthetic-audio-b1"]["atol"]
    assert v["decoder"]["prefill_logits"]["max_abs_diff"] <= v["decoder"]["prefill_logits"]["atol"]
    assert v["greedy"]["tokens_onnx"] == v["greedy"]["tokens_torch"]
    assert m.extra["num_audio_tokens"] == 96 and m.extra["window_samples"] == 164080
    assert np.load(tiny_gama_dir / m.files["embeddings"], mmap_mode="r").shape == (400, 64)
    assert tiny_gama_dir.stat().st_mode & 0o055 == 0o055  # readable by others (umask 022)


def test_onnx_greedy_equals_pytorch_token_for_token(tiny_gama_dir: Path, reference: object) -> None:
    audio = _tone(3.0)
    prompt = "What sound is this?"
    with GamaModel.from_dir(tiny_gama_dir, provider="cpu") as model:
        onnx_tokens = list(model.generate_ids(audio, 16000, prompt, model.generation_config({"temperature": 0.0,
                                                                                   "max_new_tokens": 24})))
        ids = model.prompt_ids(prompt)
        fbank = torch.from_numpy(model.features(audio, 16000)[None])
        embeds = model.audio_embeds(audio, 16000)
    assert ids == model.tokenizer.encode(format_prompt(prompt))
    torch_tokens = reference.generate_greedy(fbank, torch.tensor([ids]), 24)
    torch_tokens = [t for t in torch_tokens if t != 2]
    assert onnx_tokens == torch_tokens[: len(onnx_tokens)] and len(onnx_tokens) > 0
    with torch.no_grad():
        want = reference.model(fbank).numpy()
    tol = gama_check.REL_TOL_FP32 * max(1.0, float(np.abs(want).max()))
    assert np.abs(embeds - want).max() <= tol


def test_int4_export_is_smaller_and_close(tiny_gama_dir: Path, tiny_gama_int4_dir: Path) -> None:
    m = Manifest.read(tiny_gama_int4_dir)
    assert m.precision == "int4"
    assert m.extra["decoder_precision"] == "int4" and m.extra["audio_precision"] == "int8"
    dec = m.validation["decoder"]["prefill_logits"]
    assert dec["min_cosine"] >= dec["required_min_cosine"] == gama_check.MIN_COSINE["int4"]

    def size(d: Path) -> int:
        return sum(p.stat().st_size for p in d.glob("decoder.onnx*"))

    assert size(tiny_gama_int4_dir) < size(tiny_gama_dir)
    with GamaModel.from_dir(tiny_gama_int4_dir, provider="cpu") as model:
        assert isinstance(model.describe(_tone(1.0), 16000, max_new_tokens=4, temperature=0.0), str)


def test_memory_budget_refuses_7b(tmp_path: Path) -> None:
    full = GamaExportConfig(out_dir=tmp_path / "full", random_init=True, config="full")
    estimate = estimate_export_memory(full)
    assert estimate.parameters > 6.9e9  # 6.74B Llama + 0.25B audio side
    assert estimate.peak_bytes > 70 * 2**30  # ~78 GiB: fp32 model + two graph copies
    if estimate.available_bytes is not None and estimate.available_bytes < estimate.peak_bytes:
        with pytest.raises(MemoryBudgetError, match="GiB"):
            export_gama(full)
        assert not (tmp_path / "full").exists()
    tiny = estimate_export_memory(GamaExportConfig(out_dir=tmp_path / "t", random_init=True, config="tiny"))
    assert tiny.peak_bytes < 2 * 2**30 and "GiB" in tiny.describe()


def test_option_errors(tmp_path: Path) -> None:
    with pytest.raises(ExportOptionError, match="precision"):
        GamaExportConfig(out_dir=tmp_path, random_init=True, precision="int3")
    with pytest.raises(ExportOptionError, match="random-init"):
        GamaExportConfig(out_dir=tmp_path)
    with pytest.raises(ExportOptionError, match="random-init"):
        GamaExportConfig(out_dir=tmp_path, random_init=True, base_dir=tmp_path)
    (tmp_path / "x").write_text("occupied")
    with pytest.raises(ExportOptionError, match="not empty"):
        export_gama(GamaExportConfig(out_dir=tmp_path, random_init=True, config="tiny"))


def test_tolerance_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gama_check, "REL_TOL_FP32", 0.0)
    out = tmp_path / "strict"
    with pytest.raises(ToleranceError, match="audio branch"):
        export_gama(GamaExportConfig(out_dir=out, random_init=True, config="tiny", precision="fp32"))
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_export_from_a_synthetic_release_end_to_end(tmp_path: Path) -> None:
    """Loader → export → runtime on a release in the official layout (tokenizer.model converted)."""
    from test_gama_loader import _write_release
    from test_gama_tokenizer import _spm_model

    release = _write_release(tmp_path, seed=1)
    _spm_model(Path(release["base"]) / "tokenizer.model")
    out = tmp_path / "export"
    manifest = export_gama(GamaExportConfig(out_dir=out, base_dir=release["base"], checkpoint=release["ckpt"],
                                            precision="fp32", greedy_tokens=6))
    assert manifest.random_init is False and "trained weights" in manifest.label
    assert manifest.validation["greedy"]["tokens_onnx"] == manifest.validation["greedy"]["tokens_torch"]
    assert any("merged LoRA into 4 projections" in line for line in manifest.extra["load_report"])
    with GamaModel.from_dir(out, provider="cpu") as model:
        assert model.random_init is False
        assert model.tokenizer.vocab_size == 360
        assert isinstance(model.describe(_tone(1.0), 16000, temperature=0.0, max_new_tokens=3), str)


def test_export_cli_labels_random_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ostinato.__main__ import main

    out = tmp_path / "cli"
    assert main(["export", "gama", "--random-init", "--config", "tiny", "--precision", "fp32",
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "RANDOM WEIGHTS" in captured.out + captured.err
    assert "memory:" in captured.err and "greedy tokens agree 12/12" in captured.out
    assert Manifest.read(out).random_init is True
    assert main(["export", "gama", "--random-init", "--out", str(out)]) == 2  # not empty
