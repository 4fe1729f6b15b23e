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
import { type WindowGeometry, geometryFromReady } from "./geometry.js";
import { type ChunkResult, FrameLedger, type LedgerChunk, type StopResult } from "./ledger.js";
import { type RetryPolicy, retry, sleep } from "./retry.js";
import { Connection, type SocketFactory } from "./socket.js";
import { type ByeFrame, type Frame, type ReadyFrame, encodePcm, hello } from "./wire.js";

export type { ChunkResult, FeatureFrames, StopResult } from "./ledger.js";

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

interface Pending extends LedgerChunk {
  sent: Sent;
  timer: ReturnType<typeof setTimeout> | undefined;
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
/** How long a resume keeps retrying `stream_in_use` (the server drops a dead connection within 1.5 heartbeats, 15 s). */
const IN_USE_WAIT_MS = 20_000;

/** A stream of chunks to the server and their features back (see the module comment). */
export class FeatureStream {
  streamId = "";
  /** Times the stream was resumed / replaced after a connection loss. */
  resumes = 0;
  replacements = 0;
  private conn: Connection | undefined;
  private resumeToken = "";
  private segmentGone = false;
  private nextSeq = 0;
  /** Highest output `seq` received on the current server stream (-1: none). */
  private lastOutputSeq = -1;
  /** Output frames missed (jumps in `seq`) and replayed duplicates skipped. */
  outputGaps = 0;
  /** Resume attempts answered `stream_in_use` (the old connection was still held). */
  inUseRetries = 0;
  /** Last audio `seq` the server reported fully processed (`through_seq`; -1: none). */
  throughSeq = -1;
  private nextSample = 0;
  private chunkCount = 0;
  private history: Sent[] = [];
  private readonly ledger = new FrameLedger((c) => this.onSettled(c as Pending));
  private slotWaiters: Array<() => void> = [];
  private reconnecting: Promise<void> | undefined;
  private endRequested = false;
  private endWaiter: { resolve: (bye: ByeFrame) => void; reject: (e: unknown) => void } | undefined;
  private closed: OstinatoError | undefined;
  private broken: unknown;

  constructor(private readonly setup: StreamSetup) {}

  /** Chunks sent (or waiting to be resent) whose results have not arrived yet. */
  get inFlightCount(): number {
    return this.ledger.inFlight;
  }

  /** Open the stream (retrying transient failures behind the breaker). */
  async start(): Promise<void> {
    await this.connect();
    if (this.broken !== undefined) throw this.broken;
  }

  /** Send one chunk; resolves with the frames it completed. */
  async process(samples: Float32Array | Int16Array): Promise<ChunkResult> {
    this.checkOpen();
    while (this.ledger.inFlight >= this.setup.options.maxQueueSize) {
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
      this.checkOpen();
    }
    if (this.broken !== undefined && !this.reconnecting) {
      this.broken = undefined;
      this.segmentGone = true; // what was pending is lost; continue on a new server stream
    }
    const sent: Sent = { index: this.chunkCount++, start: this.nextSample, end: this.nextSample + samples.length, samples, seq: -1, offset: 0, pending: undefined };
    this.nextSample = sent.end;
    let p: Pending | undefined;
    const promise = new Promise<ChunkResult>((resolve, reject) => {
      p = {
        index: sent.index, start: sent.start, end: sent.end, expectedEnd: sent.end, blocks: [], dropped: 0, done: false,
        abandoned: false, resolve, reject, sent, timer: undefined, settled: Promise.resolve(),
      };
    });
    p!.settled = promise.then(() => undefined, () => undefined);
    sent.pending = p;
    this.history.push(sent);
    this.ledger.add(p!);
    if (this.conn?.open) this.sendAudio(sent, 0);
    else if (!this.reconnecting) void this.reconnect();
    this.settle();
    return promise;
  }

  /** Flush: wait for every chunk's results, send `end`, wait for the last window and `bye`. */
  async stop(): Promise<StopResult> {
    this.checkOpen();
    await Promise.all(this.ledger.pending.map((p) => (p as Pending).settled));
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
      return { ...this.ledger.takeTail(), summary: frame.summary };
    } finally {
      clearInterval(watchdog);
      this.close(undefined);
    }
  }

  /** Abort: reject everything in flight with `reason` and close the connection. */
  close(reason: OstinatoError | undefined): void {
    this.closed ??= reason ?? new StateError("the stream is stopped", { hint: "call startStreaming() again" });
    this.ledger.failAll(this.closed);
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
      if (!this.conn && !this.closed && this.broken === undefined && (this.ledger.pending.length || this.endRequested)) void this.reconnect();
    });
    return this.reconnecting;
  }

  private async handshake(): Promise<void> {
    const inUseDeadline = performance.now() + IN_USE_WAIT_MS;
    let inUseDelayMs = Math.max(50, this.setup.retryPolicy.backoffMs);
    for (let round = 0; ; round++) {
      if (this.closed) throw this.closed;
      const resume = this.streamId !== "" && !this.segmentGone;
      try {
        await this.openOnce(resume);
        return;
      } catch (e) {
        // The server still holds our previous, dead connection until its heartbeat fails
        // (within 15 s): keep retrying the resume without spending the retry budget.
        if (resume && e instanceof OstinatoError && e.code === "stream_in_use" && performance.now() + inUseDelayMs < inUseDeadline) {
          this.inUseRetries++;
          await sleep(inUseDelayMs * (1 - this.setup.retryPolicy.jitter * Math.random()));
          inUseDelayMs = Math.min(2 * inUseDelayMs, 2000, Math.max(50, this.setup.retryPolicy.maxBackoffMs)); // as the Python client
          round--;
          continue;
        }
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
      ? hello({ ...base, stream_id: this.streamId, resume_from_seq: this.nextSeq, outputs, options: { resume_token: this.resumeToken },
          ...(this.lastOutputSeq >= 0 ? { last_output_seq: this.lastOutputSeq } : {}) })
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
    if (resumed && info.resumed === true) {
      this.resumes++;
      const nextSeq = Number(info.next_seq ?? 0);
      this.nextSeq = nextSeq;
      // The server has every frame before next_seq; resend the rest with the same numbers.
      for (const sent of this.history) if (sent.seq >= nextSeq || sent.seq < 0) this.sendAudio(sent, sent.seq < 0 ? 0 : sent.offset);
      for (const p of this.ledger.pending) if (!p.done) this.arm(p as Pending);
      this.setup.emitter.emit("connection", { state: "resumed", streamId: this.streamId });
    } else {
      if (!first) this.replacements++;
      this.lastOutputSeq = -1; // a new server stream numbers its output from 0
      this.throughSeq = -1;
      this.replay(geometry);
      this.setup.emitter.emit("connection", { state: first ? "connected" : "replaced", streamId: this.streamId });
    }
    if (this.endRequested && this.ledger.pending.length === 0) conn.send({ type: "end" });
  }

  /** Start a new server stream: resend the kept audio from a window boundary (see module comment). */
  private replay(g: WindowGeometry): void {
    const first = this.history[0];
    const start = first === undefined ? this.nextSample : Math.max(this.ledger.replayStartSample(), first.start);
    this.segmentGone = false;
    this.nextSeq = 0;
    this.ledger.restart(start, g);
    for (const sent of this.history) {
      if (sent.end <= start) continue;
      this.sendAudio(sent, Math.max(0, start - sent.start));
    }
    this.trimHistory();
  }

  private sendAudio(sent: Sent, offset: number): void {
    sent.seq = this.nextSeq++;
    sent.offset = offset;
    const samples = offset ? sent.samples.subarray(offset) : sent.samples;
    try {
      this.conn!.send({ type: "audio", seq: sent.seq, pcm: encodePcm(samples, this.setup.options.encoding), start_sample: sent.start + offset - this.ledger.segmentStart });
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
    if (this.ledger.pending.length || this.endRequested || !this.segmentGone) {
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

  /** Track output `seq`: count gaps, skip a frame replayed after a resume that arrived already. */
  private isDuplicate(frame: Frame): boolean {
    const seq = frame.type === "event" || frame.type === "features" || frame.type === "status" ? frame.seq : undefined;
    if (frame.type === "status" && frame.through_seq !== undefined) this.throughSeq = Math.max(this.throughSeq, frame.through_seq);
    if (seq === undefined) return false;
    if (seq <= this.lastOutputSeq) return true;
    this.outputGaps += seq - this.lastOutputSeq - 1;
    this.lastOutputSeq = seq;
    return false;
  }

  private onFrame(frame: Frame): void {
    const { emitter } = this.setup;
    if (this.isDuplicate(frame)) return;
    switch (frame.type) {
      case "features":
        this.ledger.features(frame);
        this.trimHistory();
        return;
      case "event": {
        const event = eventFromServer(frame.event, this.streamId, this.ledger.segmentStart / 16000);
        if (event) emitter.emit(event.type, event as never);
        return;
      }
      case "status":
        this.ledger.status(frame);
        this.trimHistory();
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

  /** Forget audio no replacement stream could need: settled, and before the replay start. */
  private trimHistory(): void {
    const keepFrom = this.ledger.replayStartSample();
    while (this.history.length && this.history[0]!.end <= keepFrom && (this.history[0]!.pending?.done ?? true)) this.history.shift();
  }

  // -- bookkeeping ----------------------------------------------------------------------------

  private settle(): void {
    this.ledger.settle();
    this.trimHistory();
  }

  private onSettled(p: Pending): void {
    clearTimeout(p.timer);
    this.slotWaiters.shift()?.();
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
    this.ledger.finish(p, new RequestTimeoutError(`no results for chunk ${p.sent.index} within ${this.setup.timeoutMs} ms; the server is alive but behind`, {
      hint: "the server is overloaded (see the lag in status events); raise timeoutMs or send less audio",
    }));
  }

  private fail(error: OstinatoError): void {
    this.ledger.failAll(error);
    this.history = [];
    this.segmentGone = true;
    this.ledger.covered = this.nextSample;
    this.endWaiter?.reject(error);
    this.endWaiter = undefined;
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
  // The stream is still attached to the old connection until the server notices the drop
  // (servers before the fix called this permanent; it is transient).
  const klass = code === "stream_in_use" ? "transient" : errorClass;
  return errorFromWire(code, message, klass, hint);
}

function asError(e: unknown): OstinatoError {
  if (e instanceof OstinatoError) return e;
  return new ConnectionLostError(e instanceof Error ? e.message : String(e), { cause: e });
}
