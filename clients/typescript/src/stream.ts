/**
 * One logical feature stream over the wire protocol, surviving connection losses.
 *
 * Every chunk is one `audio` frame. The server answers with `features` frames, in order; the
 * window geometry of `ready.info.window` tells which frames a chunk completes, so each
 * `process()` resolves with exactly those frames. When the connection drops, the stream is
 * resumed (same stream id and resume token, within the server's grace period) and the chunks
 * the server had not received (`ready.info.next_seq`) are resent. When the server no longer
 * knows the stream (it restarted, or the grace period passed), a replacement stream is opened
 * and fed the kept audio from a window boundary far enough back that its next windows see the
 * same context, so the frames continue seamlessly; frames already delivered are skipped.
 *
 * @module
 */

import type { CircuitBreaker } from "./breaker.js";
import type { StreamingOptions } from "./config.js";
import { ConnectionLostError, DisposedError, OstinatoError, RequestTimeoutError, StateError, classifyError, errorFromWire } from "./errors.js";
import { type AdapterEvents, type Emitter, eventFromServer, statusFromServer } from "./events.js";
import { type WindowGeometry, framesEmitted, geometryFromReady, replayStartFrame } from "./geometry.js";
import { type RetryPolicy, retry } from "./retry.js";
import { Connection, type SocketFactory } from "./socket.js";
import { type ByeFrame, type FeaturesFrame, type Frame, type ReadyFrame, type StatusFrame, encodePcm, featuresToFloat32, hello } from "./wire.js";

/** Frames a chunk completed (or the stream's end flushed). */
export interface FeatureFrames {
  /** Model output the features come from (`last_hidden_state`…). */
  output: string;
  numFrames: number;
  /** Feature dimension (0 when no frame arrived). */
  dim: number;
  /** Row-major `[numFrames, dim]`. */
  features: Float32Array;
  /** Start sample (16 kHz, from the stream's first sample) of each frame. */
  frameStartSamples: number[];
  /** Frames the server dropped (deadline, overload) instead of sending; they are absent above. */
  droppedFrames: number;
}

/** What `processChunk` resolves with. */
export interface ChunkResult extends FeatureFrames {
  /** Chunk number since `startStreaming` (0-based). */
  chunk: number;
  /** The chunk's first sample and one past its last, in stream samples. */
  startSample: number;
  endSample: number;
}

/** What `stopStreaming` resolves with: the frames of the stream's last window, and the server's totals. */
export interface StopResult extends FeatureFrames {
  /** The `bye` summary (audio seconds, frames, events, drops) of the server stream. */
  summary: Record<string, unknown>;
}

interface Block {
  start: number;
  n: number;
  dim: number;
  data: Float32Array;
}

interface Sent {
  index: number;
  start: number;
  end: number;
  samples: Float32Array | Int16Array;
  /** Sequence number in the current server stream (-1: not sent there yet). */
  seq: number;
  /** Samples skipped at the front when it was sent to the current server stream (replay). */
  offset: number;
  pending: Pending | undefined;
}

interface Pending {
  sent: Sent;
  expectedEnd: number;
  blocks: Block[];
  dropped: number;
  done: boolean;
  abandoned: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
  resolve: (r: ChunkResult) => void;
  reject: (e: unknown) => void;
  /** Settles (never rejects) when the chunk is resolved or rejected. */
  settled: Promise<unknown>;
}

export interface StreamSetup {
  wsUrl: string;
  headers: Record<string, string>;
  socketFactory: () => Promise<SocketFactory>;
  timeoutMs: number;
  retryPolicy: RetryPolicy;
  breaker: CircuitBreaker;
  model: string;
  options: Required<StreamingOptions>;
  /** Re-register the model (after a server restart lost it). */
  prepareModel: () => Promise<void>;
  emitter: Emitter<AdapterEvents>;
}

const EXPIRED_CODES = new Set(["stream_expired", "resume_refused"]);

/** A stream of chunks to the server and their features back (see the module comment). */
export class FeatureStream {
  streamId = "";
  geometry: WindowGeometry | undefined;
  /** Times the stream was resumed / replaced after a connection loss. */
  resumes = 0;
  replacements = 0;
  private conn: Connection | undefined;
  private resumeToken = "";
  private segmentStart = 0;
  private segmentGone = false;
  private nextSeq = 0;
  private nextSample = 0;
  private chunkCount = 0;
  private covered = 0;
  private output = "";
  private history: Sent[] = [];
  private pending: Pending[] = [];
  private tail: Block[] = [];
  private tailDropped = 0;
  private slotWaiters: Array<() => void> = [];
  private reconnecting: Promise<void> | undefined;
  private endRequested = false;
  private endWaiter: { resolve: (bye: ByeFrame) => void; reject: (e: unknown) => void } | undefined;
  private closed: OstinatoError | undefined;
  private broken: unknown;

  constructor(private readonly setup: StreamSetup) {}

  /** Chunks sent (or waiting to be resent) whose results have not arrived yet. */
  get inFlightCount(): number {
    return this.inFlight();
  }

  /** Open the stream (retrying transient failures behind the breaker). */
  async start(): Promise<void> {
    await this.connect();
    if (this.broken !== undefined) throw this.broken;
  }

  /** Send one chunk; resolves with the frames it completed. */
  async process(samples: Float32Array | Int16Array): Promise<ChunkResult> {
    this.checkOpen();
    while (this.inFlight() >= this.setup.options.maxQueueSize) {
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
      this.checkOpen();
    }
    if (this.broken !== undefined && !this.reconnecting) {
      this.broken = undefined;
      this.segmentGone = true; // what was pending is lost; continue on a new server stream
    }
    const sent: Sent = { index: this.chunkCount++, start: this.nextSample, end: this.nextSample + samples.length, samples, seq: -1, offset: 0, pending: undefined };
    this.nextSample = sent.end;
    const promise = new Promise<ChunkResult>((resolve, reject) => {
      const p: Pending = {
        sent, expectedEnd: this.expectedEnd(sent), blocks: [], dropped: 0, done: false, abandoned: false,
        timer: undefined, resolve, reject, settled: Promise.resolve(),
      };
      sent.pending = p;
      this.history.push(sent);
      this.pending.push(p);
    });
    const p = this.pending[this.pending.length - 1]!;
    p.settled = promise.then(() => undefined, () => undefined);
    if (this.conn?.open) this.sendAudio(sent, 0);
    else if (!this.reconnecting) void this.reconnect();
    this.settle();
    return promise;
  }

  /** Flush: wait for every chunk's results, send `end`, wait for the last window and `bye`. */
  async stop(): Promise<StopResult> {
    this.checkOpen();
    await Promise.all(this.pending.map((p) => p.settled));
    if (this.broken !== undefined) {
      const error = this.broken;
      this.close(undefined);
      throw error;
    }
    this.endRequested = true;
    const bye = new Promise<ByeFrame>((resolve, reject) => (this.endWaiter = { resolve, reject }));
    const watchdog = setInterval(() => this.checkStall(), Math.max(50, this.setup.timeoutMs / 2));
    try {
      if (this.conn?.open) this.conn.send({ type: "end" });
      else if (!this.reconnecting) void this.reconnect();
      const frame = await bye;
      const result: StopResult = { ...this.collect(this.tail, this.tailDropped), summary: frame.summary };
      this.tail = [];
      return result;
    } finally {
      clearInterval(watchdog);
      this.close(undefined);
    }
  }

  /** Abort: reject everything in flight with `reason` and close the connection. */
  close(reason: OstinatoError | undefined): void {
    this.closed ??= reason ?? new StateError("the stream is stopped", { hint: "call startStreaming() again" });
    for (const p of this.pending) this.finish(p, this.closed);
    this.pending = [];
    this.history = [];
    this.endWaiter?.reject(this.closed);
    this.endWaiter = undefined;
    this.conn?.close();
    this.conn = undefined;
    for (const wake of this.slotWaiters.splice(0)) wake();
  }

  // -- connection ---------------------------------------------------------------------------

  private connect(): Promise<void> {
    return this.reconnect(false);
  }

  private reconnect(announce = true): Promise<void> {
    if (this.reconnecting) return this.reconnecting;
    const { breaker, retryPolicy, emitter } = this.setup;
    const run = async (): Promise<void> => {
      try {
        await retry(
          async () => {
            breaker.check();
            try {
              await this.handshake();
            } catch (e) {
              if (classifyError(e) === "transient") breaker.recordFailure();
              throw e;
            }
            breaker.recordSuccess();
          },
          retryPolicy,
          {
            onRetry: (attempt, error, delayMs) =>
              emitter.emit("connection", { state: "reconnecting", streamId: this.streamId, attempt, delayMs, error: asError(error) }),
          },
        );
      } catch (e) {
        if (this.closed) return;
        this.broken = e;
        this.fail(asError(e));
        if (announce) emitter.emit("connection", { state: "failed", streamId: this.streamId, error: asError(e) });
      }
    };
    this.reconnecting = run().finally(() => {
      this.reconnecting = undefined;
      // Lost again between attaching and here: go on reconnecting.
      if (!this.conn && !this.closed && this.broken === undefined && (this.pending.length || this.endRequested)) void this.reconnect();
    });
    return this.reconnecting;
  }

  private async handshake(): Promise<void> {
    for (let round = 0; ; round++) {
      if (this.closed) throw this.closed;
      const resume = this.streamId !== "" && !this.segmentGone;
      try {
        await this.openOnce(resume);
        return;
      } catch (e) {
        if (round >= 2 || !(e instanceof OstinatoError)) throw e;
        if (resume && EXPIRED_CODES.has(e.code)) {
          this.segmentGone = true; // the server no longer knows the stream: replace it
        } else if (e.code === "model_unavailable") {
          await this.setup.prepareModel(); // the server restarted without our model
        } else {
          throw e;
        }
      }
    }
  }

  private async openOnce(resume: boolean): Promise<void> {
    const { wsUrl, headers, timeoutMs, options, model } = this.setup;
    const factory = await this.setup.socketFactory();
    let onReady: ((f: ReadyFrame) => void) | undefined;
    let onFail: ((e: unknown) => void) | undefined;
    let conn: Connection | undefined;
    conn = await Connection.open(factory, wsUrl, headers, timeoutMs, {
      onFrame: (frame) => {
        if (onReady) {
          if (frame.type === "ready") onReady(frame);
          else if (frame.type === "error") onFail?.(handshakeError(frame.code, frame.message, frame.error_class, frame.hint));
          return;
        }
        if (conn === this.conn) this.onFrame(frame);
      },
      onClose: (error) => {
        if (onReady) onFail?.(error ?? new ConnectionLostError("the server closed the connection before ready"));
        else if (conn === this.conn) this.onLost(error);
      },
    });
    const base = { sample_rate: options.sampleRate, encoding: options.encoding, channels: 1 };
    const outputs = options.match ? ["events", "features", "status"] : ["features", "status"];
    const frame = resume
      ? hello({ ...base, stream_id: this.streamId, resume_from_seq: this.nextSeq, outputs, options: { resume_token: this.resumeToken } })
      : hello({ ...base, outputs, options: { model, match: options.match, features_hz: 50, features_dtype: "f32", status_interval_s: statusIntervalS(timeoutMs) } });
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      const ready = await new Promise<ReadyFrame>((resolve, reject) => {
        onReady = resolve;
        onFail = reject;
        timer = setTimeout(() => reject(new RequestTimeoutError(`no ready from ${wsUrl} within ${timeoutMs} ms`)), timeoutMs);
        conn!.send(frame);
      });
      onReady = undefined;
      this.attach(conn, ready, resume);
    } catch (e) {
      onReady = undefined;
      conn.abort();
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  private attach(conn: Connection, ready: ReadyFrame, resumed: boolean): void {
    const info = ready.info;
    const geometry = geometryFromReady(info, ready.frame_stride_samples);
    this.conn = conn;
    this.resumeToken = String(info.resume_token ?? "");
    const first = this.streamId === "";
    this.streamId = ready.stream_id;
    this.geometry = geometry;
    if (resumed && info.resumed === true) {
      this.resumes++;
      const nextSeq = Number(info.next_seq ?? 0);
      this.nextSeq = nextSeq;
      // The server has every frame before next_seq; resend the rest with the same numbers.
      for (const sent of this.history) if (sent.seq >= nextSeq || sent.seq < 0) this.sendAudio(sent, sent.seq < 0 ? 0 : sent.offset);
      for (const p of this.pending) if (!p.done) this.arm(p);
      this.setup.emitter.emit("connection", { state: "resumed", streamId: this.streamId });
    } else {
      if (!first) this.replacements++;
      this.replay(geometry);
      this.setup.emitter.emit("connection", { state: first ? "connected" : "replaced", streamId: this.streamId });
    }
    if (this.endRequested && this.pending.length === 0) conn.send({ type: "end" });
  }

  /** Start a new server stream: resend the kept audio from a window boundary (see module comment). */
  private replay(g: WindowGeometry): void {
    const stride = g.frameStrideSamples;
    let start = this.segmentStart + replayStartFrame(Math.max(0, Math.floor((this.covered - this.segmentStart) / stride)), g) * stride;
    const first = this.history[0];
    start = first === undefined ? this.nextSample : Math.max(start, first.start);
    this.segmentStart = start;
    this.covered = Math.max(this.covered, start);
    this.segmentGone = false;
    this.nextSeq = 0;
    for (const sent of this.history) {
      if (sent.end <= start) continue;
      const offset = Math.max(0, start - sent.start);
      this.sendAudio(sent, offset);
    }
    for (const p of this.pending) p.expectedEnd = this.expectedEnd(p.sent);
    this.settle();
  }

  private sendAudio(sent: Sent, offset: number): void {
    sent.seq = this.nextSeq++;
    sent.offset = offset;
    const samples = offset ? sent.samples.subarray(offset) : sent.samples;
    try {
      this.conn!.send({ type: "audio", seq: sent.seq, pcm: encodePcm(samples, this.setup.options.encoding), start_sample: sent.start + offset - this.segmentStart });
    } catch (e) {
      this.onLost(asError(e));
      return;
    }
    const p = sent.pending;
    if (p && !p.done) this.arm(p);
  }

  private onLost(error: OstinatoError | undefined): void {
    if (this.closed) return;
    this.conn?.abort();
    this.conn = undefined;
    const err = error ?? new ConnectionLostError("the server closed the connection without bye");
    if (this.pending.length || this.endRequested || !this.segmentGone) {
      this.setup.emitter.emit("connection", { state: "reconnecting", streamId: this.streamId, attempt: 0, delayMs: 0, error: err });
      void this.reconnect();
    }
  }

  private checkStall(): void {
    const conn = this.conn;
    if (conn && performance.now() - conn.lastMessageAt >= this.setup.timeoutMs) {
      this.onLost(new RequestTimeoutError(`no message from the server for ${this.setup.timeoutMs} ms`));
    }
  }

  // -- receiving ----------------------------------------------------------------------------

  private onFrame(frame: Frame): void {
    const { emitter } = this.setup;
    switch (frame.type) {
      case "features":
        this.onFeatures(frame);
        return;
      case "event": {
        const event = eventFromServer(frame.event, this.streamId, this.segmentStart / 16000);
        if (event) emitter.emit(event.type, event as never);
        return;
      }
      case "status":
        this.onStatus(frame);
        emitter.emit("status", statusFromServer(frame, this.streamId));
        return;
      case "error": {
        const error = errorFromWire(frame.code, frame.message, frame.error_class, frame.hint);
        if (frame.fatal && error.errorClass !== "transient") this.fail(error);
        if (frame.fatal && error.errorClass === "transient") this.segmentGone = true;
        emitter.emit("error", error);
        return;
      }
      case "bye":
        this.onBye(frame);
        return;
      default:
        return;
    }
  }

  private onBye(frame: ByeFrame): void {
    if (this.endRequested && frame.reason === "end") {
      this.conn?.close();
      this.conn = undefined;
      this.endWaiter?.resolve(frame);
      this.endWaiter = undefined;
      return;
    }
    // The server ended the stream (shutdown, idle, error): later audio goes to a replacement.
    this.segmentGone = true;
  }

  private onFeatures(frame: FeaturesFrame): void {
    const g = this.geometry!;
    const stride = frame.frame_stride_samples;
    this.output = frame.output;
    let start = this.segmentStart + frame.start_sample;
    let data = featuresToFloat32(frame);
    let n = frame.num_frames;
    if (start < this.covered) {
      const skip = Math.min(n, Math.ceil((this.covered - start) / stride)); // already delivered
      data = data.subarray(skip * frame.dim);
      n -= skip;
      start += skip * stride;
    }
    if (n <= 0) return;
    if (start > this.covered) this.markLost(start); // dropped by the server, or lost in transit
    this.route({ start, n, dim: frame.dim, data });
    this.covered = start + n * stride;
    this.settle();
  }

  /**
   * A status frame is a barrier: the server queues it after the features of every frame it
   * had emitted (`frames`) or dropped (`window_*` drops, a hop each) until then, on the same
   * ordered connection. Frames below that line that never arrived are gone — shed by the
   * server, or written to a connection that died before they reached us — so the chunks
   * waiting for them resolve with those frames counted as dropped instead of waiting forever.
   */
  private onStatus(frame: StatusFrame): void {
    const g = this.geometry;
    if (!g) return;
    const hopFrames = g.hopSamples / g.frameStrideSamples;
    const droppedWindows = Object.entries(frame.dropped).reduce((n, [k, v]) => (k.startsWith("window_") ? n + v : n), 0);
    const line = this.segmentStart + (frame.frames + droppedWindows * hopFrames) * g.frameStrideSamples;
    if (line > this.covered) {
      this.markLost(line);
      this.covered = line;
      this.settle();
    }
  }

  /** Count the frames from `covered` up to `until` as dropped, each for the chunk that expected it. */
  private markLost(until: number): void {
    const stride = this.geometry!.frameStrideSamples;
    let lo = this.covered;
    for (const p of this.pending) {
      if (lo >= until) return;
      if (p.expectedEnd <= lo) continue;
      const hi = Math.min(until, p.expectedEnd);
      p.dropped += Math.round((hi - lo) / stride);
      lo = hi;
    }
    if (lo < until) this.tailDropped += Math.round((until - lo) / stride);
  }

  /** Give a block to the chunks whose frames it holds (the rest to the stream's tail). */
  private route(block: Block): void {
    const stride = this.geometry!.frameStrideSamples;
    let b: Block | undefined = block;
    for (const p of this.pending) {
      if (!b) return;
      if (p.expectedEnd <= b.start) continue;
      const take = Math.min(b.n, Math.ceil((p.expectedEnd - b.start) / stride));
      if (!p.abandoned) p.blocks.push({ ...b, n: take, data: b.data.subarray(0, take * b.dim) });
      b = take < b.n ? { start: b.start + take * stride, n: b.n - take, dim: b.dim, data: b.data.subarray(take * b.dim) } : undefined;
    }
    if (b) this.tail.push(b);
  }

  /** Resolve every chunk, oldest first, whose expected frames have all arrived (or were dropped). */
  private settle(): void {
    while (this.pending.length && this.pending[0]!.expectedEnd <= this.covered) {
      const p = this.pending.shift()!;
      if (!p.abandoned) this.finish(p, undefined);
    }
    this.trimHistory();
  }

  private finish(p: Pending, error: unknown): void {
    if (p.done) return;
    p.done = true;
    clearTimeout(p.timer);
    if (error === undefined) {
      const s = p.sent;
      p.resolve({ chunk: s.index, startSample: s.start, endSample: s.end, ...this.collect(p.blocks, p.dropped) });
    } else {
      p.reject(error);
    }
    this.slotWaiters.shift()?.();
  }

  private collect(blocks: Block[], dropped: number): FeatureFrames {
    const stride = this.geometry?.frameStrideSamples ?? 320;
    const numFrames = blocks.reduce((s, b) => s + b.n, 0);
    const dim = blocks[0]?.dim ?? 0;
    const features = new Float32Array(numFrames * dim);
    const frameStartSamples: number[] = [];
    let at = 0;
    for (const b of blocks) {
      features.set(b.data, at);
      at += b.data.length;
      for (let j = 0; j < b.n; j++) frameStartSamples.push(b.start + j * stride);
    }
    return { output: this.output, numFrames, dim, features, frameStartSamples, droppedFrames: dropped };
  }

  private trimHistory(): void {
    const g = this.geometry;
    if (!g) return;
    const stride = g.frameStrideSamples;
    const keepFrom = this.segmentStart + replayStartFrame(Math.floor((this.covered - this.segmentStart) / stride), g) * stride;
    while (this.history.length && this.history[0]!.end <= keepFrom && (this.history[0]!.pending?.done ?? true)) this.history.shift();
  }

  // -- bookkeeping ----------------------------------------------------------------------------

  private expectedEnd(sent: Sent): number {
    const g = this.geometry;
    if (!g) return sent.end;
    return this.segmentStart + framesEmitted(sent.end - this.segmentStart, g) * g.frameStrideSamples;
  }

  private arm(p: Pending): void {
    clearTimeout(p.timer);
    const deadline = performance.now() + this.setup.timeoutMs;
    p.timer = setTimeout(() => this.onChunkTimeout(p, deadline), this.setup.timeoutMs);
  }

  /**
   * A chunk's results are late. A silent connection is a stalled server (reconnect); a server
   * that keeps talking after the deadline is alive but behind (the chunk fails with a timeout).
   * A server that stopped just now is given until its silence reaches `timeoutMs`.
   */
  private onChunkTimeout(p: Pending, deadline: number): void {
    if (p.done || this.reconnecting || !this.conn) return;
    const silenceMs = performance.now() - this.conn.lastMessageAt;
    if (silenceMs >= this.setup.timeoutMs) {
      this.onLost(new RequestTimeoutError(`no message from the server for ${this.setup.timeoutMs} ms`));
      return;
    }
    if (this.conn.lastMessageAt <= deadline) {
      p.timer = setTimeout(() => this.onChunkTimeout(p, deadline), this.setup.timeoutMs - silenceMs + 1);
      return;
    }
    p.abandoned = true;
    this.finish(p, new RequestTimeoutError(`no results for chunk ${p.sent.index} within ${this.setup.timeoutMs} ms; the server is alive but behind`, {
      hint: "the server is overloaded (see the lag in status events); raise timeoutMs or send less audio",
    }));
  }

  private fail(error: OstinatoError): void {
    for (const p of this.pending) this.finish(p, error);
    this.pending = [];
    this.history = [];
    this.segmentGone = true;
    this.covered = this.nextSample;
    this.endWaiter?.reject(error);
    this.endWaiter = undefined;
  }

  private inFlight(): number {
    return this.pending.filter((p) => !p.done).length;
  }

  private checkOpen(): void {
    if (this.closed instanceof DisposedError) throw this.closed;
    if (this.closed) throw new StateError("the stream is stopped", { hint: "call startStreaming() again" });
  }
}

/** Status period asked for: often enough that a live server is never silent for `timeoutMs`. */
function statusIntervalS(timeoutMs: number): number {
  return Math.min(1, Math.max(0.1, timeoutMs / 3000));
}

function handshakeError(code: string, message: string, errorClass: string, hint: string): OstinatoError {
  // The stream is still attached to the old connection until the server notices the drop.
  const klass = code === "stream_in_use" ? "transient" : errorClass;
  return errorFromWire(code, message, klass, hint);
}

function asError(e: unknown): OstinatoError {
  if (e instanceof OstinatoError) return e;
  return new ConnectionLostError(e instanceof Error ? e.message : String(e), { cause: e });
}
