"""Token generation over an ONNX decoder with a KV cache: greedy and sampling, one request.

The loop is independent of how the decoder runs: it takes a ``run(feeds) -> outputs``
callable (an ONNX Runtime session in practice) and yields token ids as they are chosen.

Logit processing follows ``transformers``' order so that settings mean the same thing as in
GAMA's scripts: repetition penalty on the text ids so far, then temperature, top-k, top-p
(smallest set whose probability exceeds ``top_p``, at least one token), then a draw.
``temperature == 0`` is greedy (argmax after the repetition penalty).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "DecoderSpec",
    "GenerationConfig",
    "generate_tokens",
    "process_logits",
    "select_token",
]

Feeds = dict[str, npt.NDArray[np.generic]]
RunFn = Callable[[Feeds], dict[str, npt.NDArray[np.generic]]]


@dataclasses.dataclass(frozen=True, slots=True)
class GenerationConfig:
    """Decoding settings. Defaults are GAMA's single-audio/Gradio scripts'.

    Args:
        max_new_tokens: Upper bound on generated tokens (GAMA: 400).
        temperature: Softmax temperature; 0 means greedy decoding (GAMA: 0.1, sampling).
        top_p: Nucleus sampling mass in (0, 1] (GAMA: 0.95).
        top_k: Keep the k most likely tokens; 0 disables (transformers' default 50, which
            GAMA's single-audio script inherits; its batch script uses 500).
        repetition_penalty: >1 discourages ids already in the text (1.0 = off; GAMA's batch
            script uses 1.1).
        seed: Seed of the sampler; ``None`` draws fresh entropy.
    """

    max_new_tokens: int = 400
    temperature: float = 0.1
    top_p: float = 0.95
    top_k: int = 50
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens}; expected >= 1")
        if not (self.temperature >= 0 and np.isfinite(self.temperature)):
            raise ValueError(f"temperature={self.temperature}; expected a finite value >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p}; expected 0 < top_p <= 1")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k}; expected >= 0 (0 disables)")
        if not (self.repetition_penalty > 0 and np.isfinite(self.repetition_penalty)):
            raise ValueError(f"repetition_penalty={self.repetition_penalty}; expected a finite value > 0")

    @property
    def greedy(self) -> bool:
        """Whether decoding is deterministic argmax."""
        return self.temperature == 0


@dataclasses.dataclass(frozen=True, slots=True)
class DecoderSpec:
    """The decoder graph's KV-cache geometry and I/O names (from the manifest)."""

    num_layers: int
    kv_heads: int
    head_dim: int
    max_positions: int

    @property
    def past_names(self) -> list[str]:
        """``past_key_values.{i}.key|value`` inputs."""
        return [f"past_key_values.{i}.{kv}" for i in range(self.num_layers) for kv in ("key", "value")]

    @property
    def present_names(self) -> list[str]:
        """``present.{i}.key|value`` outputs."""
        return [f"present.{i}.{kv}" for i in range(self.num_layers) for kv in ("key", "value")]

    def empty_past(self, batch: int = 1) -> Feeds:
        """Zero-length KV cache for the prefill step."""
        shape = (batch, self.kv_heads, 0, self.head_dim)
        return {name: np.zeros(shape, dtype=np.float32) for name in self.past_names}


def process_logits(
    logits: npt.NDArray[np.floating], history: Sequence[int], cfg: GenerationConfig
) -> npt.NDArray[np.float64]:
    """Apply repetition penalty, temperature, top-k and top-p; filtered entries are -inf."""
    scores = np.asarray(logits, dtype=np.float64).copy()
    if cfg.repetition_penalty != 1.0 and len(history):
        ids = np.unique(np.asarray(history, dtype=np.int64))
        ids = ids[(ids >= 0) & (ids < scores.size)]
        picked = scores[ids]
        scores[ids] = np.where(picked < 0, picked * cfg.repetition_penalty, picked / cfg.repetition_penalty)
    if cfg.greedy:
        return scores
    scores /= cfg.temperature
    if 0 < cfg.top_k < scores.size:
        kth = np.partition(scores, -cfg.top_k)[-cfg.top_k]
        scores[scores < kth] = -np.inf
    if cfg.top_p < 1.0:
        order = np.argsort(scores, kind="stable")  # ascending, as transformers' TopPLogitsWarper
        probs = _softmax(scores[order])
        remove = np.cumsum(probs) <= (1.0 - cfg.top_p)
        remove[-1] = False
        scores[order[remove]] = -np.inf
    return scores


def _softmax(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    finite = np.isfinite(x)
    out = np.zeros_like(x)
    if finite.any():
        shifted = np.exp(x[finite] - x[finite].max())
        out[finite] = shifted / shifted.sum()
    return out


def select_token(
    logits: npt.NDArray[np.floating], history: Sequence[int], cfg: GenerationConfig,
    rng: np.random.Generator,
) -> int:
    """Choose the next token id from one position's logits."""
    scores = process_logits(logits, history, cfg)
    if cfg.greedy:
        return int(np.argmax(scores))
    probs = _softmax(scores)
    return int(rng.choice(probs.size, p=probs))


def generate_tokens(
    run: RunFn,
    spec: DecoderSpec,
    prefill_embeds: npt.NDArray[np.float32],
    embed_table: npt.NDArray[np.floating],
    prompt_ids: Sequence[int],
    cfg: GenerationConfig,
    stop_ids: Sequence[int] = (),
) -> Iterator[int]:
    """Yield generated token ids for one request; stops at a stop id or ``max_new_tokens``.

    Args:
        run: Runs the decoder graph on a feed dict and returns outputs by name.
        spec: KV-cache geometry.
        prefill_embeds: ``[1, N, H]`` float32: audio embeddings followed by the prompt's
            token embeddings (positions 0…N-1, contiguous).
        embed_table: ``[V, H]`` token embedding table (may be memory-mapped).
        prompt_ids: Text ids of the prompt (the repetition penalty's history starts here).
        cfg: Decoding settings.
        stop_ids: Ids that end generation (not yielded), normally EOS.

    The KV cache lives in this generator: one per request, dropped when it finishes.
    """
    if prefill_embeds.ndim != 3 or prefill_embeds.shape[0] != 1:
        raise ValueError(f"prefill_embeds has shape {prefill_embeds.shape}; expected [1, N, H]")
    rng = np.random.default_rng(cfg.seed)
    stops = set(int(s) for s in stop_ids)
    history = [int(t) for t in prompt_ids]
    past = spec.empty_past()
    embeds = np.ascontiguousarray(prefill_embeds, dtype=np.float32)
    start, total = 0, embeds.shape[1]
    budget = min(cfg.max_new_tokens, spec.max_positions - total)
    for _ in range(max(budget, 0)):
        feeds: Feeds = {
            "inputs_embeds": embeds,
            "attention_mask": np.ones((1, total), dtype=np.int64),
            "position_ids": np.arange(start, total, dtype=np.int64)[None, :],
            **past,
        }
        out = run(feeds)
        past = {p: out[q] for p, q in zip(spec.past_names, spec.present_names, strict=True)}
        token = select_token(out["logits"][0, -1], history, cfg, rng)
        if token in stops:
            return
        yield token
        history.append(token)
        embeds = np.asarray(embed_table[token], dtype=np.float32)[None, None, :]
        start, total = total, total + 1
