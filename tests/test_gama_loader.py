"""GAMA checkpoint loader on a synthetic release written in the official key layout.

Key names come from ``tests/data/gama_stage_ckpt_keys.txt`` (the 708 keys of a real stage
checkpoint, copied from shared/gama); shapes are shrunk to the tiny config.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from ostinato.export.errors import CheckpointMismatchError, SourceModelError  # noqa: E402
from ostinato.export.gama_loader import STAGE_PREFIX, load_gama, rename_audio_key  # noqa: E402
from ostinato.export.gama_model import GamaReference, preset_config  # noqa: E402

KEY_LIST = Path(__file__).parent / "data" / "gama_stage_ckpt_keys.txt"
LORA_R = 8
_LORA_RE = re.compile(r"^layers\.(\d+)\.self_attn\.([qv])_proj\.lora_([AB])\.default\.weight$")


def _official_keys() -> list[str]:
    return [line.split("\t")[0] for line in KEY_LIST.read_text().splitlines() if line.strip()]


def _write_release(root: Path, seed: int = 0) -> dict[str, object]:
    """Write base folder + stage checkpoint for the tiny config; return what was written."""
    gen = torch.Generator().manual_seed(seed)
    cfg = preset_config("tiny", vocab_size=400)
    ref = GamaReference(cfg)
    audio_shapes = {k: v.shape for k, v in ref.model.state_dict().items()}
    hidden, layers = cfg.hidden_size, cfg.llama["num_hidden_layers"]
    llm_shapes = {k: v.shape for k, v in ref.llm.state_dict().items()}
    stage: dict[str, torch.Tensor] = {}
    for key in _official_keys():
        name = key.removeprefix(STAGE_PREFIX)
        if (m := _LORA_RE.match(name)) is not None:
            if int(m.group(1)) < layers:
                out_dim = llm_shapes[f"model.layers.{m.group(1)}.self_attn.{m.group(2)}_proj.weight"][0]
                shape = (LORA_R, hidden) if m.group(3) == "A" else (out_dim, LORA_R)
                stage[key] = torch.randn(shape, generator=gen) * 0.1
        elif name.endswith("embeddings.position_ids"):
            stage[key] = torch.arange(512).unsqueeze(0)
        elif rename_audio_key(name) in audio_shapes:  # layers beyond the tiny depth are skipped
            stage[key] = torch.randn(audio_shapes[rename_audio_key(name)], generator=gen)
    base = root / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps(cfg.llama | {"architectures": ["LlamaForCausalLM"]}))
    llm = {k: v.half().contiguous() for k, v in ref.llm.state_dict().items()}
    names = sorted(llm)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        safetensors_torch.save_file({k: llm[k] for k in keys}, str(base / shard))
    (base / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: s for s, ks in shards.items() for k in ks}}))
    # Audio shard as upstream ships it (overridden by the stage checkpoint), not in the index.
    audio_base = {"model." + k.removeprefix(STAGE_PREFIX): torch.zeros_like(v)
                  for k, v in stage.items() if "audio_encoder" in k}
    audio_base["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    safetensors_torch.save_file(audio_base, str(base / "model-00003-of-00002.safetensors"))
    ckpt = root / "checkpoint-1" / "pytorch_model.bin"
    ckpt.parent.mkdir()
    torch.save(stage, str(ckpt))
    return {"cfg": cfg, "base": base, "ckpt": ckpt, "stage": stage, "llm": llm}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return _write_release(tmp_path_factory.mktemp("gama_release"))


def test_loads_every_official_key_and_merges_lora(release: dict[str, object]) -> None:
    cfg = release["cfg"]
    ref, report = load_gama(release["base"], release["ckpt"], audio_config=cfg.audio)
    stage, llm = release["stage"], release["llm"]
    params = ref.state_dict()
    # Every audio tensor equals the stage checkpoint's (which overrides the base shard's zeros).
    n_audio = 0
    for key, tensor in stage.items():
        name = key.removeprefix(STAGE_PREFIX)
        if _LORA_RE.match(name) or name.endswith("position_ids"):
            continue
        torch.testing.assert_close(params["model." + rename_audio_key(name)], tensor.float(), rtol=0, atol=0)
        n_audio += 1
    assert n_audio == report.loaded_audio
    assert report.overridden_by_stage > 0
    # LoRA: W = W0 + (alpha/r) * B @ A, computed here independently.
    for i in range(cfg.llama["num_hidden_layers"]):
        for p in "qv":
            a = stage[f"{STAGE_PREFIX}layers.{i}.self_attn.{p}_proj.lora_A.default.weight"]
            b = stage[f"{STAGE_PREFIX}layers.{i}.self_attn.{p}_proj.lora_B.default.weight"]
            w0 = llm[f"model.layers.{i}.self_attn.{p}_proj.weight"].float()
            got = params[f"llm.model.layers.{i}.self_attn.{p}_proj.weight"]
            torch.testing.assert_close(got, w0 + (16.0 / LORA_R) * (b @ a), rtol=1e-6, atol=1e-6)
        # k_proj is untouched by LoRA
        torch.testing.assert_close(params[f"llm.model.layers.{i}.self_attn.k_proj.weight"],
                                   llm[f"model.layers.{i}.self_attn.k_proj.weight"].float())
    assert report.lora_scaling == pytest.approx(2.0)
    assert len(report.lora_merged) == 2 * cfg.llama["num_hidden_layers"]
    assert any("position_ids" in k for k in report.ignored)
    assert any("inv_freq" in k for k in report.ignored)
    with torch.no_grad():
        out = ref.model(torch.randn(1, 1024, 128))
    assert out.shape == (1, 96, cfg.hidden_size) and torch.isfinite(out).all()


def test_infers_audio_sizes_from_shapes(release: dict[str, object]) -> None:
    ref, _ = load_gama(release["base"], release["ckpt"])  # no audio_config: inferred
    cfg = release["cfg"].audio
    got = ref.cfg.audio
    assert (got.embed_dim, got.depth_a, got.depth_u, got.qformer_layers, got.num_query_tokens,
            got.mlp_dim, got.cross_attention_frequency) == (
        cfg.embed_dim, cfg.depth_a, cfg.depth_u, cfg.qformer_layers, cfg.num_query_tokens,
        cfg.mlp_dim, cfg.cross_attention_frequency)


def _rewrite_stage(release: dict[str, object], tmp_path: Path, edit: object) -> Path:
    stage = dict(release["stage"])
    edit(stage)
    path = tmp_path / "pytorch_model.bin"
    torch.save(stage, str(path))
    return path


def test_unexpected_key_fails_with_its_name(release: dict[str, object], tmp_path: Path) -> None:
    ckpt = _rewrite_stage(release, tmp_path, lambda s: s.__setitem__(
        STAGE_PREFIX + "audio_encoder.soft_prompt", torch.zeros(3)))
    with pytest.raises(CheckpointMismatchError, match="soft_prompt"):
        load_gama(release["base"], ckpt, audio_config=release["cfg"].audio)
    ckpt = _rewrite_stage(release, tmp_path, lambda s: s.__setitem__("model.extra.weight", torch.zeros(3)))
    with pytest.raises(CheckpointMismatchError, match="stage:model.extra.weight"):
        load_gama(release["base"], ckpt, audio_config=release["cfg"].audio)


def test_missing_key_fails_with_its_name(release: dict[str, object], tmp_path: Path) -> None:
    key = STAGE_PREFIX + "Qformer.bert.encoder.layer.1.output_query.dense.weight"
    ckpt = _rewrite_stage(release, tmp_path, lambda s: s.pop(key))
    with pytest.raises(CheckpointMismatchError, match=r"layer\.1\.output_query\.dense\.weight"):
        load_gama(release["base"], ckpt, audio_config=release["cfg"].audio)


def test_unpaired_lora_and_bad_shapes_fail(release: dict[str, object], tmp_path: Path) -> None:
    key = STAGE_PREFIX + "layers.1.self_attn.v_proj.lora_B.default.weight"
    ckpt = _rewrite_stage(release, tmp_path, lambda s: s.pop(key))
    with pytest.raises(CheckpointMismatchError, match="without their partner"):
        load_gama(release["base"], ckpt, audio_config=release["cfg"].audio)
    key = STAGE_PREFIX + "audio_proj_qformer.0.weight"
    ckpt = _rewrite_stage(release, tmp_path, lambda s: s.__setitem__(key, torch.zeros(5, 5)))
    with pytest.raises(CheckpointMismatchError, match="audio_proj_qformer.0.weight"):
        load_gama(release["base"], ckpt, audio_config=release["cfg"].audio)


def test_missing_and_damaged_files(release: dict[str, object], tmp_path: Path) -> None:
    with pytest.raises(SourceModelError, match="config.json"):
        load_gama(tmp_path, release["ckpt"])
    with pytest.raises(SourceModelError, match="not found"):
        load_gama(release["base"], tmp_path / "nope.bin")
    broken = tmp_path / "broken.bin"
    broken.write_bytes(Path(release["ckpt"]).read_bytes()[:1000])
    with pytest.raises(SourceModelError, match="cannot read"):
        load_gama(release["base"], broken)
