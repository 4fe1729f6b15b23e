/**
 * Bounded retries with exponential backoff and jitter, for transient errors only (mirrors
 * `stream/retry.py`): `input` and `permanent` errors are thrown at once; a transient error is
 * retried up to `maxRetries` times, sleeping `min(maxBackoffMs, backoffMs * multiplier ** (n - 1))`
 * scaled by jitter — drawn uniformly from `[d * (1 - jitter), d]` — so clients that failed
 * together do not retry in lockstep.
 *
 * @module
 */

import { ConfigError, classifyError } from "./errors.js";

/** How often and how patiently to retry. */
export interface RetryPolicy {
  /** Retries after the first failed attempt (default 3). */
  maxRetries: number;
  /** Delay before the first retry in ms, before jitter (default 1000). */
  backoffMs: number;
  /** Cap on any delay in ms (default 30000). */
  maxBackoffMs: number;
  /** Growth factor per retry (default 2). */
  multiplier: number;
  /** Randomized fraction of each delay, 0..1 (default 0.5). */
  jitter: number;
}

export const DEFAULT_RETRY_POLICY: Readonly<RetryPolicy> = Object.freeze({
  maxRetries: 3,
  backoffMs: 1000,
  maxBackoffMs: 30_000,
  multiplier: 2,
  jitter: 0.5,
});

/**
 * Fill in defaults and validate.
 *
 * @throws {ConfigError} Naming the bad field.
 */
export function retryPolicy(init: Partial<RetryPolicy> = {}): RetryPolicy {
  const p: RetryPolicy = { ...DEFAULT_RETRY_POLICY, ...stripUndefined(init) };
  if (!Number.isInteger(p.maxRetries) || p.maxRetries < 0 || p.maxRetries > 100) {
    throw new ConfigError("maxRetries", `${String(p.maxRetries)}; expected an integer in 0..100`);
  }
  if (!Number.isFinite(p.backoffMs) || p.backoffMs < 0) {
    throw new ConfigError("backoff", `${String(p.backoffMs)}; expected a number of milliseconds >= 0`);
  }
  if (!Number.isFinite(p.maxBackoffMs) || p.maxBackoffMs < p.backoffMs) {
    throw new ConfigError("maxBackoffMs", `${String(p.maxBackoffMs)}; expected >= backoff (${p.backoffMs} ms)`);
  }
  if (!Number.isFinite(p.multiplier) || p.multiplier < 1) {
    throw new ConfigError("multiplier", `${String(p.multiplier)}; expected >= 1`);
  }
  if (!Number.isFinite(p.jitter) || p.jitter < 0 || p.jitter > 1) {
    throw new ConfigError("jitter", `${String(p.jitter)}; expected a fraction in [0, 1]`);
  }
  return p;
}

/** Delay in ms after failed attempt number `attempt` (1-based), given a uniform draw `u` in [0, 1). */
export function backoffDelayMs(policy: RetryPolicy, attempt: number, u: number = Math.random()): number {
  const nominal = Math.min(policy.maxBackoffMs, policy.backoffMs * policy.multiplier ** Math.max(0, attempt - 1));
  return nominal * (1 - policy.jitter * u);
}

export interface RetryHooks {
  /** Called before each sleep as `(attempt, error, delayMs)`. */
  onRetry?: (attempt: number, error: unknown, delayMs: number) => void;
  /** Which errors to retry (default: `classifyError(e) === "transient"`). */
  isRetryable?: (error: unknown) => boolean;
  /** Uniform random source in [0, 1) (injectable for tests). */
  random?: () => number;
  /** Sleep (injectable for tests); rejects when `signal` aborts. */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Aborts the waiting between attempts. */
  signal?: AbortSignal | undefined;
}

/**
 * Call `fn` until it succeeds, retrying transient failures per `policy`.
 *
 * @returns The first successful result.
 * @throws The first non-retryable error, or the last error once retries are exhausted.
 */
export async function retry<T>(fn: (attempt: number) => Promise<T>, policy: RetryPolicy, hooks: RetryHooks = {}): Promise<T> {
  const isRetryable = hooks.isRetryable ?? ((e: unknown) => classifyError(e) === "transient");
  const sleepFn = hooks.sleep ?? sleep;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      if (!isRetryable(e) || attempt > policy.maxRetries || hooks.signal?.aborted) throw e;
      // An open breaker says when it will let a probe through: waiting less only burns a retry.
      const retryInMs = (e as { retryInMs?: unknown }).retryInMs;
      const delayMs = Math.max(backoffDelayMs(policy, attempt, (hooks.random ?? Math.random)()), typeof retryInMs === "number" ? retryInMs : 0);
      hooks.onRetry?.(attempt, e, delayMs);
      await sleepFn(delayMs, hooks.signal);
    }
  }
}

/** Resolve after `ms`; reject with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

export function stripUndefined<T extends object>(obj: T): Partial<T> {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined)) as Partial<T>;
}
