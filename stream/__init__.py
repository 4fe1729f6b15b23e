"""Live streaming: sources, bounded channels, windowing, inference stage, matcher, sinks.

``MicSource`` is imported lazily (module ``__getattr__``): it needs sounddevice/PortAudio,
which only microphone users install.
"""

from typing import Any

from ostinato.stream.breaker import BreakerConfig, BreakerState, CircuitBreaker
from ostinato.stream.channel import OVERFLOW_POLICIES, Channel, OverflowPolicy
from ostinato.stream.errors import ErrorClass, StreamError, classify_error
from ostinato.stream.events import EventLog, MatchEvent, NoveltyEvent
from ostinato.stream.frames import AudioChunk, StreamEnd, StreamFeatures, Window, WindowTiming
from ostinato.stream.health import HealthConfig, HealthMonitor, HealthState, StageHealth
from ostinato.stream.infer import InferenceConfig, InferenceStage
from ostinato.stream.library import LibraryConfig, PatternLibrary
from ostinato.stream.matcher import FeatureBlock, MatcherConfig, PatternMatcher
from ostinato.stream.matcher_stage import MatcherStage, MatcherStageConfig
from ostinato.stream.metrics import StreamMetrics
from ostinato.stream.pipeline import FeatureConsumer, Pipeline, PipelineConfig, PipelineStatus
from ostinato.stream.resample import StreamResampler
from ostinato.stream.retry import RetryPolicy, retry_call
from ostinato.stream.sinks import CallbackSink, JsonlSummarySink, MsgpackFileSink, NpyFileSink, read_msgpack_features
from ostinato.stream.source_file import FileSource
from ostinato.stream.source_net import NetSource, NetSourceConfig
from ostinato.stream.source_stdin import StdinSource
from ostinato.stream.sources import ArraySource, Source, open_source
from ostinato.stream.summary import RunSummary
from ostinato.stream.windowing import Windower, WindowerConfig

__all__ = [
    "OVERFLOW_POLICIES",
    "ArraySource",
    "AudioChunk",
    "BreakerConfig",
    "BreakerState",
    "CallbackSink",
    "Channel",
    "CircuitBreaker",
    "ErrorClass",
    "EventLog",
    "FeatureBlock",
    "FeatureConsumer",
    "FileSource",
    "HealthConfig",
    "HealthMonitor",
    "HealthState",
    "InferenceConfig",
    "InferenceStage",
    "JsonlSummarySink",
    "LibraryConfig",
    "MatchEvent",
    "MatcherConfig",
    "MatcherStage",
    "MatcherStageConfig",
    "MicSource",
    "MsgpackFileSink",
    "NetSource",
    "NetSourceConfig",
    "NoveltyEvent",
    "NpyFileSink",
    "OverflowPolicy",
    "PatternLibrary",
    "PatternMatcher",
    "Pipeline",
    "PipelineConfig",
    "PipelineStatus",
    "RetryPolicy",
    "RunSummary",
    "Source",
    "StageHealth",
    "StdinSource",
    "StreamEnd",
    "StreamError",
    "StreamFeatures",
    "StreamMetrics",
    "StreamResampler",
    "Window",
    "WindowTiming",
    "Windower",
    "WindowerConfig",
    "classify_error",
    "open_source",
    "read_msgpack_features",
    "retry_call",
]


def __getattr__(name: str) -> Any:
    if name == "MicSource":
        from ostinato.stream.source_mic import MicSource

        return MicSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
