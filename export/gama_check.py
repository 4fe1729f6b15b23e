"""Validation of a GAMA export against its PyTorch reference; figures go to the manifest.

Three checks, each failing with :class:`ToleranceError`/:class:`ShapeMismatchError`:

1. audio branch on two inputs (fbank of synthetic audio, random fbank batch 2);
2. decoder prefill (logits at every position + every present key/value) and one cached step;
3. greedy generation, token for token, ONNX (runtime loop) vs ``transformers.generate``.

fp32 graphs are held to ``max|onnx - torch| <= 1e-4 · max(1, max|torch|)``; weight-quantized
graphs to a minimum cosine similarity (per audio token / per logits row), and their greedy
agreement is recorded, not enforced (quantized greedy paths may diverge on ties).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import torch

from ostinato.export.errors import ShapeMismatchError, ToleranceError
from ostinato.export.gama_model import GamaReference, format_prompt
from ostinato.export.gama_onnx import AUDIO_INPUT, AUDIO_OUTPUT, past_names, present_names
from ostinato.runtime.fbank import gama_features
from ostinato.runtime.generate import DecoderSpec, GenerationConfig, generate_tokens
from ostinato.runtime.tokenizer import Tokenizer

__all__ = ["MIN_COSINE", "REL_TOL_FP32", "validate_export"]

logger = logging.getLogger(__name__)

REL_TOL_FP32 = 1e-4
# Floors, not targets. Random Gaussian weights are a worst case for round-to-nearest 4-bit
# blocks: last-position logits cosine 0.95 (8 layers) and ~0.83 (16 layers, 1B) were measured
# on random Llama decoders, where int8 gives 0.998+ (bench/RESULTS.md).
MIN_COSINE = {"int8-audio": 0.9, "int8": 0.99, "int4": 0.8}
_INSTRUCTION = "Describe the audio."


def _synthetic_audio(seed: int) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    t = np.arange(6 * 16000) / 16000  # 6 s: exercises the padding to 1024 frames
    return 0.4 * np.sin(2 * np.pi * (200 * t + 150 * t**2)) + 0.02 * rng.standard_normal(t.size)


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _compare(name: str, got: npt.NDArray[Any], ref: npt.NDArray[Any], precision: str, axis_rows: int = -1
             ) -> dict[str, float]:
    if got.shape != ref.shape:
        raise ShapeMismatchError(f"{name}: ONNX shape {got.shape} vs PyTorch {ref.shape}")
    diff = float(np.abs(got.astype(np.float64) - ref).max())
    a = got.reshape(-1, got.shape[axis_rows]).astype(np.float64)
    b = ref.reshape(-1, ref.shape[axis_rows]).astype(np.float64)
    cos = float(np.min((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)))
    out = {"max_abs_diff": diff, "min_cosine": cos}
    if precision == "fp32":
        tol = REL_TOL_FP32 * max(1.0, float(np.abs(ref).max()))
        out["atol"] = tol
        if not diff <= tol:
            raise ToleranceError(f"{name}: max |onnx - torch| = {diff:.3g} > {tol:.3g}")
    else:
        need = MIN_COSINE[precision]
        out["required_min_cosine"] = need
        if not cos >= need:
            raise ToleranceError(f"{name} ({precision}): min cosine {cos:.4f} < {need}")
    return out


def _check_audio(ref: GamaReference, audio_path: Path, precision: str, seed: int
                 ) -> tuple[dict[str, Any], npt.NDArray[np.float32]]:
    sess = _session(audio_path)
    real = gama_features(_synthetic_audio(seed))[None]
    noise = np.random.default_rng(seed).standard_normal((2, *real.shape[1:])).astype(np.float32)
    results: dict[str, Any] = {}
    onnx_real: npt.NDArray[np.float32] = np.zeros(0, np.float32)
    key = "int8-audio" if precision == "int8" else "fp32"
    for case, x in (("synthetic-audio-b1", real), ("random-fbank-b2", noise)):
        got = sess.run([AUDIO_OUTPUT], {AUDIO_INPUT: x})[0]
        with torch.no_grad():
            want = ref.model(torch.from_numpy(x)).numpy()
        results[case] = _compare(f"audio branch [{case}]", got, want, key)
        if case == "synthetic-audio-b1":
            onnx_real = got
    return results, onnx_real


def _spec(ref: GamaReference) -> DecoderSpec:
    cfg = ref.llm.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return DecoderSpec(num_layers=cfg.num_hidden_layers, kv_heads=cfg.num_key_value_heads,
                       head_dim=int(head_dim), max_positions=cfg.max_position_embeddings)


def _check_decoder(ref: GamaReference, sess: ort.InferenceSession, embeds: torch.Tensor, precision: str
                   ) -> dict[str, Any]:
    spec = _spec(ref)
    layers = spec.num_layers
    n = embeds.shape[1]
    feeds = {"inputs_embeds": embeds.numpy(), "attention_mask": np.ones((1, n), np.int64),
             "position_ids": np.arange(n, dtype=np.int64)[None], **spec.empty_past()}
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))
    with torch.no_grad():
        out = ref.llm(inputs_embeds=embeds, use_cache=True)
    want_past = out.past_key_values.to_legacy_cache()
    res: dict[str, Any] = {"prefill_logits": _compare("decoder prefill logits", got["logits"], out.logits.numpy(),
                                                      "fp32" if precision == "fp32" else precision)}
    if precision == "fp32":
        diffs = [float(np.abs(got[name] - want_past[i // 2][i % 2].numpy()).max())
                 for i, name in enumerate(present_names(layers))]
        res["prefill_present_max_abs_diff"] = max(diffs)
        tol = REL_TOL_FP32 * max(1.0, max(float(t.abs().max()) for kv in want_past for t in kv))
        if max(diffs) > tol:
            raise ToleranceError(f"decoder present key/values: max diff {max(diffs):.3g} > {tol:.3g}")
    token = int(out.logits[0, -1].argmax())
    step = ref.llm.get_input_embeddings().weight[token][None, None].detach()
    feeds = {"inputs_embeds": step.numpy(), "attention_mask": np.ones((1, n + 1), np.int64),
             "position_ids": np.array([[n]], np.int64),
             **{p: got[q] for p, q in zip(past_names(layers), present_names(layers), strict=True)}}
    step_got = sess.run(["logits"], feeds)[0]
    with torch.no_grad():
        step_want = ref.llm(inputs_embeds=step, past_key_values=out.past_key_values, use_cache=True,
                            position_ids=torch.tensor([[n]])).logits.numpy()
    res["step_logits"] = _compare("decoder cached step logits", step_got, step_want,
                                  "fp32" if precision == "fp32" else precision)
    return res


def _check_greedy(ref: GamaReference, sess: ort.InferenceSession, onnx_audio: npt.NDArray[np.float32],
                  fbank: torch.Tensor, ids: list[int], embed_table: npt.NDArray[np.float32],
                  tokens: int, precision: str) -> dict[str, Any]:
    want = ref.generate_greedy(fbank, torch.tensor([ids]), tokens)
    prompt = embed_table[np.asarray(ids)][None]
    prefill = np.concatenate([onnx_audio, prompt], axis=1).astype(np.float32)
    names = [o.name for o in sess.get_outputs()]

    def run(feeds: dict[str, Any]) -> dict[str, Any]:
        return dict(zip(names, sess.run(None, feeds), strict=True))

    eos = int(ref.llm.config.eos_token_id or 2)
    got = list(generate_tokens(run, _spec(ref), prefill, embed_table, ids,
                               GenerationConfig(max_new_tokens=tokens, temperature=0.0), stop_ids=(eos,)))
    want = [t for t in want if t != eos] if eos in want[-1:] else want
    agree = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
    res = {"tokens_onnx": got, "tokens_torch": want, "agreeing_prefix": agree}
    if precision == "fp32" and got != want:
        raise ToleranceError(f"greedy generation differs: ONNX {got} vs PyTorch {want}")
    return res


def validate_export(ref: GamaReference, out_dir: Path, fp32_dir: Path, audio_precision: str,
                    decoder_precision: str, seed: int, greedy_tokens: int) -> dict[str, Any]:
    """Run every check on the graphs in ``out_dir``; return the figures for the manifest."""
    del fp32_dir  # the quantized graphs are compared with PyTorch directly, not with fp32 ONNX
    audio_res, onnx_audio = _check_audio(ref, out_dir / "audio_branch.onnx", audio_precision, seed)
    tok = Tokenizer.from_file(out_dir / "tokenizer.json")
    ids = tok.encode(format_prompt(_INSTRUCTION))
    fbank = torch.from_numpy(gama_features(_synthetic_audio(seed))[None])
    with torch.no_grad():
        embeds = ref.prefill_embeds(fbank, torch.tensor([ids]))
    sess = _session(out_dir / "decoder.onnx")
    decoder_res = _check_decoder(ref, sess, embeds, decoder_precision)
    table = np.load(out_dir / "embed_tokens.npy", mmap_mode="r")
    greedy = _check_greedy(ref, sess, onnx_audio, fbank, ids, table, greedy_tokens, decoder_precision)
    logger.info("GAMA validation passed: audio %s, decoder %s", audio_res, decoder_res)
    return {"validated": True, "audio_precision": audio_precision, "decoder_precision": decoder_precision,
            "rel_tol_fp32": REL_TOL_FP32, "audio_branch": audio_res, "decoder": decoder_res, "greedy": greedy,
            "prompt_tokens": len(ids)}
