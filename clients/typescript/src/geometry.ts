/**
 * Window geometry of a stream: which frames the server has emitted once it holds `n` samples.
 *
 * The server cuts each stream into fixed-shape overlapping windows (`stream/windowing.py`,
 * described by `ready.info.window`); window `k` emits core frames `[k h, (k + 1) h)` (`h` =
 * hop in frames) as soon as the stream holds `start_k + window_samples` samples, where
 * `start_k = max(0, k h - left) * stride`. The stream's end adds one last window with the rest.
 * The client uses this to know which frames a chunk completes, and which audio to replay when a
 * stream must be re-created after a server restart (so the next windows see the same context).
 *
 * @module
 */

import { ProtocolError } from "./errors.js";

export interface WindowGeometry {
  hopSamples: number;
  leftContextSamples: number;
  rightContextSamples: number;
  windowSamples: number;
  frameStrideSamples: number;
  receptiveFieldSamples: number;
}

/** Geometry from `ready.info.window` (and the frame stride of `ready`). */
export function geometryFromReady(info: Record<string, unknown>, frameStrideSamples = 320): WindowGeometry {
  const w = info.window;
  if (w === null || typeof w !== "object") {
    throw new ProtocolError("ready.info.window is missing; the server streams no model features on this stream");
  }
  const win = w as Record<string, unknown>;
  const num = (key: string): number => {
    const v = win[key];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) throw new ProtocolError(`ready.info.window.${key}=${String(v)}; expected an integer >= 0`);
    return v;
  };
  const g: WindowGeometry = {
    hopSamples: num("hop_samples"),
    leftContextSamples: num("left_context_samples"),
    rightContextSamples: num("right_context_samples"),
    windowSamples: num("window_samples"),
    frameStrideSamples,
    receptiveFieldSamples: 0,
  };
  g.receptiveFieldSamples = g.windowSamples - g.leftContextSamples - g.hopSamples - g.rightContextSamples + frameStrideSamples;
  if (g.hopSamples === 0 || g.hopSamples % frameStrideSamples || g.leftContextSamples % frameStrideSamples || g.receptiveFieldSamples < frameStrideSamples) {
    throw new ProtocolError(`ready.info.window=${JSON.stringify(w)} is not a valid window geometry for stride ${frameStrideSamples}`);
  }
  return g;
}

/** Geometry the server derives from a chunk/overlap pair (`WindowerConfig.from_chunk_overlap`). */
export function geometryFromChunkOverlap(chunkSamples: number, overlapSamples: number, stride = 320, receptiveField = 400): WindowGeometry {
  const left = overlapSamples - (receptiveField - stride);
  return {
    hopSamples: chunkSamples,
    leftContextSamples: left,
    rightContextSamples: 0,
    windowSamples: left + chunkSamples + receptiveField - stride,
    frameStrideSamples: stride,
    receptiveFieldSamples: receptiveField,
  };
}

/** Frames of a whole stream of `n` samples: `floor((n - rf) / stride) + 1`, 0 below one frame. */
export function numFrames(n: number, g: WindowGeometry): number {
  return n < g.receptiveFieldSamples ? 0 : Math.floor((n - g.receptiveFieldSamples) / g.frameStrideSamples) + 1;
}

/** Core frames emitted by the regular windows once the stream holds `n` samples. */
export function framesEmitted(n: number, g: WindowGeometry): number {
  if (n < g.windowSamples) return 0;
  const s = g.frameStrideSamples;
  const hop = g.hopSamples / s;
  const left = g.leftContextSamples / s;
  const windows = Math.floor((Math.floor((n - g.windowSamples) / s) + left) / hop) + 1;
  return windows * hop;
}

/**
 * Where a replacement stream must start so that its windows covering frame `covered` onwards
 * are identical to the original stream's (same samples, same full left context).
 *
 * @param covered Frames of the original stream already delivered.
 * @returns The first frame (of the original stream) the replacement starts at.
 */
export function replayStartFrame(covered: number, g: WindowGeometry): number {
  const hop = g.hopSamples / g.frameStrideSamples;
  const left = g.leftContextSamples / g.frameStrideSamples;
  const windowsOfContext = Math.ceil(left / hop);
  return Math.max(0, (Math.floor(covered / hop) - windowsOfContext) * hop);
}
