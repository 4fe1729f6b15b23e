/**
 * Which frames belong to which chunk (sans-IO bookkeeping of a {@link FeatureStream}).
 *
 * Chunks are numbered in stream samples. The window geometry says up to which frame the server
 * has emitted once it holds a chunk's last sample (`expectedEnd`); `features` frames arrive in
 * order and are handed to the chunks expecting them; a chunk resolves once every frame it
 * expects has arrived or is known to be gone. Frames before `covered` are duplicates (a
 * replacement stream replays context) and are skipped; a jump past `covered` means frames the
 * server dropped or that were lost with a connection, counted as `droppedFrames`.
 *
 * @module
 */

import { type WindowGeometry, framesEmitted, replayStartFrame } from "./geometry.js";
import { type FeaturesFrame, type StatusFrame, featuresToFloat32 } from "./wire.js";

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
  /** Frames the server dropped (deadline, overload) or that were lost with a connection; absent above. */
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

/** A chunk waiting for its frames. */
export interface LedgerChunk {
  index: number;
  start: number;
  end: number;
  /** Stream sample of the first frame this chunk does not complete. */
  expectedEnd: number;
  blocks: Block[];
  dropped: number;
  done: boolean;
  /** Given up (timed out): its frames are discarded when they come. */
  abandoned: boolean;
  resolve: (r: ChunkResult) => void;
  reject: (e: unknown) => void;
}

/** Frame bookkeeping of one logical stream (see the module comment). */
export class FrameLedger {
  geometry: WindowGeometry | undefined;
  /** Stream sample at which the current server stream's sample 0 lies. */
  segmentStart = 0;
  /** Stream sample of the first frame not yet delivered (or given up). */
  covered = 0;
  readonly pending: LedgerChunk[] = [];
  private output = "";
  private tail: Block[] = [];
  private tailDropped = 0;

  /** @param onSettled Called once per chunk when it resolves or rejects. */
  constructor(private readonly onSettled: (chunk: LedgerChunk) => void = () => undefined) {}

  /** Chunks not settled yet. */
  get inFlight(): number {
    return this.pending.filter((c) => !c.done).length;
  }

  /** Track a chunk; it resolves as soon as the frames it completes are in (maybe at once). */
  add(chunk: LedgerChunk): void {
    chunk.expectedEnd = this.expectedEnd(chunk.end);
    this.pending.push(chunk);
  }

  /** A new server stream starts at stream sample `start` (with geometry `g`). */
  restart(start: number, g: WindowGeometry): void {
    this.geometry = g;
    this.segmentStart = start;
    this.covered = Math.max(this.covered, start);
    for (const c of this.pending) c.expectedEnd = this.expectedEnd(c.end);
    this.settle();
  }

  /** Where a replacement stream must start for its next windows to see the same context. */
  replayStartSample(): number {
    const g = this.geometry;
    if (!g) return this.covered;
    const stride = g.frameStrideSamples;
    return this.segmentStart + replayStartFrame(Math.max(0, Math.floor((this.covered - this.segmentStart) / stride)), g) * stride;
  }

  /** Take a `features` frame of the current server stream. */
  features(frame: FeaturesFrame): void {
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
    this.route({ start, n, dim: frame.dim, data }, stride);
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
  status(frame: StatusFrame): void {
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

  /** Resolve every chunk, oldest first, whose expected frames have all arrived (or were dropped). */
  settle(): void {
    while (this.pending.length && this.pending[0]!.expectedEnd <= this.covered) {
      const c = this.pending.shift()!;
      if (!c.abandoned) this.finish(c, undefined);
    }
  }

  /** Settle one chunk: resolve it with its frames, or reject it with `error`. */
  finish(c: LedgerChunk, error: unknown): void {
    if (c.done) return;
    c.done = true;
    if (error === undefined) c.resolve({ chunk: c.index, startSample: c.start, endSample: c.end, ...this.collect(c.blocks, c.dropped) });
    else c.reject(error);
    this.onSettled(c);
  }

  /** Reject every pending chunk with `error` and forget them. */
  failAll(error: unknown): void {
    for (const c of this.pending.splice(0)) this.finish(c, error);
  }

  /** Frames that arrived after every chunk's (the stream's last window). */
  takeTail(): FeatureFrames {
    const out = this.collect(this.tail, this.tailDropped);
    this.tail = [];
    this.tailDropped = 0;
    return out;
  }

  private expectedEnd(end: number): number {
    const g = this.geometry;
    if (!g) return end;
    return this.segmentStart + framesEmitted(end - this.segmentStart, g) * g.frameStrideSamples;
  }

  /** Count the frames from `covered` up to `until` as dropped, each for the chunk that expected it. */
  private markLost(until: number): void {
    const stride = this.geometry?.frameStrideSamples ?? 320;
    let lo = this.covered;
    for (const c of this.pending) {
      if (lo >= until) return;
      if (c.expectedEnd <= lo) continue;
      const hi = Math.min(until, c.expectedEnd);
      c.dropped += Math.round((hi - lo) / stride);
      lo = hi;
    }
    if (lo < until) this.tailDropped += Math.round((until - lo) / stride);
  }

  /** Give a block to the chunks whose frames it holds (the rest to the tail). */
  private route(block: Block, stride: number): void {
    let b: Block | undefined = block;
    for (const c of this.pending) {
      if (!b) return;
      if (c.expectedEnd <= b.start) continue;
      const take = Math.min(b.n, Math.ceil((c.expectedEnd - b.start) / stride));
      if (!c.abandoned) c.blocks.push({ ...b, n: take, data: b.data.subarray(0, take * b.dim) });
      b = take < b.n ? { start: b.start + take * stride, n: b.n - take, dim: b.dim, data: b.data.subarray(take * b.dim) } : undefined;
    }
    if (b) this.tail.push(b);
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
}
