import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { CircuitBreaker, breakerConfig } from "../../src/breaker.js";
import { BreakerOpenError, ConfigError, ConnectionLostError, InputError, ServerError } from "../../src/errors.js";
import { backoffDelayMs, retry, retryPolicy } from "../../src/retry.js";

describe("retry policy", () => {
  it("has the seed defaults and validates", () => {
    assert.deepEqual(retryPolicy(), { maxRetries: 3, backoffMs: 1000, maxBackoffMs: 30000, multiplier: 2, jitter: 0.5 });
    assert.throws(() => retryPolicy({ maxRetries: -1 }), (e: unknown) => e instanceof ConfigError && e.field === "maxRetries");
    assert.throws(() => retryPolicy({ backoffMs: Number.NaN }), (e: unknown) => e instanceof ConfigError && e.field === "backoff");
    assert.throws(() => retryPolicy({ jitter: 2 }), (e: unknown) => e instanceof ConfigError && e.field === "jitter");
  });

  it("backs off exponentially, capped, with jitter in [d(1-j), d]", () => {
    const p = retryPolicy({ backoffMs: 100, maxBackoffMs: 350 });
    assert.deepEqual([1, 2, 3, 4].map((a) => backoffDelayMs(p, a, 0)), [100, 200, 350, 350]);
    assert.deepEqual([1, 2, 3].map((a) => backoffDelayMs(p, a, 1)), [50, 100, 175]);
    for (let i = 0; i < 100; i++) {
      const d = backoffDelayMs(p, 2);
      assert.ok(d > 100 && d <= 200);
    }
  });

  it("retries transient errors only, up to maxRetries", async () => {
    const slept: number[] = [];
    const sleep = async (ms: number): Promise<void> => void slept.push(ms);
    let calls = 0;
    await assert.rejects(
      retry(async () => { calls++; throw new ConnectionLostError("down"); }, retryPolicy({ maxRetries: 3, backoffMs: 10 }), { sleep, random: () => 0 }),
      ConnectionLostError,
    );
    assert.equal(calls, 4);
    assert.deepEqual(slept, [10, 20, 40]);
    calls = 0;
    await assert.rejects(retry(async () => { calls++; throw new InputError("bad"); }, retryPolicy(), { sleep }), InputError);
    assert.equal(calls, 1);
    calls = 0;
    const permanent = new ServerError("no", { errorClass: "permanent" });
    await assert.rejects(retry(async () => { calls++; throw permanent; }, retryPolicy(), { sleep }), (e) => e === permanent);
    assert.equal(calls, 1);
    calls = 0;
    const ok = await retry(async () => { if (++calls < 3) throw new ConnectionLostError("blip"); return "up"; }, retryPolicy(), { sleep });
    assert.equal(ok, "up");
    assert.equal(calls, 3);
  });
});

describe("circuit breaker", () => {
  const make = (): { b: CircuitBreaker; advance: (ms: number) => void; seen: string[] } => {
    let now = 0;
    const b = new CircuitBreaker("t", { failureThreshold: 3, cooldownMs: 1000 }, () => now);
    const seen: string[] = [];
    b.onStateChange((s, prev) => seen.push(`${prev}->${s}`));
    return { b, advance: (ms) => (now += ms), seen };
  };

  it("opens after consecutive failures, fails fast, half-opens after the cool-down, closes on a good probe", () => {
    const { b, advance, seen } = make();
    b.recordFailure();
    b.recordFailure();
    assert.equal(b.state, "closed");
    b.recordFailure();
    assert.equal(b.state, "open");
    assert.throws(() => b.check(), (e: unknown) => e instanceof BreakerOpenError && e.transient && e.retryInMs === 1000);
    advance(999);
    assert.equal(b.state, "open");
    advance(1);
    assert.equal(b.state, "half_open");
    b.check(); // the probe
    assert.throws(() => b.check(), BreakerOpenError); // one probe at a time
    b.recordSuccess();
    assert.equal(b.state, "closed");
    assert.deepEqual(seen, ["closed->open", "open->half_open", "half_open->closed"]);
    assert.equal(b.openCount, 1);
  });

  it("reopens when the probe fails", () => {
    const { b, advance } = make();
    for (let i = 0; i < 3; i++) b.recordFailure();
    advance(1000);
    assert.ok(b.allow());
    b.recordFailure();
    assert.equal(b.state, "open");
    assert.equal(b.openCount, 2);
  });

  it("opens on the error rate too, and a success resets the consecutive count", () => {
    let now = 0;
    const b = new CircuitBreaker("r", { failureThreshold: 100, errorRateThreshold: 0.5, windowCalls: 4, minCalls: 4 }, () => now);
    b.recordFailure();
    b.recordSuccess();
    b.recordSuccess();
    assert.equal(b.state, "closed");
    b.recordFailure();
    assert.equal(b.state, "open"); // 2 of the last 4 failed (judged when a failure is recorded)
    now += 1e9;
    assert.equal(b.state, "half_open");
  });

  it("validates its config", () => {
    assert.throws(() => breakerConfig({ failureThreshold: 0 }), (e: unknown) => e instanceof ConfigError && e.field === "breaker.failureThreshold");
    assert.throws(() => breakerConfig({ minCalls: 50 }), (e: unknown) => e instanceof ConfigError && e.field === "breaker.minCalls");
    assert.throws(() => breakerConfig({ cooldownMs: -1 }), ConfigError);
  });
});
