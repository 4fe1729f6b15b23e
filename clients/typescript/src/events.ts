/**
 * Events the adapter emits, their payload types (camelCase versions of docs/events.md and of
 * the `status` frame), and a small typed emitter that works the same in Node.js and browsers.
 *
 * @module
 */

import type { BreakerState } from "./breaker.js";
import type { OstinatoError } from "./errors.js";
import type { StatusFrame } from "./wire.js";

/** A sound heard before occurred again (times in seconds of the stream). */
export interface MatchEvent {
  type: "match";
  streamId: string;
  patternId: string;
  firstStartS: number;
  firstEndS: number;
  startS: number;
  endS: number;
  score: number;
  detectedAtS: number;
}

/** A stretch of audio unlike anything in the matcher's buffer. */
export interface NoveltyEvent {
  type: "novelty";
  streamId: string;
  startS: number;
  endS: number;
  score: number;
  detectedAtS: number;
}

/** The server's periodic stream status. */
export interface StatusEvent {
  streamId: string;
  lagS: number;
  dropped: Record<string, number>;
  health: "ok" | "degraded" | "failing";
  reasons: string[];
  frames: number;
  audioS: number;
  levelDbfs: number;
}

/** Connection life of the stream: reconnects, resumes, replacement streams. */
export interface ConnectionEvent {
  state: "connected" | "reconnecting" | "resumed" | "replaced" | "failed" | "closed";
  streamId: string;
  /** Reconnect attempt (1-based) for `reconnecting`. */
  attempt?: number;
  /** Delay before that attempt in ms. */
  delayMs?: number;
  error?: OstinatoError;
}

export interface BreakerEvent {
  state: BreakerState;
  previous: BreakerState;
}

export interface AdapterEvents {
  match: MatchEvent;
  novelty: NoveltyEvent;
  status: StatusEvent;
  error: OstinatoError;
  connection: ConnectionEvent;
  breaker: BreakerEvent;
}

export type AdapterEventName = keyof AdapterEvents;
export type Listener<T> = (event: T) => void;

/** Typed event emitter; a throwing listener does not stop the others (it is reported once to `error`). */
export class Emitter<E extends { [K in keyof E]: unknown }> {
  private readonly listeners = new Map<keyof E, Set<Listener<never>>>();

  /** Add a listener; returns a function that removes it. */
  on<K extends keyof E>(name: K, listener: Listener<E[K]>): () => void {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(listener as Listener<never>);
    return () => this.off(name, listener);
  }

  off<K extends keyof E>(name: K, listener: Listener<E[K]>): void {
    this.listeners.get(name)?.delete(listener as Listener<never>);
  }

  listenerCount(name: keyof E): number {
    return this.listeners.get(name)?.size ?? 0;
  }

  emit<K extends keyof E>(name: K, event: E[K]): void {
    for (const listener of [...(this.listeners.get(name) ?? [])]) {
      try {
        (listener as Listener<E[K]>)(event);
      } catch (e) {
        if (name !== "error") queueMicrotask(() => this.emit("error" as K, e as E[K]));
      }
    }
  }

  removeAll(): void {
    this.listeners.clear();
  }
}

const num = (v: unknown, fallback = 0): number => (typeof v === "number" && Number.isFinite(v) ? v : fallback);

/**
 * A server event object (`{"event": "match", "pattern_id": ...}`) as a typed event, with
 * stream times shifted by `offsetS` (a replacement stream starts later in the audio).
 */
export function eventFromServer(raw: Record<string, unknown>, streamId: string, offsetS = 0): MatchEvent | NoveltyEvent | undefined {
  if (raw.event === "match") {
    return {
      type: "match",
      streamId,
      patternId: String(raw.pattern_id ?? ""),
      firstStartS: num(raw.first_start_s) + offsetS,
      firstEndS: num(raw.first_end_s) + offsetS,
      startS: num(raw.start_s) + offsetS,
      endS: num(raw.end_s) + offsetS,
      score: num(raw.score),
      detectedAtS: num(raw.detected_at_s) + offsetS,
    };
  }
  if (raw.event === "novelty") {
    return {
      type: "novelty",
      streamId,
      startS: num(raw.start_s) + offsetS,
      endS: num(raw.end_s) + offsetS,
      score: num(raw.score),
      detectedAtS: num(raw.detected_at_s) + offsetS,
    };
  }
  return undefined;
}

export function statusFromServer(frame: StatusFrame, streamId: string): StatusEvent {
  return {
    streamId,
    lagS: frame.lag_s,
    dropped: { ...frame.dropped },
    health: frame.health,
    reasons: [...frame.reasons],
    frames: frame.frames,
    audioS: frame.audio_s,
    levelDbfs: frame.level_dbfs,
  };
}
