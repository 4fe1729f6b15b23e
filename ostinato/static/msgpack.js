// Minimal MessagePack encoder/decoder for the ostinato wire protocol (docs/protocol.md).
// Covers what the protocol uses: nil, bool, integers (up to 2^53), float64 (float32 decoded),
// str, bin, array, map. No extension types (the server refuses them).

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

class Writer {
  constructor() { this.buf = new Uint8Array(256); this.view = new DataView(this.buf.buffer); this.pos = 0; }
  ensure(n) {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.pos));
    this.buf = next; this.view = new DataView(next.buffer);
  }
  u8(v) { this.ensure(1); this.buf[this.pos++] = v; }
  u16(v) { this.ensure(2); this.view.setUint16(this.pos, v); this.pos += 2; }
  u32(v) { this.ensure(4); this.view.setUint32(this.pos, v); this.pos += 4; }
  bytes(b) { this.ensure(b.length); this.buf.set(b, this.pos); this.pos += b.length; }
  result() { return this.buf.slice(0, this.pos); }
}

function writeValue(w, value) {
  if (value === null || value === undefined) { w.u8(0xc0); return; }
  if (value === false) { w.u8(0xc2); return; }
  if (value === true) { w.u8(0xc3); return; }
  if (typeof value === "number") { writeNumber(w, value); return; }
  if (typeof value === "string") { writeStr(w, value); return; }
  if (value instanceof Uint8Array) { writeBin(w, value); return; }
  if (value instanceof ArrayBuffer) { writeBin(w, new Uint8Array(value)); return; }
  if (Array.isArray(value)) {
    writeHeader(w, value.length, 0x90, 0xdc, 0xdd, 16);
    for (const item of value) writeValue(w, item);
    return;
  }
  if (typeof value === "object") {
    const keys = Object.keys(value).filter((k) => value[k] !== undefined);
    writeHeader(w, keys.length, 0x80, 0xde, 0xdf, 16);
    for (const k of keys) { writeStr(w, k); writeValue(w, value[k]); }
    return;
  }
  throw new TypeError(`cannot encode ${typeof value}`);
}

function writeHeader(w, n, fix, c16, c32, fixLimit) {
  if (n < fixLimit) w.u8(fix | n);
  else if (n < 0x10000) { w.u8(c16); w.u16(n); }
  else { w.u8(c32); w.u32(n); }
}

function writeNumber(w, v) {
  if (!Number.isInteger(v) || !Number.isSafeInteger(v)) {
    w.u8(0xcb); w.ensure(8); w.view.setFloat64(w.pos, v); w.pos += 8; return;
  }
  if (v >= 0) {
    if (v < 0x80) w.u8(v);
    else if (v < 0x100) { w.u8(0xcc); w.u8(v); }
    else if (v < 0x10000) { w.u8(0xcd); w.u16(v); }
    else if (v < 0x100000000) { w.u8(0xce); w.u32(v); }
    else { w.u8(0xcf); w.u32(Math.floor(v / 0x100000000)); w.u32(v >>> 0); }
  } else if (v >= -32) { w.u8(v & 0xff); }
  else if (v >= -0x80) { w.u8(0xd0); w.ensure(1); w.view.setInt8(w.pos++, v); }
  else if (v >= -0x8000) { w.u8(0xd1); w.ensure(2); w.view.setInt16(w.pos, v); w.pos += 2; }
  else if (v >= -0x80000000) { w.u8(0xd2); w.ensure(4); w.view.setInt32(w.pos, v); w.pos += 4; }
  else { w.u8(0xcb); w.ensure(8); w.view.setFloat64(w.pos, v); w.pos += 8; }
}

function writeStr(w, s) {
  const b = textEncoder.encode(s);
  if (b.length < 32) w.u8(0xa0 | b.length);
  else if (b.length < 0x100) { w.u8(0xd9); w.u8(b.length); }
  else if (b.length < 0x10000) { w.u8(0xda); w.u16(b.length); }
  else { w.u8(0xdb); w.u32(b.length); }
  w.bytes(b);
}

function writeBin(w, b) {
  if (b.length < 0x100) { w.u8(0xc4); w.u8(b.length); }
  else if (b.length < 0x10000) { w.u8(0xc5); w.u16(b.length); }
  else { w.u8(0xc6); w.u32(b.length); }
  w.bytes(b);
}

export function encode(value) {
  const w = new Writer();
  writeValue(w, value);
  return w.result();
}

export function decode(input) {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  const need = (n) => { if (pos + n > bytes.length) throw new RangeError("truncated msgpack"); };
  const str = (n) => { need(n); const s = textDecoder.decode(bytes.subarray(pos, pos + n)); pos += n; return s; };
  const bin = (n) => { need(n); const b = bytes.slice(pos, pos + n); pos += n; return b; };
  const arr = (n) => { const out = new Array(n); for (let i = 0; i < n; i++) out[i] = read(); return out; };
  const map = (n) => { const out = {}; for (let i = 0; i < n; i++) { const k = read(); out[k] = read(); } return out; };
  const u = (n) => { need(n); let v; if (n === 1) v = view.getUint8(pos); else if (n === 2) v = view.getUint16(pos); else v = view.getUint32(pos); pos += n; return v; };
  function read() {
    need(1);
    const t = bytes[pos++];
    if (t < 0x80) return t;
    if (t < 0x90) return map(t & 0x0f);
    if (t < 0xa0) return arr(t & 0x0f);
    if (t < 0xc0) return str(t & 0x1f);
    if (t >= 0xe0) return t - 0x100;
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return bin(u(1));
      case 0xc5: return bin(u(2));
      case 0xc6: return bin(u(4));
      case 0xca: { need(4); const v = view.getFloat32(pos); pos += 4; return v; }
      case 0xcb: { need(8); const v = view.getFloat64(pos); pos += 8; return v; }
      case 0xcc: return u(1);
      case 0xcd: return u(2);
      case 0xce: return u(4);
      case 0xcf: { const hi = u(4); const lo = u(4); return hi * 0x100000000 + lo; }
      case 0xd0: { need(1); const v = view.getInt8(pos); pos += 1; return v; }
      case 0xd1: { need(2); const v = view.getInt16(pos); pos += 2; return v; }
      case 0xd2: { need(4); const v = view.getInt32(pos); pos += 4; return v; }
      case 0xd3: { need(8); const hi = view.getInt32(pos); const lo = view.getUint32(pos + 4); pos += 8; return hi * 0x100000000 + lo; }
      case 0xd9: return str(u(1));
      case 0xda: return str(u(2));
      case 0xdb: return str(u(4));
      case 0xdc: return arr(u(2));
      case 0xdd: return arr(u(4));
      case 0xde: return map(u(2));
      case 0xdf: return map(u(4));
      default: throw new TypeError(`unsupported msgpack type 0x${t.toString(16)}`);
    }
  }
  const value = read();
  if (pos !== bytes.length) throw new RangeError("trailing bytes after msgpack value");
  return value;
}
