/**
 * The ostinato wire protocol: versioned msgpack frames, one per binary WebSocket message.
 *
 * This module mirrors `stream/wire.py` (the reference implementation, documented in
 * `docs/protocol.md`): the same frame types, field names (snake_case, as on the wire), field
 * types, defaults, limits and validation. Unknown fields are ignored (forward compatibility);
 * unknown types and other protocol versions are refused with a {@link ProtocolError}.
 *
 * @module
 */

import { decode, encode } from "@msgpack/msgpack";

import { ProtocolError } from "./errors.js";

/** Protocol version spoken by this client (`v` of every frame). */
export const PROTOCOL_VERSION = 1;

/** PCM encodings of `audio` frames. */
export type Encoding = "s16le" | "f32le";
export const ENCODINGS: readonly Encoding[] = ["s16le", "f32le"];

/** Error classes: fix the input, retry later, or give up. */
export type ErrorClassName = "input" | "transient" | "permanent";
export const ERROR_CLASSES: readonly ErrorClassName[] = ["input", "transient", "permanent"];

/** Bounds applied when decoding (and checked when encoding), as `WireLimits` in Python. */
export interface WireLimits {
  maxMessageBytes: number;
  maxStrLen: number;
  maxArrayLen: number;
  maxMapLen: number;
  maxDepth: number;
}

export const DEFAULT_WIRE_LIMITS: Readonly<WireLimits> = Object.freeze({
  maxMessageBytes: 4 * 1024 * 1024,
  maxStrLen: 64 * 1024,
  maxArrayLen: 4096,
  maxMapLen: 256,
  maxDepth: 8,
});

// -- frames: client (audio sender) -> server ------------------------------------------------

/** Opens (or, with `stream_id` + `resume_from_seq` + `options.resume_token`, resumes) a stream. */
export interface HelloFrame {
  type: "hello";
  sample_rate: number;
  encoding: Encoding;
  channels: number;
  stream_id: string;
  role: "send" | "receive";
  outputs: string[];
  resume_from_seq?: number | undefined;
  options: Record<string, unknown>;
  /** On resume: the highest output `seq` received; the server replays the later ones it still holds. */
  last_output_seq?: number | undefined;
}

/** PCM bytes; `seq` counts audio frames from 0; `start_sample` is the first sample's index. */
export interface AudioFrame {
  type: "audio";
  seq: number;
  pcm: Uint8Array;
  start_sample?: number | undefined;
}

/** Asks the server to emit everything computable so far (answered with a `status`). */
export interface FlushFrame {
  type: "flush";
}

/** End of the audio: the server drains, flushes the last window, sends `status` and `bye`. */
export interface EndFrame {
  type: "end";
}

// -- frames: server -> client ---------------------------------------------------------------

/** Answer to `hello`; `info` carries `resume_token`, `next_seq`, `window`, `limits`… */
export interface ReadyFrame {
  type: "ready";
  stream_id: string;
  sample_rate: number;
  encoding: Encoding;
  channels: number;
  frame_stride_samples: number;
  info: Record<string, unknown>;
}

/** A detector event (`match`, `novelty`) as the JSON object of docs/events.md. */
export interface EventFrame {
  type: "event";
  event: Record<string, unknown>;
  /** Output sequence number (event, features and status frames share one count per stream). */
  seq?: number | undefined;
}

/** `[num_frames, dim]` row-major little-endian features; frame j starts at `start_sample + j * stride`. */
export interface FeaturesFrame {
  type: "features";
  stream_id: string;
  output: string;
  start_sample: number;
  num_frames: number;
  dim: number;
  data: Uint8Array;
  dtype: "f32" | "f16";
  frame_stride_samples: number;
  /** Output sequence number. */
  seq?: number | undefined;
}

/** Periodic stream status: lag, drops by reason, health, frames and audio so far, input level. */
export interface StatusFrame {
  type: "status";
  lag_s: number;
  dropped: Record<string, number>;
  health: "ok" | "degraded" | "failing";
  reasons: string[];
  frames: number;
  audio_s: number;
  level_dbfs: number;
  /** Output sequence number. */
  seq?: number | undefined;
  /** The last audio `seq` fully processed (its features/events were produced). */
  through_seq?: number | undefined;
}

/** A typed error; `error_class` tells whether to fix the input, retry or give up. */
export interface ErrorFrame {
  type: "error";
  code: string;
  message: string;
  error_class: ErrorClassName;
  hint: string;
  fatal: boolean;
}

/** Last frame before the server closes; `reason` is `end`, `shutdown`, `error` or `idle`. */
export interface ByeFrame {
  type: "bye";
  reason: string;
  summary: Record<string, unknown>;
}

export type Frame =
  | HelloFrame
  | AudioFrame
  | FlushFrame
  | EndFrame
  | ReadyFrame
  | EventFrame
  | FeaturesFrame
  | StatusFrame
  | ErrorFrame
  | ByeFrame;

export type FrameType = Frame["type"];

// -- schema (mirrors the dataclass fields of stream/wire.py) ---------------------------------

type Kind = "int" | "float" | "str" | "bytes" | "bool" | "dict" | "list";

interface FieldSpec {
  kind: Kind;
  /** Default used when the field is absent or nil; `undefined` with `required` false = optional. */
  default?: () => unknown;
  required?: boolean;
}

const req = (kind: Kind): FieldSpec => ({ kind, required: true });
const opt = (kind: Kind, value: unknown): FieldSpec => ({
  kind,
  default: () => (Array.isArray(value) ? [...value] : value !== null && typeof value === "object" ? { ...value } : value),
});
const optional = (kind: Kind): FieldSpec => ({ kind });

const SCHEMAS: Record<FrameType, Record<string, FieldSpec>> = {
  hello: {
    sample_rate: req("int"),
    encoding: opt("str", "f32le"),
    channels: opt("int", 1),
    stream_id: opt("str", ""),
    role: opt("str", "send"),
    outputs: opt("list", ["events", "status"]),
    resume_from_seq: optional("int"),
    options: opt("dict", {}),
    last_output_seq: optional("int"),
  },
  audio: { seq: req("int"), pcm: req("bytes"), start_sample: optional("int") },
  flush: {},
  end: {},
  ready: {
    stream_id: req("str"),
    sample_rate: opt("int", 16000),
    encoding: opt("str", "f32le"),
    channels: opt("int", 1),
    frame_stride_samples: opt("int", 320),
    info: opt("dict", {}),
  },
  event: { event: req("dict"), seq: optional("int") },
  features: {
    stream_id: req("str"),
    output: req("str"),
    start_sample: req("int"),
    num_frames: req("int"),
    dim: req("int"),
    data: req("bytes"),
    dtype: opt("str", "f32"),
    frame_stride_samples: opt("int", 320),
    seq: optional("int"),
  },
  status: {
    lag_s: opt("float", 0.0),
    dropped: opt("dict", {}),
    health: opt("str", "ok"),
    reasons: opt("list", []),
    frames: opt("int", 0),
    audio_s: opt("float", 0.0),
    level_dbfs: opt("float", -120.0),
    seq: optional("int"),
    through_seq: optional("int"),
  },
  error: {
    code: req("str"),
    message: req("str"),
    error_class: opt("str", "input"),
    hint: opt("str", ""),
    fatal: opt("bool", false),
  },
  bye: { reason: opt("str", "end"), summary: opt("dict", {}) },
};

const FRAME_TYPES = Object.keys(SCHEMAS) as FrameType[];

/** Frames a client may build without spelling out every default. */
export type HelloInit = Pick<HelloFrame, "sample_rate"> & Partial<Omit<HelloFrame, "type" | "sample_rate">>;

/** A `hello` frame with the protocol's defaults filled in. */
export function hello(init: HelloInit): HelloFrame {
  return {
    type: "hello",
    sample_rate: init.sample_rate,
    encoding: init.encoding ?? "f32le",
    channels: init.channels ?? 1,
    stream_id: init.stream_id ?? "",
    role: init.role ?? "send",
    outputs: init.outputs ? [...init.outputs] : ["events", "status"],
    resume_from_seq: init.resume_from_seq,
    options: init.options ? { ...init.options } : {},
    ...(init.last_output_seq !== undefined ? { last_output_seq: init.last_output_seq } : {}),
  };
}

/**
 * Serialize a frame to one msgpack message (`{"v": 1, "type": ..., fields}`; nil fields omitted).
 *
 * @throws {ProtocolError} If the message exceeds `limits.maxMessageBytes`.
 */
export function encodeFrame(frame: Frame, limits: WireLimits = DEFAULT_WIRE_LIMITS): Uint8Array {
  const body: Record<string, unknown> = { v: PROTOCOL_VERSION };
  for (const name of Object.keys(SCHEMAS[frame.type])) {
    const value = (frame as unknown as Record<string, unknown>)[name];
    if (value !== undefined && value !== null) body[name] = value;
  }
  body.type = frame.type;
  const data = encode(body);
  if (data.byteLength > limits.maxMessageBytes) {
    throw new ProtocolError(`${frame.type} frame is ${data.byteLength} bytes; limit is ${limits.maxMessageBytes}`, {
      hint: "send smaller audio blocks or fewer frames per message",
    });
  }
  return data;
}

/**
 * Parse and validate one message.
 *
 * @throws {ProtocolError} On oversize, malformed msgpack, bad nesting, wrong version, unknown
 *   type, missing or mistyped fields.
 */
export function decodeFrame(data: Uint8Array | ArrayBuffer, limits: WireLimits = DEFAULT_WIRE_LIMITS): Frame {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (bytes.byteLength > limits.maxMessageBytes) {
    throw new ProtocolError(`message is ${bytes.byteLength} bytes; limit is ${limits.maxMessageBytes}`);
  }
  let body: unknown;
  try {
    body = decode(bytes, {
      maxStrLength: limits.maxStrLen,
      maxBinLength: limits.maxMessageBytes,
      maxArrayLength: limits.maxArrayLen,
      maxMapLength: limits.maxMapLen,
      maxExtLength: 0,
    });
  } catch (e) {
    throw new ProtocolError(`malformed msgpack message: ${(e as Error).message}`, { cause: e });
  }
  if (!isPlainMap(body)) {
    throw new ProtocolError(`message is a msgpack ${describe(body)}; expected a map with 'v' and 'type'`);
  }
  checkDepth(body, limits.maxDepth);
  if (body.v !== PROTOCOL_VERSION) {
    throw new ProtocolError(`protocol version v=${short(body.v)}; this peer speaks v=${PROTOCOL_VERSION}`, {
      hint: "upgrade the older side; both ends must speak the same protocol version",
    });
  }
  const kind = body.type;
  if (typeof kind !== "string" || !(FRAME_TYPES as string[]).includes(kind)) {
    throw new ProtocolError(`unknown frame type=${short(kind)}; expected one of ${JSON.stringify([...FRAME_TYPES].sort())}`);
  }
  const frame = build(kind as FrameType, body);
  validate(frame);
  return frame;
}

function build(type: FrameType, body: Record<string, unknown>): Frame {
  const out: Record<string, unknown> = { type };
  for (const [name, spec] of Object.entries(SCHEMAS[type])) {
    const value = body[name];
    if (value === undefined || value === null) {
      if (spec.required) throw new ProtocolError(`${type} frame lacks required field '${name}'`);
      if (spec.default) out[name] = spec.default();
      continue;
    }
    if (!hasKind(value, spec.kind)) {
      throw new ProtocolError(`${type}.${name}=${short(value)}; expected ${spec.kind}`);
    }
    out[name] = value;
  }
  return out as unknown as Frame;
}

function hasKind(value: unknown, kind: Kind): boolean {
  switch (kind) {
    case "int":
      return typeof value === "number" && Number.isInteger(value);
    case "float":
      return typeof value === "number";
    case "str":
      return typeof value === "string";
    case "bytes":
      return value instanceof Uint8Array;
    case "bool":
      return typeof value === "boolean";
    case "dict":
      return isPlainMap(value);
    case "list":
      return Array.isArray(value) && value.every((v) => typeof v === "string");
  }
}

const BYTES_PER_FEATURE: Record<string, number> = { f32: 4, f16: 2 };
const HEALTH = ["ok", "degraded", "failing"];

const SEQ_FIELDS = ["seq", "through_seq", "last_output_seq", "resume_from_seq"];

function validate(frame: Frame): void {
  for (const name of SEQ_FIELDS) {
    const value = (frame as unknown as Record<string, unknown>)[name];
    if (typeof value === "number" && value < 0) throw new ProtocolError(`${frame.type}.${name}=${value}; expected >= 0`);
  }
  switch (frame.type) {
    case "hello":
      if (!(ENCODINGS as string[]).includes(frame.encoding)) {
        throw new ProtocolError(`hello.encoding='${frame.encoding}'; expected one of ${JSON.stringify(ENCODINGS)}`);
      }
      if (frame.sample_rate < 1000 || frame.sample_rate > 768_000) {
        throw new ProtocolError(`hello.sample_rate=${frame.sample_rate}; expected 1000..768000 Hz`);
      }
      if (frame.channels < 1 || frame.channels > 64) {
        throw new ProtocolError(`hello.channels=${frame.channels}; expected 1..64`);
      }
      if (frame.role !== "send" && frame.role !== "receive") {
        throw new ProtocolError(`hello.role='${String(frame.role)}'; expected 'send' or 'receive'`);
      }
      return;
    case "audio":
      if (frame.seq < 0 || (frame.start_sample ?? 0) < 0) {
        throw new ProtocolError(`audio.seq=${frame.seq}, start_sample=${String(frame.start_sample)}; expected >= 0`);
      }
      return;
    case "features": {
      const itemsize = BYTES_PER_FEATURE[frame.dtype] ?? 0;
      if (!itemsize || frame.num_frames < 0 || frame.dim < 0 || frame.data.byteLength !== frame.num_frames * frame.dim * itemsize) {
        throw new ProtocolError(
          `features: dtype='${frame.dtype}', ${frame.num_frames}x${frame.dim} does not match ${frame.data.byteLength} data bytes`,
        );
      }
      return;
    }
    case "error":
      if (!(ERROR_CLASSES as string[]).includes(frame.error_class)) {
        throw new ProtocolError(`error.error_class='${frame.error_class}'; expected one of ${JSON.stringify(ERROR_CLASSES)}`);
      }
      return;
    case "status":
      if (!HEALTH.includes(frame.health)) {
        throw new ProtocolError(`status.health='${frame.health}'; expected ok, degraded or failing`);
      }
      if (!Object.values(frame.dropped).every((v) => typeof v === "number" && Number.isInteger(v))) {
        throw new ProtocolError(`status.dropped=${short(frame.dropped)}; expected a map of reason -> count`);
      }
      return;
    default:
      return;
  }
}

function isPlainMap(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value) && !(value instanceof Uint8Array);
}

function checkDepth(root: unknown, maxDepth: number): void {
  const stack: Array<[unknown, number]> = [[root, 1]];
  while (stack.length) {
    const [item, depth] = stack.pop()!;
    if (depth > maxDepth) throw new ProtocolError(`message nesting depth > ${maxDepth}`);
    const children = Array.isArray(item) ? item : isPlainMap(item) ? Object.values(item) : [];
    for (const child of children) {
      if (Array.isArray(child) || isPlainMap(child)) stack.push([child, depth + 1]);
    }
  }
}

function describe(value: unknown): string {
  if (Array.isArray(value)) return "array";
  if (value instanceof Uint8Array) return "bin";
  return value === null ? "nil" : typeof value;
}

function short(value: unknown): string {
  let text: string;
  try {
    text = value instanceof Uint8Array ? `<${value.byteLength} bytes>` : JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length <= 60 ? text : `${text.slice(0, 57)}...`;
}

// -- PCM and features ------------------------------------------------------------------------

/**
 * Float samples in [-1, 1] (or int16 PCM) to little-endian PCM bytes.
 *
 * `s16le` from floats clips and rounds exactly as `encode_pcm` in Python; `f32le` from int16
 * divides by 32768 exactly as the server's `decode_pcm` does for `s16le`.
 */
export function encodePcm(samples: Float32Array | Int16Array, encoding: Encoding): Uint8Array {
  const n = samples.length;
  if (encoding === "f32le") {
    const out = new Float32Array(n);
    if (samples instanceof Int16Array) {
      for (let i = 0; i < n; i++) out[i] = samples[i]! / 32768;
    } else {
      out.set(samples);
    }
    return littleEndian(new Uint8Array(out.buffer), 4);
  }
  if (encoding === "s16le") {
    const out = new Int16Array(n);
    if (samples instanceof Int16Array) {
      out.set(samples);
    } else {
      const hi = 32767 / 32768;
      for (let i = 0; i < n; i++) {
        const x = Math.min(Math.max(samples[i]!, -1), hi) * 32768;
        out[i] = roundHalfEven(x);
      }
    }
    return littleEndian(new Uint8Array(out.buffer), 2);
  }
  throw new ProtocolError(`encoding='${String(encoding)}'; expected one of ${JSON.stringify(ENCODINGS)}`);
}

/** numpy's round() (half to even), so s16le bytes equal Python's `encode_pcm`. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

const IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function littleEndian(bytes: Uint8Array, width: number): Uint8Array {
  if (IS_LITTLE_ENDIAN) return bytes;
  for (let i = 0; i < bytes.length; i += width) bytes.subarray(i, i + width).reverse();
  return bytes;
}

/** Features of a `features` frame as float32 `[num_frames * dim]` (row-major). */
export function featuresToFloat32(frame: FeaturesFrame): Float32Array {
  const n = frame.num_frames * frame.dim;
  const view = new DataView(frame.data.buffer, frame.data.byteOffset, frame.data.byteLength);
  const out = new Float32Array(n);
  if (frame.dtype === "f32") {
    for (let i = 0; i < n; i++) out[i] = view.getFloat32(i * 4, true);
  } else {
    for (let i = 0; i < n; i++) out[i] = halfToFloat(view.getUint16(i * 2, true));
  }
  return out;
}

/** IEEE 754 binary16 to a JS number. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const fraction = h & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 0x1f) return fraction ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}
