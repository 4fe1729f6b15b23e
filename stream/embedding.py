"""Fixed-size pattern embeddings for the pattern library (sans-IO).

A pattern of any length becomes one vector computed from its raw frames alone (no stream
context, so a clip cut from a recording embeds like the pattern it contains): the frames are
gated and normalised with the clip's own statistics (the matcher's frame space), the active
ones are split into ``EMBEDDING_PARTS`` equal stretches, and the stretch means are
concatenated and L2-normalised — a coarse picture of how the sound evolves. The live stage
embeds each match this way from the raw frames of the occurrence just heard, and
``ostinato library query clip.wav`` embeds the clip the same way.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ostinato.stream.matcher_config import MatcherConfig

__all__ = [
    "FeatureSpaceMismatch",
    "clip_embedding",
    "clip_frame_dim",
    "embedding_dim",
    "model_output_for",
    "pattern_feature_name",
    "pool_frames",
    "query_embedding",
]


def pattern_feature_name(features: str, frame_dim: int) -> str:
    """Name of the embedding space stored with library patterns, e.g. ``logmel/d39``.

    Patterns and queries are comparable only when this name matches.
    """
    return f"{features}/d{frame_dim}"


#: Stretches whose means make up an embedding.
EMBEDDING_PARTS = 4


def embedding_dim(frame_dim: int) -> int:
    """Library vector dimension for normalised frames of ``frame_dim``."""
    return EMBEDDING_PARTS * frame_dim


def pool_frames(unit_frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Means of ``EMBEDDING_PARTS`` equal stretches of ``[T, d]`` unit frames, concatenated
    and L2-normalised (``[EMBEDDING_PARTS * d]``)."""
    x = np.asarray(unit_frames, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"unit_frames has shape {x.shape}; expected [T >= 1, d]")
    parts = np.array_split(np.arange(x.shape[0]), EMBEDDING_PARTS)
    vec = np.concatenate([x[p].mean(axis=0) if p.size else np.zeros(x.shape[1], np.float32) for p in parts])
    norm = float(np.linalg.norm(vec))
    return (vec / norm if norm > 1e-9 else vec).astype(np.float32)


def clip_embedding(
    frames: npt.NDArray[np.float32],
    energy_db: npt.NDArray[np.float32] | None,
    config: MatcherConfig | None = None,
) -> npt.NDArray[np.float32]:
    """Library embedding of a whole clip's raw frames.

    Raises:
        ValueError: The clip has no active frame (silence) or bad shapes.
    """
    c = config if config is not None else MatcherConfig()
    x = np.asarray(frames, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"frames has shape {x.shape}; expected [T >= 1, H]")
    active = c.activity_gate().update(energy_db) if energy_db is not None else np.ones(x.shape[0], bool)
    if not active.any():
        raise ValueError("the clip has no frame above the silence gate; nothing to embed")
    unit = c.frame_normalizer(x.shape[1]).normalize(x, active)  # one block: the clip's own statistics
    return pool_frames(unit[active])


def clip_frame_dim(input_dim: int, config: MatcherConfig) -> int:
    """Dimension of the matcher's normalised frames for raw frames of ``input_dim``."""
    return config.frame_normalizer(input_dim).dim


def model_output_for(features: str) -> str | None:
    """The model output a feature kind reads: ``wav2vec2:6`` → ``hidden_state_6``; ``wav2vec2`` → ``None``
    (the model's default output)."""
    layer = features.partition(":")[2]
    return f"hidden_state_{int(layer)}" if layer else None


class FeatureSpaceMismatch(ValueError):
    """A clip embeds in another space than the library's (``name`` vs ``library_feature``)."""

    def __init__(self, name: str, library_feature: str) -> None:
        super().__init__(f"clip embeds as {name!r}; the library holds {library_feature!r}")
        self.name = name
        self.library_feature = library_feature


def query_embedding(
    frames: npt.NDArray[np.float32], energy_db: npt.NDArray[np.float32], library_feature: str
) -> npt.NDArray[np.float32]:
    """Query-by-example: a clip's library embedding in the space ``library_feature`` names
    (``logmel/d78``, ``wav2vec2:6/d768``…), from its raw frames and log-mel energy.

    Raises:
        FeatureSpaceMismatch: The frames embed in another space (e.g. another model or layer).
        ValueError: Nothing to embed (silence) or bad shapes.
    """
    features = library_feature.rsplit("/", 1)[0]
    config = MatcherConfig.for_features(features)
    name = pattern_feature_name(features, clip_frame_dim(frames.shape[1], config))
    if name != library_feature:
        raise FeatureSpaceMismatch(name, library_feature)
    return clip_embedding(frames, energy_db[: frames.shape[0]], config)

