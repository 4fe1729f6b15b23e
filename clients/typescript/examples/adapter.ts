/**
 * Stream a WAV file through an ostinato service and print what comes back.
 *
 *   ostinato serve --model DIR                          # in another terminal (prints its URL)
 *   npm run build
 *   node dist/examples/adapter.js speech.wav [--url http://127.0.0.1:8765] [--model NAME] [--realtime]
 *
 * Prints one JSON line per event (`match`, `novelty`, connection changes, errors), a line per
 * second of audio with the frames received, and a summary. `--realtime` paces the chunks like
 * a live microphone; without it the file is sent as fast as the server takes it (at most
 * `maxQueueSize` chunks in flight).
 */

import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";

import { type ChunkResult, Wav2Vec2FeatureAdapter, decodeWav } from "../src/index.js";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    url: { type: "string", default: "http://127.0.0.1:8765" },
    model: { type: "string" },
    realtime: { type: "boolean", default: false },
  },
});
const path = positionals[0];
if (!path) {
  console.error("usage: node dist/examples/adapter.js FILE.wav [--url URL] [--model NAME] [--realtime]");
  process.exit(2);
}

const RATE = 16000;
const CHUNK = 1600; // 100 ms

/** Linear-interpolation resampling: good enough for an example (use a real resampler in production). */
function to16k(samples: Float32Array, rate: number): Float32Array {
  if (rate === RATE) return samples;
  const out = new Float32Array(Math.floor((samples.length * RATE) / rate));
  for (let i = 0; i < out.length; i++) {
    const x = (i * rate) / RATE;
    const j = Math.floor(x);
    const a = samples[j] ?? 0;
    const b = samples[j + 1] ?? a;
    out[i] = a + (b - a) * (x - j);
  }
  return out;
}

const wav = decodeWav(await readFile(path));
const audio = to16k(wav.samples, wav.sampleRate);
const print = (kind: string, data: object): void => console.log(JSON.stringify({ kind, ...data }));

const adapter = new Wav2Vec2FeatureAdapter(values.url!, values.model ? { model: values.model } : {}, 5000, { maxRetries: 3, backoff: 1000 });
adapter.on("match", (e) => print("match", e));
adapter.on("novelty", (e) => print("novelty", e));
adapter.on("error", (e) => print("error", { error: e.toString(), errorClass: e.errorClass }));
adapter.on("connection", (e) => print("connection", { state: e.state, streamId: e.streamId, error: e.error?.toString() }));
adapter.on("breaker", (e) => print("breaker", e));
let lastStatus = "";
adapter.on("status", (s) => {
  const line = `${s.health} lag ${s.lagS.toFixed(2)} s`;
  if (line !== lastStatus) print("status", s);
  lastStatus = line;
});

try {
  const info = await adapter.initialize({ name: "example-adapter", version: "1.0.0", parameters: { attentionDropout: 0.1, hiddenDropout: 0.1 } });
  print("initialized", { model: info.name, state: info.state });
  await adapter.startStreaming({ chunkSize: 1600, overlap: 400, maxQueueSize: 10, batchSize: 4 });
  print("streaming", { streamId: adapter.streamId, seconds: audio.length / RATE, sourceRate: wav.sampleRate });
  const started = performance.now();
  let frames = 0;
  let dim = 0;
  const inFlight: Array<Promise<ChunkResult>> = [];
  for (let at = 0; at < audio.length; at += CHUNK) {
    if (values.realtime) {
      const due = started + (at / RATE) * 1000;
      await new Promise((r) => setTimeout(r, Math.max(0, due - performance.now())));
    }
    const p = adapter.processChunk(audio.slice(at, Math.min(audio.length, at + CHUNK))).then((r) => {
      frames += r.numFrames;
      dim = r.dim || dim;
      if (r.endSample % RATE === 0) print("progress", { audioS: r.endSample / RATE, frames, dim, droppedFrames: r.droppedFrames });
      return r;
    });
    inFlight.push(p);
    if (inFlight.length > 10) await inFlight.shift();
  }
  await Promise.all(inFlight);
  const last = await adapter.stopStreaming();
  frames += last.numFrames;
  print("done", { frames, dim, output: last.output, wallS: (performance.now() - started) / 1000, summary: last.summary });
} catch (e) {
  print("failed", { error: String(e) });
  process.exitCode = 1;
} finally {
  await adapter.dispose();
}
