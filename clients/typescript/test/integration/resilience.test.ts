/**
 * Failure handling against real servers: a server killed and restarted mid-stream, a network
 * cut (resume within the grace period), a server that stalls, the circuit breaker, timeouts.
 */

import assert from "node:assert/strict";
import { afterEach, describe, it } from "node:test";

import { Wav2Vec2FeatureAdapter } from "../../src/adapter.js";
import { BreakerOpenError, ConnectionLostError, RequestTimeoutError } from "../../src/errors.js";
import type { ConnectionEvent } from "../../src/events.js";
import type { ChunkResult, StopResult } from "../../src/stream.js";
import { Server, chunks, freePort, proxy, readWav, stalledServer, testAudio } from "../helpers/server.js";

const OPTIONS = { chunkSize: 1600, overlap: 400, maxQueueSize: 6, batchSize: 4 };

interface Run {
  results: ChunkResult[];
  stop: StopResult;
  starts: number[];
  features: Float32Array;
  events: ConnectionEvent[];
  streamIds: string[];
}

/** Stream `samples`; `during(i)` runs before chunk i is sent (chunks after `awaitUntil` are not awaited one by one). */
async function stream(adapter: Wav2Vec2FeatureAdapter, samples: Float32Array, during: (i: number) => Promise<void>, awaitUntil: number): Promise<Run> {
  const events: ConnectionEvent[] = [];
  adapter.on("connection", (e) => events.push(e));
  await adapter.startStreaming(OPTIONS);
  const streamIds = [adapter.streamId];
  const pending: Array<Promise<ChunkResult>> = [];
  const list = chunks(samples, 1600);
  for (let i = 0; i < list.length; i++) {
    await during(i);
    const p = adapter.processChunk(list[i]!);
    pending.push(p);
    if (i < awaitUntil) await p;
  }
  const results = await Promise.all(pending);
  streamIds.push(adapter.streamId);
  const stop = await adapter.stopStreaming();
  const starts = [...results.flatMap((r) => r.frameStartSamples), ...stop.frameStartSamples];
  const features = Float32Array.from([...results.flatMap((r) => [...r.features]), ...stop.features]);
  return { results, stop, starts, features, events, streamIds };
}

/**
 * Every frame of the reference run arrived once, in order, with the same features — or, where
 * `allowLost`, was counted in `droppedFrames` (see the resume note in the report: the server's
 * frames written to a connection that dies are not replayed on resume).
 */
function assertSameFrames(got: Run, reference: Run, tolerance: number, allowLost = 0, exactBeforeSample = Infinity): void {
  const dropped = got.results.reduce((n, r) => n + r.droppedFrames, got.stop.droppedFrames);
  assert.ok(dropped <= allowLost, `${dropped} frames dropped`);
  assert.equal(got.starts.length + dropped, reference.starts.length, "every frame arrived or was counted as dropped");
  if (!dropped) assert.deepEqual(got.starts, reference.starts, "every frame once, in order, none lost");
  const dim = reference.features.length / reference.starts.length;
  const index = new Map(reference.starts.map((s, j) => [s, j]));
  let maxDiff = 0;
  assert.ok(got.starts.some((s) => s < exactBeforeSample), "some frames are compared exactly");
  got.starts.forEach((s, j) => {
    const k = index.get(s);
    assert.ok(k !== undefined, `frame at sample ${s} is not a reference frame`);
    for (let d = 0; d < dim; d++) {
      const value = got.features[j * dim + d]!;
      assert.ok(Number.isFinite(value), `frame at sample ${s} is not finite`);
      if (s < exactBeforeSample) maxDiff = Math.max(maxDiff, Math.abs(value - reference.features[k * dim + d]!));
    }
  });
  assert.ok(got.starts.every((s, j) => j === 0 || s > got.starts[j - 1]!), "in order, no duplicates");
  assert.ok(maxDiff <= tolerance, `max |features - reference| = ${maxDiff}`);
}

const adapters: Wav2Vec2FeatureAdapter[] = [];
function adapterFor(...args: ConstructorParameters<typeof Wav2Vec2FeatureAdapter>): Wav2Vec2FeatureAdapter {
  const adapter = new Wav2Vec2FeatureAdapter(...args);
  adapters.push(adapter);
  return adapter;
}

describe("resilience", { timeout: 120_000 }, () => {
  afterEach(async () => {
    await Promise.all(adapters.splice(0).map((a) => a.dispose()));
  });

  it("retries, reconnects and continues when the server is killed and restarted mid-stream", async () => {
    const samples = readWav((await testAudio()).speech);
    const port = await freePort();
    let server = await Server.start({ port, modelName: "base" });
    try {
      const reference = adapterFor(server.url, { model: "base" });
      await reference.initialize({ name: "ref" });
      const clean = await stream(reference, samples, async () => undefined, 0);
      await reference.dispose();

      const adapter = adapterFor(server.url, { model: "base", breaker: { cooldownMs: 2000 } }, 5000, { maxRetries: 8, backoff: 300 });
      await adapter.initialize({ name: "survivor" });
      let restarted: Promise<Server> | undefined;
      const run = await stream(adapter, samples, async (i) => {
        if (i === 12) {
          await server.kill(); // SIGKILL: no bye, the stream's state dies with the process
          restarted = Server.start({ port, modelName: "base" });
        }
      }, 12);
      server = await restarted!;
      assert.ok(run.events.some((e) => e.state === "reconnecting"), JSON.stringify(run.events.map((e) => e.state)));
      assert.ok(run.events.some((e) => e.state === "replaced"), "a replacement stream continued the audio");
      assert.notEqual(run.streamIds[0], run.streamIds[1]);
      assert.equal(run.results.length, chunks(samples, 1600).length, "every chunk resolved");
      assert.ok(run.results.every((r) => r.droppedFrames === 0));
      // A replacement stream is a new server stream: its normalisation statistics (live streams
      // use running statistics, docs/streaming.md) and matcher history start afresh, so only the
      // frames served before the kill must equal the uninterrupted run; every frame still arrives
      // once, in order, at the reference times.
      assertSameFrames(run, clean, 1e-4, 0, 12 * 1600 - 2000);
      await adapter.dispose();
    } finally {
      await server.stop();
    }
  });

  it("resumes the same stream id after a network cut, resending what the server missed", async () => {
    const samples = readWav((await testAudio()).planted).subarray(0, 16000 * 6);
    const server = await Server.start({ modelName: "base" });
    const net = await proxy(server.port);
    try {
      const reference = adapterFor(server.url, { model: "base" });
      await reference.initialize({ name: "ref2" });
      const clean = await stream(reference, samples, async () => undefined, 0);
      await reference.dispose();

      const adapter = adapterFor(net.url, { model: "base" }, 5000, { maxRetries: 5, backoff: 200 });
      await adapter.initialize({ name: "resumer" });
      let resumed = 0;
      adapter.on("connection", (e) => void (resumed += e.state === "resumed" ? 1 : 0));
      const run = await stream(adapter, samples, async (i) => {
        if (i === 20) {
          assert.ok(net.cut() >= 1, "the proxy cut the live connection");
          for (let t = 0; resumed === 0 && t < 200; t++) await new Promise((r) => setTimeout(r, 25)); // idle stream: resumes at once
        }
        if (i === 40) assert.ok(net.cut() >= 1, "the proxy cut the live connection"); // chunks 30.. are in flight
      }, 30);
      assert.ok(run.events.filter((e) => e.state === "resumed").length >= 2, JSON.stringify(run.events.map((e) => e.state)));
      assert.ok(!run.events.some((e) => e.state === "replaced"));
      assert.equal(run.streamIds[0], run.streamIds[1], "same server stream after resuming");
      // output frames written into the cut connections are replayed (last_output_seq): nothing lost
      assertSameFrames(run, clean, 1e-4);
      assert.ok(run.results.every((r) => r.droppedFrames === 0));
      assert.equal(run.stop.summary.stream_id, run.streamIds[0]);
      await adapter.dispose();
    } finally {
      await net.close();
      await server.stop();
    }
  });

  it("detects a stalled server, and resumes once it answers again", async () => {
    const samples = readWav((await testAudio()).speech).subarray(0, 16000 * 4);
    const server = await Server.start({ modelName: "base" });
    try {
      const adapter = adapterFor(server.url, { model: "base" }, 1000, { maxRetries: 10, backoff: 200 });
      await adapter.initialize({ name: "stall" });
      const run = await stream(adapter, samples, async (i) => {
        if (i === 10) {
          server.proc.kill("SIGSTOP");
          setTimeout(() => server.proc.kill("SIGCONT"), 2500);
        }
      }, 10);
      const lost = run.events.filter((e) => e.state === "reconnecting");
      assert.ok(lost.some((e) => e.error instanceof RequestTimeoutError), JSON.stringify(lost.map((e) => String(e.error))));
      assert.ok(run.events.some((e) => e.state === "resumed" || e.state === "replaced"));
      // Every frame arrived, or was dropped by the server's deadline (max_lag_s) and counted as such.
      const dropped = run.results.reduce((n, r) => n + r.droppedFrames, run.stop.droppedFrames);
      assert.equal(run.starts.length + dropped, Math.floor((samples.length - 400) / 320) + 1, `frames ${run.starts.length}, dropped ${dropped}`);
      assert.ok(dropped <= 5 * 10, `dropped ${dropped} frames`);
      assert.ok(run.starts.every((s, j) => s % 320 === 0 && (j === 0 || s > run.starts[j - 1]!)), "in order, no duplicates");
      await adapter.dispose();
    } finally {
      server.proc.kill("SIGCONT");
      const t0 = performance.now();
      const code = await server.stop();
      assert.equal(code, 0, `server exit after ${performance.now() - t0} ms:\n${server.log.slice(-3000)}`);
    }
  });

  it("opens the breaker after repeated failures, fails fast, and half-opens after the cool-down", async () => {
    const port = await freePort();
    const adapter = adapterFor(`http://127.0.0.1:${port}`, { model: "base", breaker: { failureThreshold: 3, cooldownMs: 1500 } }, 2000, { maxRetries: 0 });
    const transitions: string[] = [];
    adapter.on("breaker", (e) => transitions.push(`${e.previous}->${e.state}`));
    for (let i = 0; i < 3; i++) {
      await assert.rejects(adapter.initialize({ name: "later" }), (e: unknown) => e instanceof ConnectionLostError && e.transient);
    }
    assert.equal(adapter.breakerState, "open");
    const t0 = performance.now();
    await assert.rejects(adapter.initialize({ name: "later" }), (e: unknown) => e instanceof BreakerOpenError && e.retryInMs > 0);
    assert.ok(performance.now() - t0 < 100, "an open breaker fails fast, without a network attempt");
    const server = await Server.start({ port, modelName: "base" });
    try {
      while (adapter.breakerState === "open") await new Promise((r) => setTimeout(r, 50));
      assert.equal(adapter.breakerState, "half_open");
      await adapter.initialize({ name: "later" }); // the probe succeeds
      assert.equal(adapter.breakerState, "closed");
      assert.deepEqual(transitions, ["closed->open", "open->half_open", "half_open->closed"]);
      await adapter.dispose();
    } finally {
      await server.stop();
    }
  });

  it("times out on a server that accepts connections but never answers", async () => {
    const stalled = await stalledServer();
    try {
      const adapter = adapterFor(stalled.url, { modelDir: "/m" }, 300, { maxRetries: 1, backoff: 100 });
      const t0 = performance.now();
      await assert.rejects(adapter.initialize({ name: "never" }), (e: unknown) => {
        assert.ok(e instanceof RequestTimeoutError, String(e));
        assert.equal(e.errorClass, "transient");
        assert.match(e.message, /within 300 ms/);
        return true;
      });
      const elapsed = performance.now() - t0;
      assert.ok(elapsed >= 600 && elapsed < 3000, `two 300 ms attempts and a backoff took ${elapsed} ms`);
      await adapter.dispose();
    } finally {
      await stalled.close();
    }
  });
});
