/**
 * The adapter against a real `ostinato serve` (tiny random-weight model) on 127.0.0.1.
 */

import assert from "node:assert/strict";
import { after, afterEach, before, describe, it } from "node:test";

import { Wav2Vec2FeatureAdapter } from "../../src/adapter.js";
import { ConfigError, DisposedError } from "../../src/errors.js";
import type { MatchEvent } from "../../src/events.js";
import { framesEmitted, geometryFromChunkOverlap } from "../../src/geometry.js";
import type { ChunkResult } from "../../src/stream.js";
import { Server, type TestAudio, chunks, pythonClientFrames, readWav, testAudio } from "../helpers/server.js";

const OPTIONS = { chunkSize: 1600, overlap: 400, maxQueueSize: 10, batchSize: 4 };
const CONFIG = { name: "wav2vec2-base", version: "2.0.0", parameters: { attentionDropout: 0.1, hiddenDropout: 0.1 } };

let server: Server;
let audio: TestAudio;

async function models(): Promise<string[]> {
  const body = (await (await fetch(`${server.url}/v1/models`)).json()) as { models: Array<{ name: string }> };
  return body.models.map((m) => m.name);
}

const adapters: Wav2Vec2FeatureAdapter[] = [];
function adapterFor(...args: ConstructorParameters<typeof Wav2Vec2FeatureAdapter>): Wav2Vec2FeatureAdapter {
  const adapter = new Wav2Vec2FeatureAdapter(...args);
  adapters.push(adapter);
  return adapter;
}

describe("Wav2Vec2FeatureAdapter on a real server", { timeout: 120_000 }, () => {
  afterEach(async () => {
    await Promise.all(adapters.splice(0).map((a) => a.dispose()));
  });
  before(async () => {
    [server, audio] = await Promise.all([Server.start({ modelName: "base" }), testAudio()]);
  });
  after(async () => {
    assert.equal(await server.stop(), 0, server.log);
  });

  it("runs the issue's example end to end", async () => {
    const adapter = adapterFor(server.url, { model: "base" }, 5000, { maxRetries: 3, backoff: 1000 });
    const info = await adapter.initialize(CONFIG);
    assert.equal(info.name, "wav2vec2-base");
    assert.deepEqual((info.config as { parameters: unknown }).parameters, CONFIG.parameters);
    await adapter.startStreaming(OPTIONS);
    const statuses: unknown[] = [];
    adapter.on("status", (s) => statuses.push(s));
    adapter.on("match", (e) => assert.ok(typeof e.patternId === "string" && e.score >= 0));
    const first = await adapter.processChunk(new Float32Array(1600));
    assert.equal(first.numFrames, 0, "a 1600-sample stream completes no 2000-sample window yet");
    const second = await adapter.processChunk(new Float32Array(1600));
    assert.equal(second.numFrames, 5);
    assert.deepEqual(second.frameStartSamples, [0, 320, 640, 960, 1280]);
    assert.equal(second.features.length, 5 * second.dim);
    assert.ok(second.dim > 0 && second.output !== "");
    const stop = await adapter.stopStreaming();
    assert.equal(5 + stop.numFrames, 9, "3200 samples hold floor((3200 - 400) / 320) + 1 = 9 frames");
    assert.equal(stop.summary.frames, 9);
    assert.ok((await models()).includes("wav2vec2-base"));
    await adapter.dispose();
    assert.ok(!(await models()).includes("wav2vec2-base"), "dispose forgets the model it registered");
  });

  it("resolves each chunk with the frames it completed, equal to what the Python client gets", async () => {
    const samples = readWav(audio.speech);
    const adapter = adapterFor(server.url, { model: "base" });
    await adapter.initialize({ name: "compare" });
    await adapter.startStreaming({ ...OPTIONS, maxQueueSize: 4 });
    const results: ChunkResult[] = await Promise.all(chunks(samples, 1600).map((c) => adapter.processChunk(c)));
    const stop = await adapter.stopStreaming();
    const g = geometryFromChunkOverlap(1600, 400);
    for (const r of results) {
      assert.equal(r.numFrames, framesEmitted(r.endSample, g) - framesEmitted(r.startSample, g), `chunk ${r.chunk}`);
      assert.equal(r.droppedFrames, 0);
    }
    const starts = [...results.flatMap((r) => r.frameStartSamples), ...stop.frameStartSamples];
    const features = Float32Array.from([...results.flatMap((r) => [...r.features]), ...stop.features]);
    const py = await pythonClientFrames(server.url, "compare", audio.speech);
    assert.equal(starts.length, py.frames, "same number of frames as the Python client");
    assert.deepEqual(starts, py.start_samples);
    assert.equal(features.length, py.features.length);
    let maxDiff = 0;
    for (let i = 0; i < features.length; i++) maxDiff = Math.max(maxDiff, Math.abs(features[i]! - py.features[i]!));
    assert.ok(maxDiff < 1e-4, `max |TS - Python| = ${maxDiff}`);

    // Int16 PCM gives the same frames (the server sees the same float samples).
    await adapter.startStreaming({ ...OPTIONS, encoding: "s16le" });
    const ints = chunks(samples, 1600).map((c) => Int16Array.from(c, (x) => Math.round(x * 32768)));
    const intResults = await Promise.all(ints.map((c) => adapter.processChunk(c)));
    const intStop = await adapter.stopStreaming();
    assert.deepEqual([...intResults.flatMap((r) => r.frameStartSamples), ...intStop.frameStartSamples], starts);
    await adapter.dispose();
  });

  it("emits a match event for a planted repeat", async () => {
    const samples = readWav(audio.planted);
    const adapter = adapterFor(server.url, { model: "base" });
    const matches: MatchEvent[] = [];
    adapter.on("match", (e) => matches.push(e));
    await adapter.initialize({ name: "matching" });
    await adapter.startStreaming(OPTIONS);
    await Promise.all(chunks(samples, 1600).map((c) => adapter.processChunk(c)));
    await adapter.stopStreaming();
    await adapter.dispose();
    const [first, second] = audio.occurrences;
    const hit = matches.find((m) => Math.abs(m.startS - second![0]) < 1.0 && Math.abs(m.firstStartS - first![0]) < 1.0);
    assert.ok(hit, `no match of the 3 s motif at 8 s; got ${JSON.stringify(matches)}`);
    assert.ok(hit.score > 0 && hit.score <= 1 && hit.patternId !== "");
  });

  it("keeps at most maxQueueSize chunks in flight", async () => {
    const adapter = adapterFor(server.url, { model: "base" });
    await adapter.initialize({ name: "bounded" });
    await adapter.startStreaming({ ...OPTIONS, maxQueueSize: 2 });
    let peak = 0;
    const sample = (): void => void (peak = Math.max(peak, adapter.chunksInFlight));
    const timer = setInterval(sample, 1);
    const all = Array.from({ length: 40 }, (_, i) => adapter.processChunk(new Float32Array(1600).fill(((i % 7) - 3) / 10)).then((r) => (sample(), r)));
    sample();
    const results = await Promise.all(all);
    clearInterval(timer);
    assert.ok(peak >= 1 && peak <= 2, `peak in flight ${peak}`);
    assert.deepEqual(results.map((r) => r.chunk), Array.from({ length: 40 }, (_, i) => i));
    await adapter.stopStreaming();
    await adapter.dispose();
  });

  it("reports a bad config as a ConfigError naming the field (locally and from the server's 422)", async () => {
    const adapter = adapterFor(server.url, { model: "base" });
    await assert.rejects(adapter.initialize({ ...CONFIG, parameters: { attentionDropout: 1.5 } }), (e: unknown) => e instanceof ConfigError && e.field === "parameters.attentionDropout");
    await adapter.initialize({ name: "badstream" });
    await assert.rejects(adapter.startStreaming({ ...OPTIONS, overlap: 2000 }), (e: unknown) => e instanceof ConfigError && e.field === "overlap");
    await assert.rejects(adapter.startStreaming({ ...OPTIONS, chunkSize: 1000 }), (e: unknown) => {
      assert.ok(e instanceof ConfigError, String(e));
      assert.equal(e.field, "streaming.chunk_samples");
      assert.equal(e.option, "chunkSize");
      assert.match(e.reason, /1000/);
      assert.ok(e.hint.length > 0);
      return true;
    });
    await adapter.dispose();
    const elsewhere = adapterFor(server.url, { modelDir: "/nonexistent/model" });
    await assert.rejects(elsewhere.initialize({ name: "ghost" }), (e: unknown) => e instanceof ConfigError && e.field === "model_dir" && /ostinato.json/.test(e.reason));
    const unknown = adapterFor(server.url, { model: "nope" });
    await assert.rejects(unknown.initialize({ name: "x" }), (e: unknown) => e instanceof ConfigError && e.field === "model" && /base/.test(e.message));
  });

  it("disposes twice safely, mid-stream, and refuses every later call", async () => {
    const adapter = adapterFor(server.url, { model: "base" });
    await adapter.initialize({ name: "first-name" });
    await adapter.initialize({ name: "disposable" });
    assert.ok(!(await models()).includes("first-name"), "re-initializing under a new name forgets the old entry");
    await adapter.startStreaming(OPTIONS);
    await adapter.processChunk(new Float32Array(3200));
    await Promise.all([adapter.dispose(), adapter.dispose()]);
    await adapter.dispose();
    await assert.rejects(adapter.processChunk(new Float32Array(1600)), DisposedError);
    await assert.rejects(adapter.startStreaming(OPTIONS), DisposedError);
    await assert.rejects(adapter.initialize({ name: "again" }), DisposedError);
    assert.ok(!(await models()).includes("disposable"));
  });
});
