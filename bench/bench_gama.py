"""GAMA on ONNX Runtime vs PyTorch eager, both units, in one run (random weights).

1. Audio branch at full size (CAV-MAE base + aggregator + Q-Former + projectors to H):
   fbank ``[1,1024,128]`` → ``[1,96,H]``; PyTorch eager fp32 vs ORT fp32 and ORT int8.
2. Decoder: a ~1B-parameter random Llama (16 layers, hidden 2048, vocab 32000; 7B does not fit
   in this machine's memory for export), prefill of 96 audio + ~34 prompt positions, then
   per-token latency with the KV cache; PyTorch eager fp32 (sdpa) vs ORT int4 and int8
   (``MatMulNBits``, accuracy level 4), optionally ORT fp32.

Prints one JSON line per measurement and a markdown table with ratios (PyTorch time / ORT
time) measured in this run. Memory: RSS growth when each engine loads its weights, and the
size of the files. ``--quick`` uses tiny sizes (a smoke test of the script, not a benchmark).

    nice python bench/bench_gama.py --threads 2 > bench/gama.jsonl
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _timed(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"p50_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def _emit(record: dict[str, Any]) -> dict[str, Any]:
    print(json.dumps(record), flush=True)
    return record


def _ort(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def bench_audio(cfg: Any, tmp: Path, threads: int, repeats: int) -> list[dict[str, Any]]:
    import torch

    from ostinato.export.gama_model import GamaAudioModel
    from ostinato.export.gama_onnx import export_audio_branch, optimize_audio_graph, quantize_audio_int8

    torch.manual_seed(0)
    audio = GamaAudioModel(cfg.audio, cfg.hidden_size).eval()  # audio side only: no 7B decoder
    with torch.no_grad():
        for p in (audio.audio_encoder.pos_embed_a, audio.audio_encoder.modality_a, audio.query_tokens):
            p.normal_(0.0, 0.02)
    x = torch.randn(1, cfg.audio.target_frames, cfg.audio.num_mel_bins)
    export_audio_branch(audio, tmp / "audio.onnx", 17)
    quantize_audio_int8(tmp / "audio.onnx", tmp / "audio_int8.onnx")
    optimize_audio_graph(tmp / "audio.onnx", tmp / "audio_fused.onnx")
    out = []
    with torch.inference_mode():
        want = audio(x).numpy()
        t = _timed(lambda: audio(x), repeats)
    n_params = sum(p.numel() for p in audio.parameters())
    out.append(_emit({"unit": "audio", "engine": "pytorch-eager-fp32", **t, "params": n_params}))
    engines = (("ort-fp32", tmp / "audio.onnx"), ("ort-fp32-fused (exported)", tmp / "audio_fused.onnx"),
               ("ort-int8 (exported)", tmp / "audio_int8.onnx"))
    for name, path in engines:
        before = _rss_bytes()
        sess = _ort(path, threads)
        grew = _rss_bytes() - before
        got = sess.run(None, {"fbank": x.numpy()})[0]
        cos = float((got * want).sum() / (np.linalg.norm(got) * np.linalg.norm(want)))
        t = _timed(lambda s=sess: s.run(None, {"fbank": x.numpy()}), repeats)
        out.append(_emit({"unit": "audio", "engine": name, **t, "cosine_vs_torch": cos,
                          "rss_growth_bytes": grew, "file_bytes": _size(path)}))
        del sess
    return out


def _decoder_feeds(spec: Any, embeds: np.ndarray, past: dict[str, np.ndarray] | None, start: int) -> dict[str, Any]:
    total = start + embeds.shape[1]
    return {"inputs_embeds": embeds, "attention_mask": np.ones((1, total), np.int64),
            "position_ids": np.arange(start, total, dtype=np.int64)[None], **(past or spec.empty_past())}


def _ort_decoder_run(sess: Any, spec: Any, prefill: np.ndarray, step: np.ndarray, tokens: int
                     ) -> tuple[dict[str, float], dict[str, float], np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    state: dict[str, Any] = {}

    def do_prefill() -> None:
        out = dict(zip(names, sess.run(None, _decoder_feeds(spec, prefill, None, 0)), strict=True))
        state["past"] = {p: out[q] for p, q in zip(spec.past_names, spec.present_names, strict=True)}
        state["logits"] = out["logits"][0, -1]

    def do_steps() -> None:
        past, pos = state["past"], prefill.shape[1]
        for _ in range(tokens):
            out = dict(zip(names, sess.run(None, _decoder_feeds(spec, step, past, pos)), strict=True))
            past = {p: out[q] for p, q in zip(spec.past_names, spec.present_names, strict=True)}
            pos += 1

    pre = _timed(do_prefill, repeats=2)
    steps = _timed(do_steps, repeats=1)
    return pre, {"per_token_s": steps["p50_s"] / tokens}, state["logits"]


def bench_decoder(cfg: Any, tmp: Path, threads: int, tokens: int, with_fp32: bool) -> list[dict[str, Any]]:
    import torch

    from ostinato.export.gama_onnx import export_decoder, quantize_decoder_nbits
    from ostinato.runtime.generate import DecoderSpec
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    llm = LlamaForCausalLM(cfg.llama_config()).eval()
    n_params = sum(p.numel() for p in llm.parameters())
    export_decoder(llm, tmp / "decoder.onnx", 17)
    gc.collect()
    quant = {}
    for bits in (4, 8):
        quantize_decoder_nbits(tmp / "decoder.onnx", tmp / f"decoder_int{bits}.onnx", bits)
        quant[f"ort-int{bits}"] = tmp / f"decoder_int{bits}.onnx"
        gc.collect()
    h = cfg.hidden_size
    rng = np.random.default_rng(0)
    prefill = (rng.standard_normal((1, 96 + 34, h)) * 0.02).astype(np.float32)
    step = (rng.standard_normal((1, 1, h)) * 0.02).astype(np.float32)
    c = llm.config
    spec = DecoderSpec(c.num_hidden_layers, c.num_key_value_heads, c.hidden_size // c.num_attention_heads, 4096)
    out = []
    with torch.inference_mode():
        pt_prefill = torch.from_numpy(prefill)
        state: dict[str, Any] = {}

        def do_prefill() -> None:
            res = llm(inputs_embeds=pt_prefill, use_cache=True)
            state["past"], state["logits"] = res.past_key_values, res.logits[0, -1].numpy()

        def do_steps() -> None:
            past, pos = state["past"], prefill.shape[1]
            for _ in range(tokens):
                past = llm(inputs_embeds=torch.from_numpy(step), past_key_values=past, use_cache=True,
                           position_ids=torch.tensor([[pos]])).past_key_values
                pos += 1

        pre = _timed(do_prefill, repeats=2)
        want = state["logits"]
        steps = _timed(do_steps, repeats=1)
    out.append(_emit({"unit": "decoder", "engine": "pytorch-eager-fp32", "prefill_p50_s": pre["p50_s"],
                      "per_token_s": steps["p50_s"] / tokens, "params": n_params,
                      "prefill_positions": prefill.shape[1], "tokens": tokens}))
    del llm, state
    gc.collect()
    engines = dict(quant)
    if with_fp32:
        engines["ort-fp32"] = tmp / "decoder.onnx"
    for name, path in engines.items():
        before = _rss_bytes()
        sess = _ort(path, threads)
        grew = _rss_bytes() - before
        pre, per_tok, logits = _ort_decoder_run(sess, spec, prefill, step, tokens)
        cos = float((logits * want).sum() / (np.linalg.norm(logits) * np.linalg.norm(want)))
        out.append(_emit({"unit": "decoder", "engine": name, "prefill_p50_s": pre["p50_s"], **per_tok,
                          "cosine_vs_torch_last_logits": cos, "rss_growth_bytes": grew,
                          "file_bytes": _size(path), "tokens": tokens}))
        del sess
        gc.collect()
    return out


def _table(audio: list[dict[str, Any]], decoder: list[dict[str, Any]]) -> str:
    lines = ["| unit | engine | latency | speed-up vs PyTorch eager | cosine vs PyTorch | RSS growth | file |",
             "|---|---|---|---|---|---|---|"]
    base = audio[0]["p50_s"] if audio else 0
    for r in audio:
        ratio = base / r["p50_s"]
        lines.append(f"| audio branch [1,1024,128] | {r['engine']} | {r['p50_s'] * 1000:.0f} ms | {ratio:.2f}x | "
                     f"{r.get('cosine_vs_torch', 1.0):.4f} | {r.get('rss_growth_bytes', 0) / 2**20:.0f} MiB | "
                     f"{r.get('file_bytes', 0) / 2**20:.0f} MiB |")
    if decoder:
        b = decoder[0]
        for r in decoder:
            lines.append(f"| decoder prefill ({b['prefill_positions']} pos) | {r['engine']} | "
                         f"{r['prefill_p50_s'] * 1000:.0f} ms | {b['prefill_p50_s'] / r['prefill_p50_s']:.2f}x | "
                         f"{r.get('cosine_vs_torch_last_logits', 1.0):.4f} | {r.get('rss_growth_bytes', 0) / 2**20:.0f} MiB | "
                         f"{r.get('file_bytes', 0) / 2**20:.0f} MiB |")
        for r in decoder:
            lines.append(f"| decoder per token | {r['engine']} | {r['per_token_s'] * 1000:.0f} ms | "
                         f"{b['per_token_s'] / r['per_token_s']:.2f}x | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="threads for both PyTorch and ORT")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the audio branch")
    parser.add_argument("--tokens", type=int, default=16, help="decode steps timed")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, measures nothing useful")
    parser.add_argument("--skip-audio", action="store_true")
    parser.add_argument("--skip-decoder", action="store_true")
    parser.add_argument("--decoder-fp32", action="store_true", help="also time the ORT fp32 decoder (+4 GiB)")
    args = parser.parse_args(argv)

    import torch

    from ostinato.export.gama_model import preset_config

    torch.set_num_threads(args.threads)
    audio_cfg = preset_config("tiny" if args.quick else "full", vocab_size=400 if args.quick else None)
    decoder_cfg = preset_config("tiny" if args.quick else "1b", vocab_size=400 if args.quick else None)
    _emit({"bench": "gama", "threads": args.threads, "quick": args.quick, "random_weights": True,
           "torch": torch.__version__, "python": sys.version.split()[0]})
    with tempfile.TemporaryDirectory(prefix="bench-gama-") as tmp:
        audio = [] if args.skip_audio else bench_audio(audio_cfg, Path(tmp), args.threads, args.repeats)
        decoder = [] if args.skip_decoder else bench_decoder(decoder_cfg, Path(tmp), args.threads, args.tokens,
                                                             args.decoder_fp32)
    print(_table(audio, decoder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
