"""The items that flow through a pipeline: audio chunks, windows, frame features.

All positions are sample indices at the pipeline rate (16 kHz), converted to seconds only
at the edges. The dataclasses are frozen and slotted; their arrays are not copied on
construction, so producers hand over arrays they no longer write to.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from ostinato.runtime.features import Features

__all__ = ["AudioChunk", "StreamEnd", "StreamFeatures", "Window", "WindowTiming"]


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class AudioChunk:
    """A block of mono float32 audio from one stream.

    Args:
        stream_id: Which stream the audio belongs to.
        start_sample: Index of the first sample in the stream (at ``sample_rate``).
        samples: Mono float32 samples, shape ``[n]``.
        sample_rate: Samples per second of ``samples``.
        received_s: ``time.monotonic()`` when the source got the audio (0.0 if unknown);
            used for end-to-end latency.
    """

    stream_id: str
    start_sample: int
    samples: npt.NDArray[np.float32]
    sample_rate: int = 16000
    received_s: float = 0.0

    @property
    def end_sample(self) -> int:
        """One past the last sample index."""
        return self.start_sample + int(self.samples.shape[0])

    @property
    def num_samples(self) -> int:
        """Number of samples in the chunk."""
        return int(self.samples.shape[0])


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Window:
    """A fixed-shape model input cut by :class:`~ostinato.stream.windowing.Windower`.

    The window covers samples ``[start_sample, start_sample + len(samples))`` of its stream.
    Only its *core* frames, ``[core_start_frame, core_start_frame + core_frames)``
    (global frame indices; frame ``i`` starts at sample ``320 * i``), are emitted; the other
    frames are context and are trimmed after inference.

    Args:
        stream_id: Which stream the window belongs to.
        index: 0-based window number within the stream.
        start_sample: Stream sample index of ``samples[0]`` (a multiple of the frame stride).
        samples: Float32 model input, shape ``[n]``.
        core_start_frame: Global index of the first frame to emit.
        core_frames: Number of frames to emit (may be 0 only for an empty flush).
        ready_s: ``time.monotonic()`` when the window became complete (0.0 if unknown).
        received_s: When the newest audio in the window was received (0.0 if unknown).
        last: True for the final window of a stream.
    """

    stream_id: str
    index: int
    start_sample: int
    samples: npt.NDArray[np.float32]
    core_start_frame: int
    core_frames: int
    ready_s: float = 0.0
    received_s: float = 0.0
    last: bool = False

    @property
    def num_samples(self) -> int:
        """Window length in samples."""
        return int(self.samples.shape[0])


@dataclasses.dataclass(frozen=True, slots=True)
class WindowTiming:
    """Where the time of one window went, in seconds.

    Args:
        queue_wait_s: From ``Window.ready_s`` until its batch started running.
        inference_s: Model run time of the whole batch the window was in.
        post_s: Trimming and packaging after the model run (whole batch).
        batch_size: Number of windows in the batch.
        latency_s: From ``Window.ready_s`` until the features were emitted.
        since_received_s: From the arrival of the newest audio in the window (the source's
            ``received_s``) until emission: the processing part of end-to-end latency
            (0.0 when the source gave no arrival time).
    """

    queue_wait_s: float
    inference_s: float
    post_s: float
    batch_size: int
    latency_s: float
    since_received_s: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class StreamFeatures:
    """Frame features of one window of one stream, trimmed to its core frames.

    Args:
        stream_id: Which stream.
        window_index: The window they came from.
        frames: Float32 features, shape ``[T, H]``.
        start_samples: Stream sample index where each frame starts, int64 ``[T]``
            (``320 * frame_index``), identical to offline processing of the whole stream.
        sample_rate: Rate the sample indices refer to.
        output: Model output name the frames come from.
        timing: Timing breakdown of the window.
        last: True for the final features of a stream.
        frame_stride_samples: Samples between frame starts (320 for Wav2Vec2).
    """

    stream_id: str
    window_index: int
    frames: npt.NDArray[np.float32]
    start_samples: npt.NDArray[np.int64]
    sample_rate: int
    output: str
    timing: WindowTiming
    last: bool = False
    frame_stride_samples: int = 320

    @property
    def first_frame(self) -> int:
        """Global index of the first frame (its start sample / stride)."""
        return int(self.start_samples[0]) // self.frame_stride_samples if self.num_frames else 0

    @property
    def num_frames(self) -> int:
        """Number of frames."""
        return int(self.frames.shape[0])

    @property
    def start_s(self) -> float:
        """Start of the first frame in seconds (0.0 when empty)."""
        return float(self.start_samples[0]) / self.sample_rate if self.num_frames else 0.0

    def to_features(self) -> Features:
        """The same frames as a runtime :class:`~ostinato.runtime.Features` (stream set)."""
        return Features(self.frames, self.start_samples, self.sample_rate, self.output, self.stream_id)


@dataclasses.dataclass(frozen=True, slots=True)
class StreamEnd:
    """Marks the end of one stream; travels behind its last window / features, in order.

    Args:
        stream_id: Which stream ended.
        samples: Samples the stream delivered (at the pipeline rate).
        error: Why the stream ended early (``""`` for a normal end).
        error_class: Class of that error (``""`` for a normal end).
    """

    stream_id: str
    samples: int = 0
    error: str = ""
    error_class: str = ""
