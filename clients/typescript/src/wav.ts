/**
 * A small RIFF/WAVE reader (PCM 8/16/24/32-bit and IEEE float 32/64), for examples and tests
 * that stream files: returns mono float32 samples (channels averaged) and the sample rate.
 * Works on any `ArrayBuffer`/`Uint8Array` (Node.js files, browser fetches).
 *
 * @module
 */

import { InputError } from "./errors.js";

export interface WavAudio {
  sampleRate: number;
  channels: number;
  /** Mono samples in [-1, 1] (channels averaged). */
  samples: Float32Array;
}

/**
 * Decode a WAV file.
 *
 * @throws {InputError} When the bytes are not a WAV file this reader supports.
 */
export function decodeWav(data: ArrayBuffer | Uint8Array): WavAudio {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const tag = (at: number): string => String.fromCharCode(...bytes.subarray(at, at + 4));
  if (bytes.byteLength < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE") throw new InputError("not a RIFF/WAVE file");
  let format = 0;
  let channels = 0;
  let sampleRate = 0;
  let bits = 0;
  let at = 12;
  while (at + 8 <= bytes.byteLength) {
    const id = tag(at);
    const size = view.getUint32(at + 4, true);
    const body = at + 8;
    if (id === "fmt ") {
      format = view.getUint16(body, true);
      channels = view.getUint16(body + 2, true);
      sampleRate = view.getUint32(body + 4, true);
      bits = view.getUint16(body + 14, true);
      if (format === 0xfffe && size >= 26) format = view.getUint16(body + 24, true); // WAVE_FORMAT_EXTENSIBLE
    } else if (id === "data") {
      if (!channels) throw new InputError("WAV data chunk before its fmt chunk");
      const end = Math.min(bytes.byteLength, body + size);
      return { sampleRate, channels, samples: mixdown(view, body, end, format, bits, channels) };
    }
    at = body + size + (size & 1);
  }
  throw new InputError("WAV file has no data chunk");
}

function mixdown(view: DataView, start: number, end: number, format: number, bits: number, channels: number): Float32Array {
  const width = bits / 8;
  const read = sampleReader(view, format, bits);
  const frames = Math.floor((end - start) / (width * channels));
  const out = new Float32Array(frames);
  for (let i = 0; i < frames; i++) {
    let sum = 0;
    for (let c = 0; c < channels; c++) sum += read(start + (i * channels + c) * width);
    out[i] = sum / channels;
  }
  return out;
}

function sampleReader(view: DataView, format: number, bits: number): (at: number) => number {
  if (format === 1 && bits === 16) return (at) => view.getInt16(at, true) / 32768;
  if (format === 1 && bits === 8) return (at) => (view.getUint8(at) - 128) / 128;
  if (format === 1 && bits === 24) return (at) => ((view.getUint8(at) | (view.getUint8(at + 1) << 8) | (view.getInt8(at + 2) << 16)) / 8388608);
  if (format === 1 && bits === 32) return (at) => view.getInt32(at, true) / 2147483648;
  if (format === 3 && bits === 32) return (at) => view.getFloat32(at, true);
  if (format === 3 && bits === 64) return (at) => view.getFloat64(at, true);
  throw new InputError(`WAV format ${format} with ${bits}-bit samples is not supported; expected PCM 8/16/24/32 or float 32/64`);
}
