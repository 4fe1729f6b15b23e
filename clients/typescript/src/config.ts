/**
 * Configurations the adapter accepts, validated locally before anything reaches the network
 * (the server validates again: `ostinato/models.py` is the source of truth, and its 422 answers
 * become {@link ConfigError}s naming the same fields).
 *
 * @module
 */

import { ConfigError } from "./errors.js";
import type { Encoding } from "./wire.js";

/** Training-time hyper-parameters a config may carry: validated in [0, 1), ignored at inference. */
export const DROPOUT_PARAMETERS = [
  "attentionDropout",
  "hiddenDropout",
  "activationDropout",
  "featProjDropout",
  "layerDrop",
  "finalDropout",
] as const;
export type DropoutParameter = (typeof DROPOUT_PARAMETERS)[number];

export const PROVIDERS = ["auto", "cpu", "cuda", "tensorrt"] as const;
export type Provider = (typeof PROVIDERS)[number];

/** What `initialize()` registers on the server (`POST /v1/models`). */
export interface ModelConfig {
  /** Model name in the API (1-64 of A-Z a-z 0-9 . _ -, starting alphanumeric). */
  name: string;
  /** Free version label such as `2.0.0`. */
  version?: string;
  /** Dropout probabilities, each in [0, 1) (ignored at inference: dropout is off). */
  parameters?: Partial<Record<DropoutParameter, number>>;
  /** ONNX Runtime provider on the server (default `auto`). */
  provider?: Provider;
}

/** What `startStreaming()` asks for. */
export interface StreamingOptions {
  /** New audio per model window (hop) in samples at 16 kHz; the server wants a multiple of 320. */
  chunkSize: number;
  /** Samples consecutive windows share; the server wants 80 + a multiple of 320 (e.g. 400). */
  overlap: number;
  /** Chunks in flight (sent, results not yet back) before `processChunk` waits; also the server's queue size. */
  maxQueueSize: number;
  /** Windows the server runs together in one inference call. */
  batchSize: number;
  /** Sample rate of the chunks: 16000 (Wav2Vec2's rate; resample before streaming). */
  sampleRate?: number;
  /** PCM encoding on the wire (`f32le` default; `s16le` halves the bytes, quantizing floats). */
  encoding?: Encoding;
  /** Run the server's recurring-pattern matcher (`match` / `novelty` events); default true. */
  match?: boolean;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const VERSION_RE = /^[0-9]+(\.[0-9]+){0,2}([-+][0-9A-Za-z.-]+)?$/;

/**
 * Check a model config's types and ranges.
 *
 * @returns A normalized copy.
 * @throws {ConfigError} Naming the first bad field (`name`, `parameters.hiddenDropout`…).
 */
export function validateModelConfig(config: unknown): Required<Omit<ModelConfig, "provider">> & Pick<ModelConfig, "provider"> {
  if (!isObject(config)) throw new ConfigError("(config)", `got ${typeName(config)}; expected an object`);
  const allowed = ["name", "version", "parameters", "provider"];
  for (const key of Object.keys(config)) {
    if (!allowed.includes(key)) throw new ConfigError(key, `unknown field; expected one of ${JSON.stringify(allowed)}`);
  }
  const { name, version = "", parameters = {}, provider } = config as Record<string, unknown>;
  if (typeof name !== "string" || !NAME_RE.test(name)) {
    throw new ConfigError("name", `${show(name)}; expected 1-64 of A-Z a-z 0-9 . _ - starting alphanumeric`);
  }
  if (typeof version !== "string" || (version !== "" && !VERSION_RE.test(version))) {
    throw new ConfigError("version", `${show(version)}; expected a version like 2.0.0`);
  }
  if (provider !== undefined && !(PROVIDERS as readonly unknown[]).includes(provider)) {
    throw new ConfigError("provider", `${show(provider)}; expected one of ${JSON.stringify(PROVIDERS)}`);
  }
  if (!isObject(parameters)) throw new ConfigError("parameters", `got ${typeName(parameters)}; expected an object`);
  const params: Partial<Record<DropoutParameter, number>> = {};
  for (const [key, value] of Object.entries(parameters)) {
    if (!(DROPOUT_PARAMETERS as readonly string[]).includes(key)) {
      throw new ConfigError(`parameters.${key}`, `unknown parameter; expected one of ${JSON.stringify(DROPOUT_PARAMETERS)}`);
    }
    if (typeof value !== "number" || !Number.isFinite(value) || value < 0 || value >= 1) {
      throw new ConfigError(`parameters.${key}`, `${show(value)}; expected a probability in [0, 1)`);
    }
    params[key as DropoutParameter] = value;
  }
  return { name, version, parameters: params, provider: provider as Provider | undefined };
}

/** Server limits on the streaming section (`StreamingConfig` in ostinato/models.py). */
const STREAMING_LIMITS = { maxQueueSize: 10_000, batchSize: 256, chunkSize: 16000 * 60 } as const;

/**
 * Check streaming options: positive integers, `overlap < chunkSize`, sane upper bounds.
 *
 * @returns A normalized copy with defaults filled in.
 * @throws {ConfigError} Naming the bad option.
 */
export function validateStreamingOptions(options: unknown): Required<StreamingOptions> {
  if (!isObject(options)) throw new ConfigError("(options)", `got ${typeName(options)}; expected an object`);
  const allowed = ["chunkSize", "overlap", "maxQueueSize", "batchSize", "sampleRate", "encoding", "match"];
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) throw new ConfigError(key, `unknown option; expected one of ${JSON.stringify(allowed)}`);
  }
  const o = options as Record<string, unknown>;
  const positiveInt = (key: string, max: number): number => {
    const v = o[key];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > max) {
      throw new ConfigError(key, `${show(v)}; expected a positive integer <= ${max}`, { option: key });
    }
    return v;
  };
  const chunkSize = positiveInt("chunkSize", STREAMING_LIMITS.chunkSize);
  const overlap = positiveInt("overlap", STREAMING_LIMITS.chunkSize);
  if (overlap >= chunkSize) {
    throw new ConfigError("overlap", `${overlap}; expected less than chunkSize (${chunkSize})`);
  }
  const maxQueueSize = positiveInt("maxQueueSize", STREAMING_LIMITS.maxQueueSize);
  const batchSize = positiveInt("batchSize", STREAMING_LIMITS.batchSize);
  const sampleRate = o.sampleRate ?? 16000;
  if (sampleRate !== 16000) {
    throw new ConfigError("sampleRate", `${show(sampleRate)}; expected 16000 (resample to 16 kHz before streaming)`);
  }
  const encoding = o.encoding ?? "f32le";
  if (encoding !== "f32le" && encoding !== "s16le") {
    throw new ConfigError("encoding", `${show(encoding)}; expected 'f32le' or 's16le'`);
  }
  const match = o.match ?? true;
  if (typeof match !== "boolean") throw new ConfigError("match", `${show(match)}; expected true or false`);
  return { chunkSize, overlap, maxQueueSize, batchSize, sampleRate, encoding, match };
}

/** The `streaming` section of a server model config for these options. */
export function serverStreamingConfig(o: Required<StreamingOptions>): Record<string, number> {
  return { chunk_samples: o.chunkSize, overlap_samples: o.overlap, max_queue: o.maxQueueSize, batch_size: o.batchSize };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function typeName(value: unknown): string {
  return value === null ? "null" : Array.isArray(value) ? "array" : typeof value;
}

function show(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
