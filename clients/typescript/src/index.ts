/**
 * `@ostinato/client`: TypeScript client of the ostinato service.
 *
 * @module
 */

export { Wav2Vec2FeatureAdapter } from "./adapter.js";
export type { AdapterOptions, ModelInfo, RetryOptions } from "./adapter.js";
export { CircuitBreaker, DEFAULT_BREAKER_CONFIG, breakerConfig } from "./breaker.js";
export type { BreakerConfig, BreakerListener, BreakerState } from "./breaker.js";
export { DROPOUT_PARAMETERS, PROVIDERS, validateModelConfig, validateStreamingOptions } from "./config.js";
export type { DropoutParameter, ModelConfig, Provider, StreamingOptions } from "./config.js";
export {
  BreakerOpenError,
  ConfigError,
  ConnectionLostError,
  DisposedError,
  InputError,
  OstinatoError,
  ProtocolError,
  RequestTimeoutError,
  ServerError,
  StateError,
  classifyError,
  errorFromWire,
} from "./errors.js";
export type { AdapterEventName, AdapterEvents, BreakerEvent, ConnectionEvent, MatchEvent, NoveltyEvent, StatusEvent } from "./events.js";
export { framesEmitted, geometryFromChunkOverlap, numFrames, replayStartFrame } from "./geometry.js";
export type { WindowGeometry } from "./geometry.js";
export { DEFAULT_RETRY_POLICY, backoffDelayMs, retry, retryPolicy } from "./retry.js";
export type { RetryPolicy } from "./retry.js";
export type { SocketFactory, SocketLike } from "./socket.js";
export type { ChunkResult, FeatureFrames, StopResult } from "./stream.js";
export { decodeWav } from "./wav.js";
export type { WavAudio } from "./wav.js";
export * as wire from "./wire.js";
