/**
 * `Wav2Vec2FeatureAdapter`: the lifecycle API apps call to get live Wav2Vec2 features and
 * recurring-pattern events from an ostinato service.
 *
 * ```ts
 * const adapter = new Wav2Vec2FeatureAdapter("http://localhost:8765", { model: "base" }, 5000, { maxRetries: 3, backoff: 1000 });
 * await adapter.initialize({ name: "wav2vec2-base", version: "2.0.0", parameters: { attentionDropout: 0.1, hiddenDropout: 0.1 } });
 * await adapter.startStreaming({ chunkSize: 1600, overlap: 400, maxQueueSize: 10, batchSize: 4 });
 * adapter.on("match", (e) => console.log(e.patternId, e.startS, e.score));
 * const result = await adapter.processChunk(new Float32Array(1600));
 * await adapter.stopStreaming();
 * await adapter.dispose();
 * ```
 *
 * Lifecycle on the server (`/v1/models`): `initialize` registers the config (validated locally,
 * then by the server: a 422 becomes a {@link ConfigError} naming the field), `load`/`unload`
 * create and release the ONNX Runtime session, `dispose` forgets the model. Every REST call and
 * every (re)connection goes through the retry policy (transient errors only) and the circuit
 * breaker, each attempt bounded by `timeoutMs`.
 *
 * @module
 */

import { type BreakerConfig, type BreakerState, CircuitBreaker } from "./breaker.js";
import { type ModelConfig, type StreamingOptions, serverStreamingConfig, validateModelConfig, validateStreamingOptions } from "./config.js";
import { ConfigError, DisposedError, InputError, OstinatoError, ServerError, StateError, classifyError } from "./errors.js";
import { type AdapterEvents, Emitter, type Listener } from "./events.js";
import { type HttpRequest, HttpClient } from "./http.js";
import { type RetryPolicy, retry, retryPolicy } from "./retry.js";
import { type SocketFactory, defaultSocketFactory } from "./socket.js";
import { type ChunkResult, FeatureStream, type StopResult } from "./stream.js";

/** Where and how to reach the service. */
export interface AdapterOptions {
  /**
   * A model the server already serves (`ostinato serve --model DIR` names it after DIR, or
   * `--model-name`); its model directory is used for the config `initialize` registers.
   * Default: the server's default model.
   */
  model?: string;
  /** Model directory on the server's file system (instead of borrowing `model`'s). */
  modelDir?: string;
  /** Bearer token (`--token-file` on the server). Browsers cannot send it on WebSockets. */
  token?: string;
  /** Circuit breaker thresholds (defaults: 3 consecutive failures, 10 s cool-down). */
  breaker?: Partial<BreakerConfig>;
  /** Cap on a retry delay in ms (default 30000). */
  maxBackoffMs?: number;
  /** Randomized fraction of each retry delay (default 0.5). */
  jitter?: number;
  /** WebSocket to use (default: the platform's, else the `ws` package). */
  socketFactory?: SocketFactory;
}

/** Retry behaviour, as in the seed configuration. */
export interface RetryOptions {
  /** Retries after the first failed attempt (default 3). */
  maxRetries?: number;
  /** Delay before the first retry in ms; doubles per retry, with jitter (default 1000). */
  backoff?: number;
}

/** The server's view of the model (`GET /v1/models/{name}`). */
export type ModelInfo = Record<string, unknown> & { name: string; state: string };

type State = "created" | "initialized" | "streaming" | "disposed";

/** Typed client of one model and one live stream on an ostinato service (see the module comment). */
export class Wav2Vec2FeatureAdapter {
  readonly baseUrl: string;
  readonly timeoutMs: number;
  readonly retryPolicy: RetryPolicy;
  /** Breaker around every call to the server; its state is observable (`breakerState`, `breaker` events). */
  readonly breaker: CircuitBreaker;

  private readonly http: HttpClient;
  private readonly emitter = new Emitter<AdapterEvents>();
  private readonly options: AdapterOptions;
  private state: State = "created";
  private config: ReturnType<typeof validateModelConfig> | undefined;
  private modelDir: string | undefined;
  private streaming: Required<StreamingOptions> | undefined;
  private stream: FeatureStream | undefined;
  private registered = false;
  private disposing: Promise<void> | undefined;

  /**
   * @param baseUrl `http://host:port` of `ostinato serve`.
   * @param options Model to borrow, token, breaker settings.
   * @param timeoutMs Limit on each request, connection and chunk answer (default 5000).
   * @param retry Retries for transient errors (default 3 retries, 1000 ms backoff).
   * @throws {ConfigError} On an invalid URL, timeout or retry setting.
   */
  constructor(baseUrl: string, options: AdapterOptions = {}, timeoutMs = 5000, retryOptions: RetryOptions = {}) {
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw new ConfigError("baseUrl", `${JSON.stringify(baseUrl)}; expected an http(s) URL such as http://localhost:8765`);
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new ConfigError("baseUrl", `${JSON.stringify(baseUrl)}; expected an http:// or https:// URL`);
    }
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw new ConfigError("timeoutMs", `${String(timeoutMs)}; expected a positive number of milliseconds`);
    }
    this.baseUrl = url.origin + url.pathname.replace(/\/+$/, "");
    this.timeoutMs = timeoutMs;
    this.options = { ...options };
    this.retryPolicy = retryPolicy({
      maxRetries: retryOptions.maxRetries,
      backoffMs: retryOptions.backoff,
      maxBackoffMs: options.maxBackoffMs ?? Math.max(30_000, retryOptions.backoff ?? 0),
      jitter: options.jitter,
    });
    this.breaker = new CircuitBreaker(`ostinato:${this.baseUrl}`, options.breaker ?? {});
    this.breaker.onStateChange((state, previous) => this.emitter.emit("breaker", { state, previous }));
    this.http = new HttpClient(this.baseUrl, timeoutMs, options.token);
  }

  /** State of the circuit breaker: `closed`, `open` or `half_open`. */
  get breakerState(): BreakerState {
    return this.breaker.state;
  }

  /** Whether a stream is open (between `startStreaming` and `stopStreaming`). */
  get isStreaming(): boolean {
    return this.state === "streaming";
  }

  /** Chunks whose results are outstanding (never more than `maxQueueSize`). */
  get chunksInFlight(): number {
    return this.stream?.inFlightCount ?? 0;
  }

  /** Server stream id of the current stream ("" before `startStreaming`). */
  get streamId(): string {
    return this.stream?.streamId ?? "";
  }

  /** Listen to `match`, `novelty`, `status`, `error` (plus `connection` and `breaker`); returns an unsubscribe function. */
  on<K extends keyof AdapterEvents>(name: K, listener: Listener<AdapterEvents[K]>): () => void {
    return this.emitter.on(name, listener);
  }

  off<K extends keyof AdapterEvents>(name: K, listener: Listener<AdapterEvents[K]>): void {
    this.emitter.off(name, listener);
  }

  /**
   * Validate `config` locally, then register it on the server (`POST /v1/models?load=false`).
   *
   * @throws {ConfigError} Naming the bad field (locally, or from the server's 422).
   */
  async initialize(config: ModelConfig): Promise<ModelInfo> {
    this.checkNotDisposed();
    if (this.state === "streaming") throw new StateError("initialize() while streaming", { hint: "call stopStreaming() first" });
    const checked = validateModelConfig(config);
    this.modelDir = this.options.modelDir ?? (await this.borrowModelDir());
    const previous = this.registered ? this.config?.name : undefined;
    if (previous !== undefined && previous !== checked.name) await this.forget(previous); // re-initialized under a new name
    this.config = checked;
    const info = await this.register({}, false);
    this.state = "initialized";
    return info;
  }

  /** Load the model on the server (ONNX Runtime session; idempotent). */
  async load(): Promise<ModelInfo> {
    const name = this.requireInitialized("load");
    return this.asInfo(await this.call({ method: "POST", path: `/v1/models/${encodeURIComponent(name)}/load` }));
  }

  /** Release the model's session on the server (the config stays registered). */
  async unload(): Promise<ModelInfo> {
    const name = this.requireInitialized("unload");
    if (this.state === "streaming") throw new StateError("unload() while streaming", { hint: "call stopStreaming() first" });
    return this.asInfo(await this.call({ method: "POST", path: `/v1/models/${encodeURIComponent(name)}/unload` }));
  }

  /**
   * Configure the model's streaming settings on the server, load it, and open a stream.
   *
   * @throws {ConfigError} On invalid options (locally, or the server's 422 for `streaming.*`).
   */
  async startStreaming(options: StreamingOptions): Promise<void> {
    const name = this.requireInitialized("startStreaming");
    if (this.state === "streaming") throw new StateError("startStreaming() while already streaming", { hint: "call stopStreaming() first" });
    const checked = validateStreamingOptions(options);
    await this.applyStreaming(checked);
    this.streaming = checked;
    const stream = new FeatureStream({
      wsUrl: this.baseUrl.replace(/^http/, "ws") + "/v1/stream",
      headers: this.options.token ? { Authorization: `Bearer ${this.options.token}` } : {},
      socketFactory: () => (this.options.socketFactory ? Promise.resolve(this.options.socketFactory) : defaultSocketFactory()),
      timeoutMs: this.timeoutMs,
      retryPolicy: this.retryPolicy,
      breaker: this.breaker,
      model: name,
      options: checked,
      // Runs inside a connection attempt that already holds the breaker's slot.
      prepareModel: () => this.applyStreaming(checked, false),
      emitter: this.emitter,
    });
    await stream.start();
    this.stream = stream;
    this.state = "streaming";
  }

  /**
   * Send one chunk of 16 kHz mono audio (float in [-1, 1], or int16 PCM).
   *
   * At most `maxQueueSize` chunks are in flight; further calls wait for a slot.
   *
   * @returns The features of the frames this chunk completed.
   * @throws {InputError} On an empty, oversized or non-finite chunk.
   */
  async processChunk(chunk: Float32Array | Int16Array): Promise<ChunkResult> {
    this.checkNotDisposed();
    const stream = this.stream;
    if (this.state !== "streaming" || !stream) throw new StateError("processChunk() before startStreaming()", { hint: "call startStreaming() first" });
    checkChunk(chunk);
    return stream.process(chunk);
  }

  /** Flush the stream: wait for every chunk's results, end it, and return the last window's frames. */
  async stopStreaming(): Promise<StopResult> {
    this.checkNotDisposed();
    const stream = this.stream;
    if (this.state !== "streaming" || !stream) throw new StateError("stopStreaming() without an open stream", { hint: "call startStreaming() first" });
    try {
      return await stream.stop();
    } finally {
      this.stream = undefined;
      this.state = "initialized";
    }
  }

  /**
   * Stop streaming (gracefully within `timeoutMs`, else abruptly), forget the model this adapter
   * registered, release everything.
   * Idempotent: later calls resolve at once; every other method then rejects with {@link DisposedError}.
   */
  dispose(): Promise<void> {
    this.disposing ??= this.doDispose();
    return this.disposing;
  }

  private async doDispose(): Promise<void> {
    const stream = this.stream;
    this.stream = undefined;
    this.state = "disposed";
    if (stream) {
      // A graceful end gets timeoutMs; then whatever is left is rejected with DisposedError.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.timeoutMs)));
      try {
        await Promise.race([stream.stop(), late]);
      } catch (e) {
        this.report(e);
      } finally {
        clearTimeout(timer);
      }
      stream.close(new DisposedError("the adapter was disposed"));
    }
    if (this.registered && this.config) await this.forget(this.config.name);
    this.emitter.removeAll();
  }

  /** Delete a model this adapter registered (best effort: gone already, or in use by others, is fine). */
  private async forget(name: string): Promise<void> {
    this.registered = false;
    try {
      await this.http.request({ method: "DELETE", path: `/v1/models/${encodeURIComponent(name)}` });
    } catch (e) {
      if (!(e instanceof ServerError && (e.status === 404 || e.status === 409))) this.report(e);
    }
  }

  // -- server calls --------------------------------------------------------------------------

  /** One REST call with retries (transient errors) behind the breaker (`guarded`: check it first). */
  private async call(req: HttpRequest, guarded = true): Promise<unknown> {
    return retry(
      async () => {
        if (guarded) this.breaker.check();
        try {
          const { body } = await this.http.request(req);
          if (guarded) this.breaker.recordSuccess();
          return body;
        } catch (e) {
          if (guarded && classifyError(e) === "transient") this.breaker.recordFailure();
          else if (guarded) this.breaker.recordSuccess(); // the server answered: it is up
          throw e;
        }
      },
      this.retryPolicy,
      { onRetry: (_attempt, error) => this.report(error, false) },
    );
  }

  private async borrowModelDir(): Promise<string> {
    const body = (await this.call({ method: "GET", path: "/v1/models" })) as { default?: string | null; models?: Array<Record<string, unknown>> };
    const name = this.options.model ?? body.default ?? undefined;
    const entry = body.models?.find((m) => m.name === name);
    const dir = (entry?.config as { model_dir?: unknown } | undefined)?.model_dir;
    if (name === undefined || typeof dir !== "string") {
      const served = (body.models ?? []).map((m) => String(m.name));
      throw new ConfigError("model", `${JSON.stringify(name ?? null)} is not a model of ${this.baseUrl}; it serves ${JSON.stringify(served)}`, {
        hint: "pass { model: <one of those> } or { modelDir: <directory on the server> }",
      });
    }
    return dir;
  }

  /** `POST /v1/models` with our config (+ streaming), replacing an unloaded entry of that name. */
  private async register(streaming: Record<string, number>, load: boolean, guarded = true): Promise<ModelInfo> {
    const c = this.config!;
    const json: Record<string, unknown> = { name: c.name, model_dir: this.modelDir, parameters: c.parameters };
    if (c.version) json.version = c.version;
    if (c.provider) json.provider = c.provider;
    if (Object.keys(streaming).length) json.streaming = streaming;
    const info = this.asInfo(await this.call({ method: "POST", path: "/v1/models", query: { replace: "true", load: String(load) }, json }, guarded));
    this.registered = true;
    return info;
  }

  /** Make the server's entry carry these streaming settings, loaded. */
  private async applyStreaming(options: Required<StreamingOptions>, guarded = true): Promise<void> {
    const name = this.config!.name;
    const wanted = serverStreamingConfig(options);
    let info: ModelInfo | undefined;
    try {
      info = this.asInfo(await this.call({ method: "GET", path: `/v1/models/${encodeURIComponent(name)}` }, guarded));
    } catch (e) {
      if (!(e instanceof OstinatoError && e.code === "model_unavailable")) throw e;
    }
    const current = ((info?.config as Record<string, unknown> | undefined)?.streaming ?? {}) as Record<string, unknown>;
    const same = Object.entries(wanted).every(([k, v]) => current[k] === v);
    if (info?.state === "loaded" && same) return;
    if (info?.state === "loaded" || info?.state === "loading") {
      await this.call({ method: "POST", path: `/v1/models/${encodeURIComponent(name)}/unload` }, guarded);
    }
    await this.register(wanted, true, guarded);
  }

  private asInfo(body: unknown): ModelInfo {
    return body as ModelInfo;
  }

  // -- checks ---------------------------------------------------------------------------------

  private requireInitialized(method: string): string {
    this.checkNotDisposed();
    if (this.state === "created" || !this.config) {
      throw new StateError(`${method}() before initialize()`, { hint: "call initialize(config) first" });
    }
    return this.config.name;
  }

  private checkNotDisposed(): void {
    if (this.state === "disposed") throw new DisposedError("the adapter was disposed; its methods can no longer be called");
  }

  private report(error: unknown, always = true): void {
    if (always || this.emitter.listenerCount("error")) {
      const e = error instanceof OstinatoError ? error : new ServerError(String((error as Error)?.message ?? error), { cause: error });
      this.emitter.emit("error", e);
    }
  }
}

const MAX_CHUNK_SAMPLES = 2 * 16000; // the server's max_audio_s_per_message (2 s)

function checkChunk(chunk: unknown): void {
  if (!(chunk instanceof Float32Array) && !(chunk instanceof Int16Array)) {
    throw new InputError(`chunk is ${Object.prototype.toString.call(chunk)}; expected a Float32Array or Int16Array of 16 kHz mono samples`);
  }
  if (chunk.length === 0 || chunk.length > MAX_CHUNK_SAMPLES) {
    throw new InputError(`chunk holds ${chunk.length} samples; expected 1..${MAX_CHUNK_SAMPLES} (at most 2 s at 16 kHz)`, {
      hint: "split long audio into chunks (chunkSize samples is typical)",
    });
  }
  if (chunk instanceof Float32Array) {
    for (let i = 0; i < chunk.length; i++) {
      if (!Number.isFinite(chunk[i]!)) {
        throw new InputError(`chunk has a non-finite sample at offset ${i} (${chunk[i]})`, { hint: "send finite samples in [-1, 1]" });
      }
    }
  }
}
