import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { geometryFromChunkOverlap } from "../../src/geometry.js";
import { type ChunkResult, FrameLedger, type LedgerChunk } from "../../src/ledger.js";
import type { FeaturesFrame, StatusFrame } from "../../src/wire.js";

const G = geometryFromChunkOverlap(1600, 400); // windows of 2000 samples, 5 frames each

function features(startFrame: number, n: number, dim = 2): FeaturesFrame {
  const data = new Float32Array(n * dim).map((_, i) => startFrame + Math.floor(i / dim)); // value = frame index
  return { type: "features", stream_id: "s", output: "o", start_sample: startFrame * 320, num_frames: n, dim, data: new Uint8Array(data.buffer), dtype: "f32", frame_stride_samples: 320 };
}

function status(frames: number, dropped: Record<string, number> = {}): StatusFrame {
  return { type: "status", lag_s: 0, dropped, health: "ok", reasons: [], frames, audio_s: 0, level_dbfs: -120 };
}

function setup(): { ledger: FrameLedger; results: ChunkResult[]; errors: unknown[]; chunk: (start: number, end: number) => LedgerChunk; settled: number[] } {
  const results: ChunkResult[] = [];
  const errors: unknown[] = [];
  const settled: number[] = [];
  const ledger = new FrameLedger((c) => settled.push(c.index));
  ledger.restart(0, G);
  let index = 0;
  const chunk = (start: number, end: number): LedgerChunk => {
    const c: LedgerChunk = { index: index++, start, end, expectedEnd: 0, blocks: [], dropped: 0, done: false, abandoned: false, resolve: (r) => results.push(r), reject: (e) => errors.push(e) };
    ledger.add(c);
    ledger.settle();
    return c;
  };
  return { ledger, results, errors, chunk, settled };
}

describe("frame ledger", () => {
  it("resolves each chunk with exactly the frames it completes, in order", () => {
    const { ledger, results, chunk } = setup();
    chunk(0, 1600); // completes no window: resolves at once, empty
    assert.equal(results.length, 1);
    assert.equal(results[0]!.numFrames, 0);
    chunk(1600, 3200); // window 0 (frames 0-4)
    chunk(3200, 4800); // window 1 (frames 5-9)
    ledger.features(features(0, 5));
    ledger.features(features(5, 5));
    assert.deepEqual(results.map((r) => r.frameStartSamples), [[], [0, 320, 640, 960, 1280], [1600, 1920, 2240, 2560, 2880]]);
    assert.deepEqual([...results[2]!.features], [5, 5, 6, 6, 7, 7, 8, 8, 9, 9]);
    assert.equal(results[2]!.dim, 2);
  });

  it("splits a block across chunks and keeps what is past the last chunk for the end", () => {
    const { ledger, results, chunk } = setup();
    chunk(0, 3200);
    chunk(3200, 4800);
    ledger.features(features(0, 12)); // frames 10-11 belong to no chunk yet (the stream's end)
    assert.deepEqual(results.map((r) => r.numFrames), [5, 5]);
    assert.deepEqual(ledger.takeTail().frameStartSamples, [3200, 3520]);
  });

  it("skips frames already delivered (a replacement stream replays context)", () => {
    const { ledger, results, chunk } = setup();
    chunk(0, 3200);
    ledger.features(features(0, 5));
    chunk(3200, 4800);
    ledger.restart(0, G); // replacement stream from sample 0 re-sends frames 0-4
    ledger.features(features(0, 10));
    assert.deepEqual(results[1]!.frameStartSamples, [1600, 1920, 2240, 2560, 2880]);
    assert.equal(results[1]!.droppedFrames, 0);
  });

  it("counts a gap as dropped frames of the chunks that expected them", () => {
    const { ledger, results, chunk } = setup();
    chunk(0, 3200);
    chunk(3200, 4800);
    chunk(4800, 6400);
    ledger.features(features(10, 5)); // windows 0 and 1 never came
    assert.deepEqual(results.map((r) => [r.numFrames, r.droppedFrames]), [[0, 5], [0, 5], [5, 0]]);
  });

  it("treats a status frame as a barrier: frames it accounts for but that never came are dropped", () => {
    const { ledger, results, chunk } = setup();
    chunk(0, 3200);
    chunk(3200, 4800);
    ledger.features(features(0, 5));
    ledger.status(status(5)); // nothing new: chunk 1 keeps waiting
    assert.equal(results.length, 1);
    ledger.status(status(10)); // the server sent frames 5-9, we never got them
    assert.deepEqual([results[1]!.numFrames, results[1]!.droppedFrames], [0, 5]);
    const other = setup();
    other.chunk(0, 3200);
    other.ledger.status(status(0, { window_deadline: 1, duplicate: 3 })); // one window dropped by the deadline
    assert.deepEqual([other.results[0]!.numFrames, other.results[0]!.droppedFrames], [0, 5]);
  });

  it("places a replacement stream's frames at its start sample", () => {
    const { ledger, results, chunk } = setup();
    chunk(0, 3200);
    ledger.features(features(0, 5));
    chunk(3200, 6400); // frames 5-14
    ledger.restart(1600, G); // replacement stream: its sample 0 is stream sample 1600 (frame 5)
    ledger.features(features(0, 10)); // its frames 0-9 = stream frames 5-14
    assert.deepEqual(results[1]!.frameStartSamples, Array.from({ length: 10 }, (_, j) => 1600 + j * 320));
    assert.deepEqual([...results[1]!.features].filter((_, i) => i % 2 === 0), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it("rejects everything on failAll and reports each settlement once", () => {
    const { ledger, errors, chunk, settled } = setup();
    chunk(0, 1600);
    chunk(1600, 3200);
    chunk(3200, 4800);
    ledger.failAll(new Error("gone"));
    ledger.failAll(new Error("again"));
    assert.equal(errors.length, 2);
    assert.deepEqual(settled, [0, 1, 2]);
    assert.equal(ledger.inFlight, 0);
  });
});
