/**
 * Errors of the ostinato client, mirroring the server's error tree (`ostinato/errors.py`,
 * `stream/errors.py`): each carries an error class — `input` (fix what you sent), `transient`
 * (retry later; the client does, with backoff) or `permanent` (give up) — and a recovery hint.
 *
 * @module
 */

import type { ErrorClassName } from "./wire.js";

export interface OstinatoErrorOptions {
  hint?: string | undefined;
  code?: string | undefined;
  errorClass?: ErrorClassName | undefined;
  cause?: unknown;
}

/** Base of every error this package throws. */
export class OstinatoError extends Error {
  /** `input`, `transient` or `permanent`: what the caller should do. */
  readonly errorClass: ErrorClassName;
  /** What to do about it. */
  readonly hint: string;
  /** Machine-readable code (the server's, when the server sent one). */
  readonly code: string;

  protected static defaultClass: ErrorClassName = "permanent";
  protected static defaultHint = "";
  protected static defaultCode = "client_error";

  constructor(message: string, options: OstinatoErrorOptions = {}) {
    super(message, options.cause !== undefined ? { cause: options.cause } : undefined);
    const ctor = new.target as unknown as typeof OstinatoError;
    this.name = new.target.name;
    this.errorClass = options.errorClass ?? ctor.defaultClass;
    this.hint = options.hint || ctor.defaultHint;
    this.code = options.code ?? ctor.defaultCode;
  }

  /** Whether retrying (after a delay) may help. */
  get transient(): boolean {
    return this.errorClass === "transient";
  }

  override toString(): string {
    return this.hint ? `${this.name}: ${this.message} (hint: ${this.hint})` : `${this.name}: ${this.message}`;
  }
}

/**
 * A configuration or option is invalid (checked locally, or refused by the server with 422).
 * `field` names the offending field as the server spells it (`parameters.hiddenDropout`,
 * `streaming.chunk_samples`); `option` names the client-side option when it differs (`chunkSize`).
 */
export class ConfigError extends OstinatoError {
  protected static override defaultClass: ErrorClassName = "input";
  protected static override defaultHint = "fix the named field; GET /v1/openapi.json describes the model config schema";
  protected static override defaultCode = "invalid_config";

  readonly field: string;
  readonly reason: string;
  readonly option: string;

  constructor(field: string, reason: string, options: OstinatoErrorOptions & { option?: string } = {}) {
    super(`${field}: ${reason}`, options);
    this.field = field;
    this.reason = reason;
    this.option = options.option ?? field;
  }
}

/** Bad data passed to a method (wrong type, empty or oversized chunk, NaN samples). */
export class InputError extends OstinatoError {
  protected static override defaultClass: ErrorClassName = "input";
  protected static override defaultCode = "bad_input";
}

/** A wire-protocol frame is malformed, too large, of an unknown type or version. */
export class ProtocolError extends OstinatoError {
  protected static override defaultClass: ErrorClassName = "input";
  protected static override defaultHint = "speak the ostinato wire protocol described in docs/protocol.md";
  protected static override defaultCode = "protocol_error";
}

/** The server answered with an `error` frame or an HTTP problem body (its class and hint kept). */
export class ServerError extends OstinatoError {
  /** HTTP status, when the error answered a REST request. */
  readonly status: number | undefined;

  constructor(message: string, options: OstinatoErrorOptions & { status?: number } = {}) {
    super(message, options);
    this.status = options.status;
  }
}

/** The server did not answer (connect, HTTP response, `ready`, a chunk's results) in time. */
export class RequestTimeoutError extends OstinatoError {
  protected static override defaultClass: ErrorClassName = "transient";
  protected static override defaultHint = "check that `ostinato serve` runs at that address and is not overloaded; the client retries with backoff";
  protected static override defaultCode = "timeout";
}

/** The connection failed or closed without a `bye` (network loss, server crash or restart). */
export class ConnectionLostError extends OstinatoError {
  protected static override defaultClass: ErrorClassName = "transient";
  protected static override defaultHint = "the client reconnects and resumes the stream within the server's grace period";
  protected static override defaultCode = "connection_lost";
}

/** The circuit breaker is open: calls fail fast until its cool-down ends. */
export class BreakerOpenError extends OstinatoError {
  protected static override defaultClass: ErrorClassName = "transient";
  protected static override defaultHint = "the server failed repeatedly; the client probes it again after the cool-down";
  protected static override defaultCode = "breaker_open";

  /** Milliseconds until the breaker half-opens. */
  readonly retryInMs: number;

  constructor(message: string, retryInMs: number, options: OstinatoErrorOptions = {}) {
    super(message, options);
    this.retryInMs = retryInMs;
  }
}

/** A method was called in a state that does not allow it (e.g. `processChunk` before `startStreaming`). */
export class StateError extends OstinatoError {
  protected static override defaultClass: ErrorClassName = "input";
  protected static override defaultCode = "bad_state";
}

/** The adapter was disposed; every later call rejects with this error. */
export class DisposedError extends OstinatoError {
  protected static override defaultClass: ErrorClassName = "permanent";
  protected static override defaultHint = "create a new Wav2Vec2FeatureAdapter";
  protected static override defaultCode = "disposed";
}

/**
 * Classify any error: ours carry their class; timeouts, network and abort errors from the
 * platform are transient; everything else (programming errors included) is permanent.
 */
export function classifyError(error: unknown): ErrorClassName {
  if (error instanceof OstinatoError) return error.errorClass;
  if (error instanceof Error) {
    if (error.name === "TimeoutError" || error.name === "AbortError") return "transient";
    const code = (error as { code?: unknown }).code;
    if (typeof code === "string" && /^(ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EAI_AGAIN|UND_ERR_SOCKET)$/.test(code)) {
      return "transient";
    }
    // fetch() rejects with TypeError("fetch failed") on network failures (cause holds the errno).
    if (error instanceof TypeError && error.message === "fetch failed") return "transient";
  }
  return "permanent";
}

/** Rebuild a typed error from an `error` frame or an HTTP problem body. */
export function errorFromWire(
  code: string,
  message: string,
  errorClass: string,
  hint: string,
  extra: { status?: number; field?: string } = {},
): OstinatoError {
  const klass: ErrorClassName = errorClass === "input" || errorClass === "transient" ? errorClass : "permanent";
  if (code === "invalid_config" && extra.field) {
    const prefix = `${extra.field}: `;
    const reason = message.startsWith(prefix) ? message.slice(prefix.length) : message;
    return new ConfigError(extra.field, reason, { hint, code, errorClass: klass, option: optionName(extra.field) });
  }
  return new ServerError(`server error ${code}: ${message}`, { hint, code, errorClass: klass, status: extra.status });
}

const OPTION_NAMES: Record<string, string> = {
  "streaming.chunk_samples": "chunkSize",
  "streaming.overlap_samples": "overlap",
  "streaming.max_queue": "maxQueueSize",
  "streaming.batch_size": "batchSize",
};

/** The client-side option a server field corresponds to (`streaming.chunk_samples` → `chunkSize`). */
export function optionName(field: string): string {
  return OPTION_NAMES[field] ?? field;
}
