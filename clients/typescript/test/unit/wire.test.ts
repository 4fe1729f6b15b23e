import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { encode } from "@msgpack/msgpack";

import { ProtocolError } from "../../src/errors.js";
import * as wire from "../../src/wire.js";

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, "hex"));

// Produced by stream/wire.py (encode_frame / encode_pcm) for these exact frames.
const PY = {
  hello: "8aa17601ab73616d706c655f72617465cd3e80a8656e636f64696e67a57331366c65a86368616e6e656c7301a973747265616d5f6964a3616263a4726f6c65a473656e64a76f75747075747392a66576656e7473a86665617475726573af726573756d655f66726f6d5f73657107a76f7074696f6e7382a56d6f64656ca474696e79ab66656174757265735f687acb4049000000000000a474797065a568656c6c6f",
  features: "8aa17601a973747265616d5f6964a27331a66f7574707574b16c6173745f68696464656e5f7374617465ac73746172745f73616d706c65cd0280aa6e756d5f6672616d657302a364696d03a464617461c418000000000000003f0000803f0000c03f0000004000002040a56474797065a3663332b46672616d655f7374726964655f73616d706c6573cd0140a474797065a86665617475726573",
  f16: "8aa17601a973747265616d5f6964a27331a66f7574707574a16fac73746172745f73616d706c6500aa6e756d5f6672616d657301a364696d03a464617461c406003e00c0ff7ba56474797065a3663136b46672616d655f7374726964655f73616d706c6573cd0140a474797065a86665617475726573",
  status: "89a17601a56c61675f73cb3fd0000000000000a764726f7070656481af77696e646f775f646561646c696e6502a66865616c7468a86465677261646564a7726561736f6e7391a36c6167a66672616d65730aa7617564696f5f73cb3ff8000000000000aa6c6576656c5f64626673cbc034800000000000a474797065a6737461747573",
  error: "87a17601a4636f6465ae73747265616d5f65787069726564a76d657373616765a4676f6e65ab6572726f725f636c617373a97065726d616e656e74a468696e74b273746172742061206e65772073747265616da5666174616cc3a474797065a56572726f72",
  pcm: "0000004000c0ff7f008000000200feffff7f",
};

describe("wire codec", () => {
  it("decodes frames encoded by the Python reference", () => {
    const h = wire.decodeFrame(hex(PY.hello));
    assert.deepEqual(h, {
      type: "hello", sample_rate: 16000, encoding: "s16le", channels: 1, stream_id: "abc", role: "send",
      outputs: ["events", "features"], resume_from_seq: 7, options: { model: "tiny", features_hz: 50 },
    });
    const f = wire.decodeFrame(hex(PY.features));
    assert.equal(f.type, "features");
    if (f.type !== "features") return;
    assert.deepEqual([f.stream_id, f.output, f.start_sample, f.num_frames, f.dim, f.dtype], ["s1", "last_hidden_state", 640, 2, 3, "f32"]);
    assert.deepEqual([...wire.featuresToFloat32(f)], [0, 0.5, 1, 1.5, 2, 2.5]);
    const g = wire.decodeFrame(hex(PY.f16));
    assert.ok(g.type === "features");
    assert.deepEqual([...wire.featuresToFloat32(g)], [1.5, -2, 65504]);
    assert.deepEqual(wire.decodeFrame(hex(PY.status)), {
      type: "status", lag_s: 0.25, dropped: { window_deadline: 2 }, health: "degraded", reasons: ["lag"], frames: 10, audio_s: 1.5, level_dbfs: -20.5,
    });
    assert.deepEqual(wire.decodeFrame(hex(PY.error)), {
      type: "error", code: "stream_expired", message: "gone", error_class: "permanent", hint: "start a new stream", fatal: true,
    });
  });

  it("encodes what the Python reference encodes (same map, field for field)", () => {
    const frame = wire.hello({ sample_rate: 16000, encoding: "s16le", stream_id: "abc", outputs: ["events", "features"], resume_from_seq: 7, options: { model: "tiny", features_hz: 50.5 } });
    const back = wire.decodeFrame(wire.encodeFrame(frame));
    assert.deepEqual(back, frame);
    const audio: wire.AudioFrame = { type: "audio", seq: 3, pcm: new Uint8Array([1, 2, 3, 4]), start_sample: 1600 };
    assert.deepEqual(wire.decodeFrame(wire.encodeFrame(audio)), audio);
    for (const t of ["flush", "end"] as const) assert.deepEqual(wire.decodeFrame(wire.encodeFrame({ type: t })), { type: t });
  });

  it("fills defaults, ignores unknown fields, omits nil optionals", () => {
    const f = wire.decodeFrame(encode({ v: 1, type: "ready", stream_id: "x", future_field: [1, 2] }));
    assert.deepEqual(f, { type: "ready", stream_id: "x", sample_rate: 16000, encoding: "f32le", channels: 1, frame_stride_samples: 320, info: {} });
    const a = wire.decodeFrame(encode({ v: 1, type: "audio", seq: 0, pcm: new Uint8Array(2), start_sample: null }));
    assert.deepEqual(a, { type: "audio", seq: 0, pcm: new Uint8Array(2) });
    const bytes = wire.encodeFrame({ type: "audio", seq: 1, pcm: new Uint8Array(0) });
    assert.ok(!Buffer.from(bytes).includes(Buffer.from("start_sample")));
  });

  const bad: Array<[string, Uint8Array, RegExp]> = [
    ["not msgpack", new Uint8Array([0xc1]), /malformed msgpack/],
    ["not a map", encode([1, 2]), /msgpack array; expected a map/],
    ["wrong version", encode({ v: 2, type: "end" }), /protocol version v=2/],
    ["no version", encode({ type: "end" }), /protocol version/],
    ["unknown type", encode({ v: 1, type: "nope" }), /unknown frame type="nope"/],
    ["missing field", encode({ v: 1, type: "audio", pcm: new Uint8Array(0) }), /lacks required field 'seq'/],
    ["mistyped field", encode({ v: 1, type: "audio", seq: "1", pcm: new Uint8Array(0) }), /audio.seq="1"; expected int/],
    ["float for int", encode({ v: 1, type: "audio", seq: 1.5, pcm: new Uint8Array(0) }), /expected int/],
    ["negative seq", encode({ v: 1, type: "audio", seq: -1, pcm: new Uint8Array(0) }), /expected >= 0/],
    ["bad encoding", encode({ v: 1, type: "hello", sample_rate: 16000, encoding: "mp3" }), /hello.encoding/],
    ["bad rate", encode({ v: 1, type: "hello", sample_rate: 10 }), /hello.sample_rate=10/],
    ["bad class", encode({ v: 1, type: "error", code: "x", message: "y", error_class: "weird" }), /error_class/],
    ["bad health", encode({ v: 1, type: "status", health: "meh" }), /status.health/],
    ["byte mismatch", encode({ v: 1, type: "features", stream_id: "s", output: "o", start_sample: 0, num_frames: 2, dim: 2, data: new Uint8Array(8) }), /does not match 8 data bytes/],
    ["too deep", encode({ v: 1, type: "event", event: { a: { b: { c: { d: { e: { f: { g: { h: 1 } } } } } } } } }), /nesting depth > 8/],
    ["non-string list", encode({ v: 1, type: "status", reasons: [1] }), /status.reasons/],
  ];
  for (const [name, data, pattern] of bad) {
    it(`refuses ${name} with a ProtocolError`, () => {
      assert.throws(() => wire.decodeFrame(data), (e: unknown) => e instanceof ProtocolError && pattern.test(e.message) && e.errorClass === "input");
    });
  }

  it("enforces size limits on both sides", () => {
    const limits = { ...wire.DEFAULT_WIRE_LIMITS, maxMessageBytes: 100 };
    const big: wire.AudioFrame = { type: "audio", seq: 0, pcm: new Uint8Array(200) };
    assert.throws(() => wire.encodeFrame(big, limits), /limit is 100/);
    assert.throws(() => wire.decodeFrame(wire.encodeFrame(big), limits), /limit is 100/);
    const strLimits = { ...wire.DEFAULT_WIRE_LIMITS, maxStrLen: 8 };
    assert.throws(() => wire.decodeFrame(encode({ v: 1, type: "end", junk: "0123456789" }), strLimits), ProtocolError);
  });

  it("only ever throws ProtocolError on random bytes", () => {
    let seed = 42;
    const rand = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const valid = hex(PY.status);
    for (let i = 0; i < 2000; i++) {
      const data = Uint8Array.from(valid);
      for (let k = 0; k < 1 + Math.floor(rand() * 4); k++) data[Math.floor(rand() * data.length)] = Math.floor(rand() * 256);
      const cut = rand() < 0.2 ? data.subarray(0, Math.floor(rand() * data.length)) : data;
      try {
        wire.decodeFrame(cut);
      } catch (e) {
        assert.ok(e instanceof ProtocolError, `unexpected ${String(e)}`);
      }
    }
  });

  it("encodes PCM exactly as encode_pcm / decode_pcm in Python", () => {
    const x = new Float32Array([0, 0.5, -0.5, 1, -1, 1 / 65536, 3 / 65536, -3 / 65536, 0.99999]);
    assert.equal(Buffer.from(wire.encodePcm(x, "s16le")).toString("hex"), PY.pcm);
    const f = wire.encodePcm(x, "f32le");
    assert.deepEqual(new Float32Array(f.buffer, f.byteOffset, x.length), x);
    const i16 = new Int16Array([0, 16384, -32768, 32767]);
    const g = wire.encodePcm(i16, "f32le");
    assert.deepEqual([...new Float32Array(g.buffer, g.byteOffset, 4)], [0, 0.5, -1, 32767 / 32768]);
    assert.deepEqual([...new Int16Array(wire.encodePcm(i16, "s16le").buffer)], [...i16]);
  });

  it("decodes half floats", () => {
    assert.equal(wire.halfToFloat(0x3c00), 1);
    assert.equal(wire.halfToFloat(0xc000), -2);
    assert.equal(wire.halfToFloat(0x0001), 2 ** -24);
    assert.equal(wire.halfToFloat(0x7c00), Infinity);
    assert.ok(Number.isNaN(wire.halfToFloat(0x7e00)));
  });
  it("carries the additive v1 fields: output seq, through_seq, last_output_seq (Python bytes)", () => {
    const status = wire.decodeFrame(hex("8ba17601a56c61675f73cb3fd0000000000000a764726f7070656480a66865616c7468a26f6ba7726561736f6e7390a66672616d65730aa7617564696f5f73cb0000000000000000aa6c6576656c5f64626673cbc05e000000000000a373657107ab7468726f7567685f73657129a474797065a6737461747573"));
    assert.ok(status.type === "status");
    assert.deepEqual([status.seq, status.through_seq, status.frames], [7, 41, 10]);
    const h = wire.decodeFrame(hex("8ba17601ab73616d706c655f72617465cd3e80a8656e636f64696e67a56633326c65a86368616e6e656c7301a973747265616d5f6964a3616263a4726f6c65a473656e64a76f75747075747392a66576656e7473a6737461747573af726573756d655f66726f6d5f73657103a76f7074696f6e7381ac726573756d655f746f6b656ea174af6c6173745f6f75747075745f7365710ca474797065a568656c6c6f"));
    assert.deepEqual(h, wire.hello({ sample_rate: 16000, stream_id: "abc", resume_from_seq: 3, options: { resume_token: "t" }, last_output_seq: 12 }));
    assert.deepEqual(wire.decodeFrame(hex("84a17601a56576656e7481a56576656e74a56d61746368a373657105a474797065a56576656e74")), { type: "event", event: { event: "match" }, seq: 5 });
    // a v1 peer that knows none of them: absent fields stay absent, and are not sent
    assert.ok(!("last_output_seq" in wire.hello({ sample_rate: 16000 })));
    assert.throws(() => wire.decodeFrame(encode({ v: 1, type: "status", seq: -1 })), /status.seq=-1; expected >= 0/);
  });
});
