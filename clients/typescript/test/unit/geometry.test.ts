import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { framesEmitted, geometryFromChunkOverlap, geometryFromReady, numFrames, replayStartFrame } from "../../src/geometry.js";
import { ProtocolError } from "../../src/errors.js";

// Core frames emitted by stream/windowing.py's Windower after pushing n samples (computed there).
const N = [0, 399, 400, 1680, 1999, 2000, 2001, 3199, 3200, 3280, 3281, 4879, 4880, 5000, 12345, 16000, 32000, 48123];
const PY: Record<string, { frames: number[]; window: number }> = {
  "1600/400": { frames: [0, 0, 0, 0, 0, 5, 5, 5, 5, 10, 10, 10, 15, 15, 35, 45, 95, 150], window: 2000 },
  "3200/400": { frames: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 10, 10, 30, 40, 90, 150], window: 3600 },
  "1600/720": { frames: [0, 0, 0, 0, 0, 0, 0, 5, 5, 10, 10, 10, 15, 15, 35, 45, 95, 150], window: 2320 },
  "960/80": { frames: [0, 0, 0, 3, 3, 6, 6, 9, 9, 9, 9, 12, 15, 15, 36, 48, 99, 150], window: 1040 },
  "320/80": { frames: [0, 0, 1, 5, 5, 6, 6, 9, 9, 10, 10, 14, 15, 15, 38, 49, 99, 150], window: 400 },
};

describe("window geometry", () => {
  for (const [key, expected] of Object.entries(PY)) {
    it(`matches the Python Windower for chunk/overlap ${key}`, () => {
      const [chunk, overlap] = key.split("/").map(Number) as [number, number];
      const g = geometryFromChunkOverlap(chunk, overlap);
      assert.equal(g.windowSamples, expected.window);
      assert.deepEqual(N.map((n) => framesEmitted(n, g)), expected.frames);
    });
  }

  it("reads ready.info.window and refuses nonsense", () => {
    const g = geometryFromReady({ window: { hop_samples: 1600, left_context_samples: 320, right_context_samples: 0, window_samples: 2000 } });
    assert.deepEqual(g, geometryFromChunkOverlap(1600, 400));
    assert.throws(() => geometryFromReady({}), ProtocolError);
    assert.throws(() => geometryFromReady({ window: { hop_samples: 100, left_context_samples: 0, right_context_samples: 0, window_samples: 180 } }), ProtocolError);
  });

  it("counts a whole stream's frames like Wav2Vec2Model.num_frames", () => {
    const g = geometryFromChunkOverlap(1600, 400);
    assert.deepEqual([0, 399, 400, 719, 720, 32000].map((n) => numFrames(n, g)), [0, 0, 1, 1, 2, 99]);
  });

  it("replays from a window boundary that gives the next window its full left context", () => {
    for (const [chunk, overlap] of [[1600, 400], [320, 80], [960, 1040], [320, 720]] as const) {
      const g = geometryFromChunkOverlap(chunk, overlap);
      const hop = g.hopSamples / 320;
      const left = g.leftContextSamples / 320;
      for (let covered = 0; covered < 60; covered++) {
        const r = replayStartFrame(covered, g);
        assert.ok(r >= 0 && r <= covered && r % hop === 0, `r=${r} covered=${covered}`);
        // The replacement window holding frame `covered` starts left-context frames before its core.
        const k = Math.floor((covered - r) / hop);
        assert.ok(r === 0 || k * hop >= left, `chunk ${chunk}: window ${k} lacks context`);
      }
    }
  });
});
