/**
 * Circuit breaker with an observable state (mirrors `stream/breaker.py`):
 *
 * ```text
 * closed --(N consecutive failures, or error rate >= threshold)--> open
 * open --(cool-down elapsed)--> half_open   (lets `halfOpenProbes` calls through)
 * half_open --(probes succeed)--> closed
 * half_open --(a probe fails)--> open       (cool-down starts again)
 * ```
 *
 * Guard a call with {@link CircuitBreaker.check} (throws {@link BreakerOpenError}) or
 * {@link CircuitBreaker.allow}, then report its outcome with `recordSuccess` / `recordFailure`.
 *
 * @module
 */

import { BreakerOpenError, ConfigError } from "./errors.js";
import { stripUndefined } from "./retry.js";

export type BreakerState = "closed" | "open" | "half_open";

/** When the breaker opens and how it recovers. */
export interface BreakerConfig {
  /** Consecutive failures that open it (default 3, as the Python client). */
  failureThreshold: number;
  /** Failure fraction over the last `windowCalls` calls that opens it (1 disables the rule). */
  errorRateThreshold: number;
  /** Rolling window for the error rate (default 10). */
  windowCalls: number;
  /** Calls needed before the error-rate rule applies (default 3). */
  minCalls: number;
  /** Time spent open before probing, in ms (default 10000). */
  cooldownMs: number;
  /** Successful probes needed to close again (default 1). */
  halfOpenProbes: number;
}

export const DEFAULT_BREAKER_CONFIG: Readonly<BreakerConfig> = Object.freeze({
  failureThreshold: 3,
  errorRateThreshold: 0.5,
  windowCalls: 10,
  minCalls: 3,
  cooldownMs: 10_000,
  halfOpenProbes: 1,
});

/**
 * Fill in defaults and validate.
 *
 * @throws {ConfigError} Naming the bad field.
 */
export function breakerConfig(init: Partial<BreakerConfig> = {}): BreakerConfig {
  const c: BreakerConfig = { ...DEFAULT_BREAKER_CONFIG, ...stripUndefined(init) };
  const positiveInt = (name: keyof BreakerConfig): void => {
    const v = c[name];
    if (!Number.isInteger(v) || v < 1) throw new ConfigError(`breaker.${name}`, `${String(v)}; expected an integer >= 1`);
  };
  positiveInt("failureThreshold");
  positiveInt("windowCalls");
  positiveInt("halfOpenProbes");
  if (!Number.isInteger(c.minCalls) || c.minCalls < 1 || c.minCalls > c.windowCalls) {
    throw new ConfigError("breaker.minCalls", `${String(c.minCalls)}; expected 1 <= minCalls <= windowCalls (${c.windowCalls})`);
  }
  if (!(c.errorRateThreshold > 0 && c.errorRateThreshold <= 1)) {
    throw new ConfigError("breaker.errorRateThreshold", `${String(c.errorRateThreshold)}; expected in (0, 1]`);
  }
  if (!Number.isFinite(c.cooldownMs) || c.cooldownMs < 0) {
    throw new ConfigError("breaker.cooldownMs", `${String(c.cooldownMs)}; expected a number of milliseconds >= 0`);
  }
  return c;
}

export type BreakerListener = (state: BreakerState, previous: BreakerState) => void;

/** Tracks failures of one dependency (the ostinato server) and decides whether calls may proceed. */
export class CircuitBreaker {
  readonly name: string;
  readonly config: BreakerConfig;
  /** Times the breaker opened. */
  openCount = 0;

  private stateValue: BreakerState = "closed";
  private consecutive = 0;
  private window: boolean[] = [];
  private openedAtMs = 0;
  private probesInFlight = 0;
  private probeSuccesses = 0;
  private readonly clock: () => number;
  private readonly listeners = new Set<BreakerListener>();

  constructor(name: string, config: Partial<BreakerConfig> = {}, clock: () => number = () => performance.now()) {
    this.name = name;
    this.config = breakerConfig(config);
    this.clock = clock;
  }

  /** Current state (an open breaker whose cool-down elapsed reads as half-open). */
  get state(): BreakerState {
    if (this.stateValue === "open" && this.clock() - this.openedAtMs >= this.config.cooldownMs) {
      this.transition("half_open");
    }
    return this.stateValue;
  }

  /** Milliseconds until an open breaker half-opens (0 when not open). */
  get retryInMs(): number {
    if (this.state !== "open") return 0;
    return Math.max(0, this.config.cooldownMs - (this.clock() - this.openedAtMs));
  }

  /** Be told of every state change; returns a function that removes the listener. */
  onStateChange(listener: BreakerListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Whether a call may proceed now; in half-open state this reserves a probe slot. */
  allow(): boolean {
    const state = this.state;
    if (state === "closed") return true;
    if (state === "half_open" && this.probesInFlight < this.config.halfOpenProbes) {
      this.probesInFlight++;
      return true;
    }
    return false;
  }

  /**
   * Like {@link allow}, but throw when the call must not proceed.
   *
   * @throws {BreakerOpenError} While open (or half-open with every probe slot taken).
   */
  check(): void {
    if (!this.allow()) {
      const retryInMs = this.retryInMs;
      throw new BreakerOpenError(
        `circuit breaker '${this.name}' is ${this.stateValue}; retry in ${(retryInMs / 1000).toFixed(1)} s`,
        retryInMs,
      );
    }
  }

  /** Report that an allowed call succeeded. */
  recordSuccess(): void {
    this.push(true);
    this.consecutive = 0;
    if (this.stateValue === "half_open") {
      this.probesInFlight = Math.max(0, this.probesInFlight - 1);
      this.probeSuccesses++;
      if (this.probeSuccesses >= this.config.halfOpenProbes) this.transition("closed");
    }
  }

  /** Report that an allowed call failed (transient failures only: the server was unreachable or overloaded). */
  recordFailure(): void {
    this.push(false);
    this.consecutive++;
    if (this.stateValue === "half_open") {
      this.trip();
      return;
    }
    if (this.stateValue === "open") return;
    if (this.consecutive >= this.config.failureThreshold) {
      this.trip();
      return;
    }
    const failures = this.window.filter((ok) => !ok).length;
    if (this.window.length >= this.config.minCalls && failures / this.window.length >= this.config.errorRateThreshold) {
      this.trip();
    }
  }

  /** Close the breaker and forget all history. */
  reset(): void {
    this.window = [];
    this.consecutive = 0;
    this.transition("closed");
  }

  private push(ok: boolean): void {
    this.window.push(ok);
    if (this.window.length > this.config.windowCalls) this.window.shift();
  }

  private trip(): void {
    this.openedAtMs = this.clock();
    this.openCount++;
    this.transition("open");
  }

  private transition(state: BreakerState): void {
    const previous = this.stateValue;
    if (state === previous && state !== "open") return;
    if (state === "closed" && previous !== "closed") this.window = [];
    this.stateValue = state;
    this.probesInFlight = 0;
    this.probeSuccesses = 0;
    if (state === "half_open") this.consecutive = 0;
    if (state !== previous) for (const listener of [...this.listeners]) listener(state, previous);
  }
}
