"""Frame features with exact sample positions: the unit every model and matcher exchanges."""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

__all__ = ["Features", "num_frames", "frame_starts"]


def num_frames(n_samples: int, receptive_field_samples: int = 400, stride_samples: int = 320) -> int:
    """Frames a convolutional front end emits for ``n_samples`` of audio.

    ``floor((n - receptive_field) / stride) + 1``, or 0 when the input is shorter than one
    receptive field.
    """
    if n_samples < receptive_field_samples:
        return 0
    return (n_samples - receptive_field_samples) // stride_samples + 1


def frame_starts(first_frame: int, count: int, stride_samples: int = 320) -> npt.NDArray[np.int64]:
    """Start sample of frames ``first_frame … first_frame+count-1``."""
    return (np.arange(first_frame, first_frame + count, dtype=np.int64)) * stride_samples


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Features:
    """A block of consecutive frames.

    Args:
        frames: ``[T, H]`` float32 frame vectors.
        start_samples: ``[T]`` int64 start sample of each frame in the stream (frame ``i`` of
            a stream starts at ``stride * i``).
        sample_rate: Sample rate the positions refer to (Hz).
        output: Which model output (or feature kind) the frames come from.
        stream: Stream identifier ("" offline).
    """

    frames: npt.NDArray[np.float32]
    start_samples: npt.NDArray[np.int64]
    sample_rate: int = 16000
    output: str = ""
    stream: str = ""

    def __post_init__(self) -> None:
        if self.frames.ndim != 2:
            raise ValueError(f"frames has shape {self.frames.shape}; expected [T, H]")
        if self.start_samples.shape != (self.frames.shape[0],):
            raise ValueError(
                f"start_samples has shape {self.start_samples.shape}; expected "
                f"({self.frames.shape[0]},) to match frames"
            )

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def start_s(self) -> npt.NDArray[np.float64]:
        """Frame start times in seconds."""
        return self.start_samples / float(self.sample_rate)
