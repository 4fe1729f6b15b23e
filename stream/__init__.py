"""Live streaming: sources, bounded channels, windowing, inference stage, matcher, sinks."""

from ostinato.stream.errors import ErrorClass, StreamError

__all__ = ["ErrorClass", "StreamError"]
