import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { Wav2Vec2FeatureAdapter } from "../../src/adapter.js";
import { validateModelConfig, validateStreamingOptions } from "../../src/config.js";
import { ConfigError, DisposedError, ServerError, StateError, classifyError, errorFromWire } from "../../src/errors.js";

const fieldOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ConfigError, `expected ConfigError, got ${String(e)}`);
    assert.equal(e.errorClass, "input");
    return e.field;
  }
  assert.fail("no ConfigError");
};

describe("model config validation", () => {
  it("accepts the issue's config", () => {
    const c = validateModelConfig({ name: "wav2vec2-base", version: "2.0.0", parameters: { attentionDropout: 0.1, hiddenDropout: 0.1 } });
    assert.deepEqual(c.parameters, { attentionDropout: 0.1, hiddenDropout: 0.1 });
  });

  it("names the bad field", () => {
    assert.equal(fieldOf(() => validateModelConfig({ name: "bad name!" })), "name");
    assert.equal(fieldOf(() => validateModelConfig({ version: "1" })), "name");
    assert.equal(fieldOf(() => validateModelConfig({ name: "m", version: "two" })), "version");
    assert.equal(fieldOf(() => validateModelConfig({ name: "m", parameters: { attentionDropout: 1 } })), "parameters.attentionDropout");
    assert.equal(fieldOf(() => validateModelConfig({ name: "m", parameters: { hiddenDropout: -0.1 } })), "parameters.hiddenDropout");
    assert.equal(fieldOf(() => validateModelConfig({ name: "m", parameters: { hiddenDropout: "0.1" } })), "parameters.hiddenDropout");
    assert.equal(fieldOf(() => validateModelConfig({ name: "m", parameters: { hiddenDropout: Number.NaN } })), "parameters.hiddenDropout");
    assert.equal(fieldOf(() => validateModelConfig({ name: "m", parameters: { learningRate: 0.1 } })), "parameters.learningRate");
    assert.equal(fieldOf(() => validateModelConfig({ name: "m", provider: "tpu" })), "provider");
    assert.equal(fieldOf(() => validateModelConfig({ name: "m", extra: 1 })), "extra");
    assert.equal(fieldOf(() => validateModelConfig(null)), "(config)");
  });
});

describe("streaming options validation", () => {
  const ok = { chunkSize: 1600, overlap: 400, maxQueueSize: 10, batchSize: 4 };
  it("accepts the issue's options and fills defaults", () => {
    assert.deepEqual(validateStreamingOptions(ok), { ...ok, sampleRate: 16000, encoding: "f32le", match: true });
  });
  it("names the bad option", () => {
    assert.equal(fieldOf(() => validateStreamingOptions({ ...ok, chunkSize: 0 })), "chunkSize");
    assert.equal(fieldOf(() => validateStreamingOptions({ ...ok, chunkSize: 1600.5 })), "chunkSize");
    assert.equal(fieldOf(() => validateStreamingOptions({ ...ok, overlap: 1600 })), "overlap");
    assert.equal(fieldOf(() => validateStreamingOptions({ ...ok, overlap: -1 })), "overlap");
    assert.equal(fieldOf(() => validateStreamingOptions({ ...ok, maxQueueSize: 0 })), "maxQueueSize");
    assert.equal(fieldOf(() => validateStreamingOptions({ ...ok, batchSize: 1000 })), "batchSize");
    assert.equal(fieldOf(() => validateStreamingOptions({ ...ok, batchSize: "4" })), "batchSize");
    assert.equal(fieldOf(() => validateStreamingOptions({ ...ok, sampleRate: 48000 })), "sampleRate");
    assert.equal(fieldOf(() => validateStreamingOptions({ ...ok, encoding: "mp3" })), "encoding");
    assert.equal(fieldOf(() => validateStreamingOptions({ ...ok, chunk: 1 })), "chunk");
  });
});

describe("errors", () => {
  it("turns a 422 problem into a ConfigError naming the field and its client option", () => {
    const e = errorFromWire("invalid_config", "streaming.chunk_samples: hop_samples=1000; expected a multiple of 320", "input", "fix it", { status: 422, field: "streaming.chunk_samples" });
    assert.ok(e instanceof ConfigError);
    assert.equal(e.field, "streaming.chunk_samples");
    assert.equal(e.option, "chunkSize");
    assert.equal(e.reason, "hop_samples=1000; expected a multiple of 320");
    assert.equal(e.hint, "fix it");
    const s = errorFromWire("too_many_streams", "full", "transient", "later");
    assert.ok(s instanceof ServerError && s.transient && s.code === "too_many_streams");
    assert.equal(errorFromWire("x", "y", "garbage", "").errorClass, "permanent");
  });

  it("classifies platform errors", () => {
    assert.equal(classifyError(Object.assign(new Error("x"), { code: "ECONNREFUSED" })), "transient");
    assert.equal(classifyError(new TypeError("fetch failed")), "transient");
    assert.equal(classifyError(new DOMException("t", "TimeoutError")), "transient");
    assert.equal(classifyError(new RangeError("bug")), "permanent");
  });
});

describe("adapter without a server", () => {
  it("validates its constructor arguments", () => {
    assert.throws(() => new Wav2Vec2FeatureAdapter("localhost:8765"), (e: unknown) => e instanceof ConfigError && e.field === "baseUrl");
    assert.throws(() => new Wav2Vec2FeatureAdapter("ftp://x"), (e: unknown) => e instanceof ConfigError && e.field === "baseUrl");
    assert.throws(() => new Wav2Vec2FeatureAdapter("http://x", {}, 0), (e: unknown) => e instanceof ConfigError && e.field === "timeoutMs");
    assert.throws(() => new Wav2Vec2FeatureAdapter("http://x", {}, 100, { maxRetries: -2 }), (e: unknown) => e instanceof ConfigError && e.field === "maxRetries");
    const a = new Wav2Vec2FeatureAdapter("http://127.0.0.1:1/");
    assert.equal(a.baseUrl, "http://127.0.0.1:1");
    assert.equal(a.timeoutMs, 5000);
    assert.deepEqual([a.retryPolicy.maxRetries, a.retryPolicy.backoffMs], [3, 1000]);
    assert.equal(a.breakerState, "closed");
  });

  it("refuses calls out of order, and every call after dispose", async () => {
    const a = new Wav2Vec2FeatureAdapter("http://127.0.0.1:1");
    await assert.rejects(a.load(), StateError);
    await assert.rejects(a.startStreaming({ chunkSize: 1600, overlap: 400, maxQueueSize: 1, batchSize: 1 }), StateError);
    await assert.rejects(a.processChunk(new Float32Array(10)), StateError);
    await assert.rejects(a.initialize({ name: "m", parameters: { hiddenDropout: 2 } }), (e: unknown) => e instanceof ConfigError && e.field === "parameters.hiddenDropout");
    await a.dispose();
    await a.dispose();
    for (const call of [() => a.initialize({ name: "m" }), () => a.load(), () => a.unload(), () => a.processChunk(new Float32Array(1)), () => a.stopStreaming()]) {
      await assert.rejects(call(), (e: unknown) => e instanceof DisposedError && /disposed/.test(e.message) && e.hint !== "");
    }
  });
});
