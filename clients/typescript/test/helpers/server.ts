/**
 * Test helpers: a real `ostinato serve` subprocess on 127.0.0.1 with a tiny random-weight
 * model, the Python used for it, test audio made by Python, and small TCP tools (a free port,
 * a proxy whose connections can be cut, a server that accepts and never answers).
 */

import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { decodeWav } from "../../src/wav.js";

const run = promisify(execFile);

/** clients/typescript (this file is compiled to dist/test/helpers/). */
export const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const REPO_DIR = resolve(PACKAGE_DIR, "../..");
export const FIXTURES = join(PACKAGE_DIR, "test/fixtures");

/** The repo's virtualenv Python (override with OSTINATO_PYTHON). */
export function python(): string {
  const p = process.env.OSTINATO_PYTHON ?? join(REPO_DIR, ".venv/bin/python");
  if (!existsSync(p)) throw new Error(`no Python at ${p}: run \`make setup\` at the repo root, or set OSTINATO_PYTHON`);
  return p;
}

const CACHE = process.env.OSTINATO_TS_CACHE ?? join(tmpdir(), `ostinato-ts-tests-${process.getuid?.() ?? "u"}`);

async function once(name: string, make: (dir: string) => Promise<void>, done: (dir: string) => boolean): Promise<string> {
  const dir = join(CACHE, name);
  if (done(dir)) return dir;
  mkdirSync(CACHE, { recursive: true });
  const lock = `${dir}.lock`;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      if (Date.now() - statSync(lock, { throwIfNoEntry: false })!.mtimeMs > 120_000) rmSync(lock, { recursive: true, force: true });
      await new Promise((r) => setTimeout(r, 200));
      if (done(dir)) return dir;
    }
  }
  try {
    if (!done(dir)) await make(dir);
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
  return dir;
}

/** A key that changes whenever the exporter or runtime sources change (so a cached model is never stale). */
function sourceKey(): string {
  try {
    const listing = execFileSync("git", ["-C", REPO_DIR, "ls-files", "-s", "export", "runtime"], { encoding: "utf8" });
    const dirty = execFileSync("git", ["-C", REPO_DIR, "diff", "HEAD", "--", "export", "runtime"], { encoding: "utf8" });
    return createHash("sha1").update(listing).update(dirty).digest("hex").slice(0, 12);
  } catch {
    return "nogit";
  }
}

/** Export `random:tiny` once per exporter version (cached; RANDOM WEIGHTS, labelled so by the export). */
export function tinyModel(): Promise<string> {
  return once(
    `tiny-${sourceKey()}`,
    async (dir) => {
      rmSync(dir, { recursive: true, force: true });
      for (const old of readdirSync(CACHE)) if (/^tiny-[0-9a-f]+$|^tiny-nogit$/.test(old) && join(CACHE, old) !== dir) rmSync(join(CACHE, old), { recursive: true, force: true });
      await run(python(), ["-m", "ostinato", "export", "wav2vec2", "--model", "random:tiny", "--out", dir], { cwd: REPO_DIR, timeout: 300_000 });
    },
    (dir) => existsSync(join(dir, "ostinato.json")) && existsSync(join(dir, "model.onnx")),
  );
}

export interface TestAudio {
  planted: string;
  speech: string;
  occurrences: Array<[number, number]>;
}

/** Test WAVs (planted repeat, espeak-ng speech) made by test/fixtures/make_audio.py. */
export async function testAudio(): Promise<TestAudio> {
  const dir = await once(
    "audio-v1",
    async (d) => void (await run(python(), [join(FIXTURES, "make_audio.py"), d], { cwd: REPO_DIR, timeout: 120_000 })),
    (d) => existsSync(join(d, "planted.wav")) && existsSync(join(d, "speech.wav")),
  );
  return { planted: join(dir, "planted.wav"), speech: join(dir, "speech.wav"), occurrences: [[3, 5], [8, 10]] };
}

export function readWav(path: string): Float32Array {
  const wav = decodeWav(readFileSync(path));
  if (wav.sampleRate !== 16000) throw new Error(`${path}: ${wav.sampleRate} Hz; the tests use 16 kHz`);
  return wav.samples;
}

/** A running `ostinato serve`. */
export class Server {
  private exited: Promise<number | null>;

  private constructor(
    readonly proc: ChildProcess,
    readonly url: string,
    readonly port: number,
    private readonly logs: string[],
  ) {
    this.exited = new Promise((res) => (proc.exitCode !== null ? res(proc.exitCode) : proc.once("exit", (code) => res(code))));
  }

  /** Start on `port` (0: a free one) and wait for its "serving" line. */
  static async start(options: { port?: number; modelName?: string; args?: string[] } = {}): Promise<Server> {
    const model = await tinyModel();
    const args = ["-m", "ostinato", "serve", "--model", model, "--host", "127.0.0.1", "--port", String(options.port ?? 0), "--provider", "cpu"];
    if (options.modelName) args.push("--model-name", options.modelName);
    args.push(...(options.args ?? []));
    const proc = spawn(python(), args, { cwd: REPO_DIR, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, PYTHONUNBUFFERED: "1" } });
    const logs: string[] = [];
    const url = await new Promise<string>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`ostinato serve did not start within 60 s:\n${logs.join("")}`)), 60_000);
      const onData = (chunk: Buffer): void => {
        logs.push(chunk.toString());
        const m = /ostinato serving (http:\/\/[^\s]+)/.exec(logs.join(""));
        if (m) {
          clearTimeout(timer);
          res(m[1]!);
        }
      };
      proc.stdout!.on("data", onData);
      proc.stderr!.on("data", (c: Buffer) => logs.push(c.toString()));
      proc.once("exit", (code) => {
        clearTimeout(timer);
        rej(new Error(`ostinato serve exited with ${code}:\n${logs.join("")}`));
      });
    });
    return new Server(proc, url, Number(new URL(url).port), logs);
  }

  get log(): string {
    return this.logs.join("");
  }

  /** SIGKILL: the process dies at once (no bye, no drain), as a crash would. */
  async kill(): Promise<void> {
    this.proc.kill("SIGKILL");
    await this.exited;
  }

  /** SIGTERM: graceful shutdown; resolves with the exit code (SIGKILL after `graceMs`: null). */
  async stop(graceMs = 20_000): Promise<number | null> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill("SIGTERM");
    const timer = setTimeout(() => {
      this.logs.push(`\n[test helper] no exit ${graceMs} ms after SIGTERM: SIGKILL\n`);
      this.proc.kill("SIGKILL");
    }, graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** A port nothing listens on right now. */
export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** A TCP server that accepts connections and never answers (a stalled server). */
export async function stalledServer(): Promise<{ url: string; close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on("error", () => undefined);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

/** A TCP proxy to `target`; `cut()` drops every proxied connection at once (a network failure). */
export async function proxy(targetPort: number): Promise<{ url: string; cut: () => number; close: () => Promise<void> }> {
  const pairs = new Set<[net.Socket, net.Socket]>();
  const srv = net.createServer((client) => {
    const upstream = net.connect(targetPort, "127.0.0.1");
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    client.pipe(upstream);
    upstream.pipe(client);
    const drop = (): void => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const port = (srv.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    cut: () => {
      const n = pairs.size;
      for (const [a, b] of [...pairs]) {
        a.resetAndDestroy();
        b.resetAndDestroy();
      }
      pairs.clear();
      return n;
    },
    close: async () => {
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

export interface PythonFrames {
  frames: number;
  dim: number;
  start_samples: number[];
  features: Float32Array;
}

/** What ostinato's Python StreamClient receives for `wav` on `model` (test/fixtures/python_client.py). */
export async function pythonClientFrames(httpUrl: string, model: string, wav: string): Promise<PythonFrames> {
  const ws = httpUrl.replace(/^http/, "ws") + "/v1/stream";
  const { stdout } = await run(python(), [join(FIXTURES, "python_client.py"), ws, model, wav], { cwd: REPO_DIR, timeout: 120_000, maxBuffer: 64 << 20 });
  const out = JSON.parse(stdout) as Omit<PythonFrames, "features"> & { features_b64: string };
  const raw = Buffer.from(out.features_b64, "base64");
  const features = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  return { frames: out.frames, dim: out.dim, start_samples: out.start_samples, features };
}

/** Split `audio` into chunks of `size` samples (the last may be shorter). */
export function chunks(audio: Float32Array, size: number): Float32Array[] {
  const out: Float32Array[] = [];
  for (let i = 0; i < audio.length; i += size) out.push(audio.slice(i, Math.min(audio.length, i + size)));
  return out;
}
