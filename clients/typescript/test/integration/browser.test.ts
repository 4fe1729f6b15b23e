/**
 * The same package in a real browser (headless Chromium): the built ES modules load with an
 * import map, use the browser's own fetch and WebSocket (no `ws`), and run the example
 * against a real `ostinato serve`. Skipped when Chromium is not installed (`make setup` installs it).
 */

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { extname, join, normalize } from "node:path";
import { describe, it } from "node:test";

import { PACKAGE_DIR, Server } from "../helpers/server.js";

const CHROMIUM = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"].find((p) => existsSync(p));

const PAGE = (serverUrl: string): string => `<!doctype html>
<script type="importmap">{"imports": {"@msgpack/msgpack": "/node_modules/@msgpack/msgpack/dist.esm/index.mjs"}}</script>
<script type="module">
const report = (body) => fetch("/result", { method: "POST", body: JSON.stringify(body) });
try {
  const { Wav2Vec2FeatureAdapter } = await import("/dist/src/index.js");
  const adapter = new Wav2Vec2FeatureAdapter(${JSON.stringify(serverUrl)}, { model: "base" }, 5000, { maxRetries: 3, backoff: 1000 });
  await adapter.initialize({ name: "browser", version: "2.0.0", parameters: { attentionDropout: 0.1, hiddenDropout: 0.1 } });
  await adapter.startStreaming({ chunkSize: 1600, overlap: 400, maxQueueSize: 10, batchSize: 4 });
  const counts = [];
  for (let i = 0; i < 10; i++) {
    const x = new Float32Array(1600).map((_, j) => 0.3 * Math.sin((i * 1600 + j) * 0.07));
    counts.push((await adapter.processChunk(x)).numFrames);
  }
  const stop = await adapter.stopStreaming();
  await adapter.dispose();
  report({ ok: true, counts, last: stop.numFrames, frames: stop.summary.frames, nativeWebSocket: typeof WebSocket === "function" });
} catch (e) {
  report({ ok: false, error: String(e), stack: e && e.stack });
}
</script>`;

const TYPES: Record<string, string> = { ".js": "text/javascript", ".mjs": "text/javascript", ".html": "text/html", ".map": "application/json" };

describe("in a browser", { skip: CHROMIUM === undefined ? "chromium is not installed" : false, timeout: 90_000 }, () => {
  it("runs the issue's example in headless Chromium with the browser's WebSocket", async () => {
    let resolveResult!: (body: Record<string, unknown>) => void;
    const result = new Promise<Record<string, unknown>>((r) => (resolveResult = r));
    let pageUrl = "";
    let serverUrl = "";
    const site = http.createServer((req, res) => {
      if (req.method === "POST" && req.url === "/result") {
        let body = "";
        req.on("data", (c: Buffer) => (body += c.toString())).on("end", () => {
          res.end("ok");
          resolveResult(JSON.parse(body) as Record<string, unknown>);
        });
        return;
      }
      const path = normalize(req.url ?? "/").replace(/^(\.\.[/\\])+/, "");
      if (path === "/" || path === "/index.html") {
        res.writeHead(200, { "Content-Type": "text/html" }).end(PAGE(serverUrl));
        return;
      }
      const file = join(PACKAGE_DIR, path);
      if (!file.startsWith(PACKAGE_DIR) || !(path.startsWith("/dist/") || path.startsWith("/node_modules/")) || !existsSync(file)) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { "Content-Type": TYPES[extname(file)] ?? "application/octet-stream" }).end(readFileSync(file));
    });
    await new Promise<void>((r) => site.listen(0, "127.0.0.1", r));
    pageUrl = `http://127.0.0.1:${(site.address() as { port: number }).port}`;
    // The page is served from another origin than the service: the service must allow that
    // origin (its Origin check), and the service sends no CORS headers, so this test browser
    // runs with web security off — a deployment serves the app from the service's origin or a proxy.
    const server = await Server.start({ modelName: "base", args: ["--allow-origin", pageUrl] });
    serverUrl = server.url;
    const profile = mkdtempSync(join(tmpdir(), "ostinato-ts-chromium-"));
    const browser = spawn(CHROMIUM!, [
      "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
      "--disable-extensions", "--disable-web-security", `--user-data-dir=${profile}`, pageUrl,
    ], { stdio: "ignore" });
    try {
      const timer = setTimeout(() => resolveResult({ ok: false, error: "no result from the page within 60 s" }), 60_000);
      const body = await result;
      clearTimeout(timer);
      assert.equal(body.ok, true, String(body.error) + "\n" + String(body.stack ?? ""));
      assert.equal(body.nativeWebSocket, true);
      assert.deepEqual(body.counts, [0, 5, 5, 5, 5, 5, 5, 5, 5, 5]);
      assert.equal((body.counts as number[]).reduce((a, b) => a + b, 0) + (body.last as number), body.frames);
      assert.equal(body.frames, Math.floor((16000 - 400) / 320) + 1);
    } finally {
      browser.kill("SIGKILL");
      const closed = new Promise<void>((r) => site.close(() => r()));
      site.closeAllConnections();
      await closed;
      await server.stop();
      rmSync(profile, { recursive: true, force: true });
    }
  });
});
