// ostinato dashboard: streams the microphone (or a server-side file) to /v1/stream and shows
// the input level, stream health and lag, a timeline of recurring patterns and the library,
// with each pattern's description when the server has a describe model (`describe` events).
// Descriptions are model output: they only ever reach the page as text (textContent, title,
// canvas fillText), never as HTML.
// Plain ES module, no build step, no third-party code: everything is served by ostinato.
import { encode, decode } from "/static/msgpack.js";

const PROTOCOL_VERSION = 1;
const TIMELINE_S = 60;
const MAX_BUFFERED_BYTES = 1 << 20; // stop queueing audio beyond 1 MiB unsent (network too slow)
const $ = (id) => document.getElementById(id);

const state = {
  ws: null, audio: null, seq: 0, samplesSent: 0, droppedBlocks: 0, streamTimeS: 0, mode: "mic",
  events: [], patterns: new Map(), libraryAvailable: false, streamId: "",
  descriptions: new Map(), // pattern id -> {text, error, model, random_weights, prompt} from `describe` events
  libraryTimer: null,
};

function setBadge(el, text, cls) { el.textContent = text; el.className = `badge ${cls}`; }
function message(text) { $("message").textContent = text; }
function fmt(s) { return Number(s).toFixed(2); }
function colour(id) {
  let h = 0;
  for (const c of id) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return `hsl(${h % 360} 65% 45%)`;
}

// -- start-up ---------------------------------------------------------------------------------

async function loadInfo() {
  try {
    const models = await (await fetch("/v1/models")).json();
    const m = models.models.find((x) => x.name === models.default);
    if (m) {
      const weights = m.random_weights ? " · RANDOM WEIGHTS" : "";
      $("model-info").textContent = `model ${m.name} (${m.state}, ${(m.providers || ["-"])[0]})${weights}`;
    }
  } catch (e) { $("model-info").textContent = "model info unavailable"; }
  try {
    const media = await (await fetch("/v1/media")).json();
    for (const f of media.files) {
      const opt = document.createElement("option");
      opt.value = `file:${f.name}`;
      opt.textContent = `Server file: ${f.name}`;
      $("source").appendChild(opt);
    }
  } catch (e) { /* the microphone still works */ }
  await refreshLibrary();
  setInterval(refreshLibrary, 5000);
}

// -- the stream -------------------------------------------------------------------------------

function wsUrl() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return `${proto}//${location.host}/v1/stream`;
}

function send(frame) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(encode({ v: PROTOCOL_VERSION, ...frame }));
}

async function start() {
  const source = $("source").value;
  state.mode = source.startsWith("file:") ? "file" : "mic";
  state.seq = 0; state.samplesSent = 0; state.droppedBlocks = 0; state.streamTimeS = 0;
  state.events = []; state.patterns.clear(); state.descriptions.clear(); renderEvents(); renderPatterns();
  $("start").disabled = true; $("stop").disabled = false;
  // Live audio: when the server cannot keep up it drops (and counts) rather than lags.
  const options = { status_interval_s: 0.5, overflow: "drop_oldest" };
  if (state.mode === "file") options.file = source.slice(5);
  let sampleRate = 16000;
  if (state.mode === "mic") {
    try { sampleRate = await startCapture(); } catch (e) { fail(`microphone unavailable: ${e.message || e}`); return; }
  }
  const ws = new WebSocket(wsUrl());
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  ws.onopen = () => {
    setBadge($("connection"), "connecting", "degraded");
    send({ type: "hello", sample_rate: sampleRate, encoding: "f32le", channels: 1,
           outputs: ["events", "status"], options });
  };
  ws.onmessage = (msg) => {
    let frame;
    try { frame = decode(msg.data); } catch (e) { message(`undecodable frame: ${e.message}`); return; }
    onFrame(frame);
  };
  ws.onclose = (ev) => { setBadge($("connection"), `closed (${ev.code})`, ev.code === 1000 ? "idle" : "error"); stop(false); };
  ws.onerror = () => message("WebSocket error (see the browser console)");
}

function fail(text) { message(text); setBadge($("connection"), "error", "error"); stop(true); }

function stop(sendEnd = true) {
  if (sendEnd && state.ws && state.ws.readyState === WebSocket.OPEN) send({ type: "end" });
  if (state.audio) {
    state.audio.stream.getTracks().forEach((t) => t.stop());
    state.audio.ctx.close();
    state.audio = null;
  }
  $("start").disabled = false; $("stop").disabled = true;
}

async function startCapture() {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  let ctx;
  try { ctx = new AudioContext({ sampleRate: 16000 }); } catch (e) { ctx = new AudioContext(); }
  await ctx.audioWorklet.addModule("/static/capture-worklet.js");
  const node = new AudioWorkletNode(ctx, "ostinato-capture");
  const silent = ctx.createGain();
  silent.gain.value = 0;
  ctx.createMediaStreamSource(stream).connect(node);
  node.connect(silent).connect(ctx.destination); // keeps the graph pulled; nothing is heard
  node.port.onmessage = (e) => onBlock(e.data.samples, e.data.rms);
  if (ctx.state === "suspended") await ctx.resume();
  state.audio = { ctx, stream, node };
  return 16000; // the worklet always delivers 16 kHz
}

function onBlock(samples, rms) {
  showLevel(rms > 0 ? 20 * Math.log10(rms) : -120);
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN || !state.streamId) return;
  if (state.ws.bufferedAmount > MAX_BUFFERED_BYTES) { state.droppedBlocks += 1; return; }
  const pcm = new Uint8Array(samples.buffer, samples.byteOffset, samples.byteLength); // f32le (little-endian hosts)
  send({ type: "audio", seq: state.seq, pcm, start_sample: state.samplesSent });
  state.seq += 1;
  state.samplesSent += samples.length;
}

function onFrame(f) {
  switch (f.type) {
    case "ready":
      state.streamId = f.stream_id;
      setBadge($("connection"), "streaming", "open");
      message(`stream ${f.stream_id.slice(0, 12)}… ${f.info && f.info.file ? `playing ${f.info.file}` : "from the microphone"}`);
      break;
    case "status": onStatus(f); break;
    case "event": onEvent(f.event); break;
    case "error":
      message(`${f.fatal ? "fatal " : ""}${f.error_class} error ${f.code}: ${f.message}${f.hint ? ` — ${f.hint}` : ""}`);
      break;
    case "bye": message(`stream ended (${f.reason}); ${f.summary.events ?? 0} events, ${fmt(f.summary.audio_s ?? 0)} s of audio`); break;
    default: break;
  }
}

function showLevel(db) {
  const clamped = Math.max(-60, Math.min(0, db));
  $("level-bar").style.width = `${((clamped + 60) / 60) * 100}%`;
  $("level").textContent = db <= -119 ? "-∞" : db.toFixed(1);
}

function onStatus(s) {
  setBadge($("health"), s.health, s.health);
  $("lag").textContent = fmt(s.lag_s);
  $("audio-s").textContent = fmt(s.audio_s);
  $("frames").textContent = s.frames;
  const dropped = Object.entries(s.dropped || {});
  if (state.droppedBlocks) dropped.push(["browser_backlog", state.droppedBlocks]);
  $("dropped").textContent = dropped.length ? dropped.map(([k, v]) => `${k} ${v}`).join(", ") : "none";
  $("reasons").textContent = (s.reasons || []).join("; ");
  state.streamTimeS = Math.max(state.streamTimeS, s.audio_s);
  if (state.mode === "file") showLevel(s.level_dbfs);
}

function onEvent(ev) {
  state.streamTimeS = Math.max(state.streamTimeS, ev.detected_at_s || 0);
  if (ev.event === "describe") { onDescribe(ev); return; }
  if (ev.event !== "match") return;
  state.events.push(ev);
  if (state.events.length > 500) state.events.shift();
  const p = state.patterns.get(ev.pattern_id) || { id: ev.pattern_id, count: 1, first: ev.first_start_s, last: ev.start_s, best: 0 };
  p.count += 1; p.last = Math.max(p.last, ev.start_s); p.best = Math.max(p.best, ev.score);
  state.patterns.set(ev.pattern_id, p);
  renderEvents();
  if (!state.libraryAvailable) renderPatterns(); else soonRefreshLibrary();
}

function onDescribe(ev) {
  const { text, error, model, random_weights, prompt } = ev;
  state.descriptions.set(ev.pattern_id, { text, error, model, random_weights, prompt });
  renderEvents();
  if (!state.libraryAvailable) renderPatterns(); else soonRefreshLibrary();
}

function soonRefreshLibrary() { // new matches and descriptions reach the library view within 0.5 s
  if (!state.libraryTimer) state.libraryTimer = setTimeout(() => { state.libraryTimer = null; refreshLibrary(); }, 500);
}

function shorten(text, n) { return text.length > n ? `${text.slice(0, n - 1)}…` : text; }

// The description cell of a pattern row: the text, or a "failed" badge (the error as tooltip).
function describeCell(d) {
  const td = document.createElement("td");
  td.className = "description";
  if (!d) { td.textContent = "—"; return td; }
  if (d.text == null) {
    const badge = Object.assign(document.createElement("span"), { className: "badge error describe-failed", textContent: "description failed" });
    badge.title = d.error || "unknown error";
    td.appendChild(badge);
    return td;
  }
  if (d.random_weights) td.appendChild(Object.assign(document.createElement("span"), { className: "badge degraded", textContent: "random weights" }));
  td.appendChild(Object.assign(document.createElement("span"), { className: "describe-text", textContent: d.text }));
  td.title = `${d.text}\n(${d.model || "model"}; prompt: ${d.prompt || "—"})`;
  return td;
}

// -- rendering --------------------------------------------------------------------------------

function renderEvents() {
  $("event-count").textContent = String(state.events.length);
  const body = $("events").querySelector("tbody");
  body.replaceChildren(...state.events.slice(-200).reverse().map((ev) => {
    const tr = document.createElement("tr");
    tr.className = "event";
    tr.dataset.pattern = ev.pattern_id;
    tr.innerHTML = `<td>${fmt(ev.detected_at_s)} s</td><td><span class="swatch"></span></td><td>${ev.score.toFixed(3)}</td>`
      + `<td>${fmt(ev.first_start_s)}–${fmt(ev.first_end_s)} s</td><td>${fmt(ev.start_s)}–${fmt(ev.end_s)} s</td>`;
    tr.querySelector(".swatch").style.background = colour(ev.pattern_id);
    tr.children[1].append(ev.pattern_id); // text node: ids are never parsed as HTML
    const d = state.descriptions.get(ev.pattern_id);
    if (d) tr.children[1].title = d.text ?? `description failed: ${d.error}`; // a property: never parsed
    return tr;
  }));
}

function renderPatterns(rows) {
  const list = rows || [...state.patterns.values()].map((p) => ({ id: p.id, label: p.id, count: p.count, first: `${fmt(p.first)} s`,
                                                                   last: `${fmt(p.last)} s`, best: p.best }));
  $("library-source").textContent = state.libraryAvailable ? "(server library)" : "(this session)";
  const body = $("patterns").querySelector("tbody");
  body.replaceChildren(...list.map((p) => {
    const tr = document.createElement("tr");
    tr.className = "pattern";
    tr.dataset.pattern = p.id;
    for (const text of [p.label, String(p.count), p.first, p.last, p.best == null ? "—" : Number(p.best).toFixed(3)]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    tr.appendChild(describeCell(p.description || state.descriptions.get(p.id)));
    tr.firstChild.prepend(Object.assign(document.createElement("span"), { className: "swatch", style: `background:${colour(p.id)}` }));
    return tr;
  }));
}

async function refreshLibrary() {
  try {
    const r = await fetch("/v1/patterns?limit=100");
    if (!r.ok) { state.libraryAvailable = false; return; }
    const body = await r.json();
    state.libraryAvailable = true;
    const when = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "—");
    renderPatterns(body.patterns.map((p) => ({
      id: String(p.id), label: p.name ? `${p.id} ${p.name}` : String(p.id), count: p.occurrence_count ?? "—",
      first: when(p.first_seen), last: when(p.last_seen), best: null,
      description: (p.metadata && p.metadata.description) || null, // stored before its event is sent
    })));
  } catch (e) { state.libraryAvailable = false; }
}

function drawTimeline() {
  const canvas = $("timeline");
  const w = canvas.clientWidth || canvas.width;
  if (canvas.width !== w) canvas.width = w;
  const g = canvas.getContext("2d");
  const h = canvas.height;
  const now = state.streamTimeS;
  const t0 = Math.max(0, now - TIMELINE_S);
  const x = (t) => ((t - t0) / TIMELINE_S) * (w - 20) + 10;
  g.clearRect(0, 0, w, h);
  g.fillStyle = "#667085"; g.font = "11px system-ui";
  for (let t = Math.ceil(t0 / 10) * 10; t <= t0 + TIMELINE_S; t += 10) {
    g.fillRect(x(t), h - 16, 1, 4);
    g.fillText(`${t} s`, x(t) + 2, h - 4);
  }
  g.fillText("first occurrence", 10, 14); g.fillText("repeat heard", 10, 96);
  const labelled = new Set(); // one description label per pattern, under its newest first-occurrence bar
  for (let i = state.events.length - 1; i >= 0; i--) { // newest first, without copying the list every frame
    const ev = state.events[i];
    if (ev.end_s < t0 && ev.first_end_s < t0) continue;
    const c = colour(ev.pattern_id);
    g.globalAlpha = 0.45; g.fillStyle = c;
    g.fillRect(x(ev.first_start_s), 22, Math.max(2, x(ev.first_end_s) - x(ev.first_start_s)), 30);
    g.globalAlpha = 1;
    g.fillRect(x(ev.start_s), 104, Math.max(2, x(ev.end_s) - x(ev.start_s)), 30);
    g.strokeStyle = c; g.beginPath();
    g.moveTo(x((ev.first_start_s + ev.first_end_s) / 2), 52);
    g.lineTo(x((ev.start_s + ev.end_s) / 2), 104); g.stroke();
    g.fillStyle = "#1d2330"; g.fillText(ev.score.toFixed(2), x(ev.start_s), 148);
    const d = state.descriptions.get(ev.pattern_id);
    if (d && !labelled.has(ev.pattern_id) && ev.first_end_s >= t0) {
      labelled.add(ev.pattern_id);
      g.fillStyle = d.text == null ? "#c53030" : "#1d2330";
      g.fillText(d.text == null ? "description failed" : shorten(d.text, 48), x(ev.first_start_s), 66);
    }
  }
  g.fillStyle = "#c53030"; g.fillRect(x(now), 18, 1, h - 36);
  requestAnimationFrame(drawTimeline);
}

$("start").addEventListener("click", start);
$("stop").addEventListener("click", () => stop(true));
loadInfo().then(() => {
  const auto = new URLSearchParams(location.search).get("autostart");
  if (auto) {
    const wanted = auto === "mic" ? "mic" : auto;
    if ([...$("source").options].some((o) => o.value === wanted)) $("source").value = wanted;
    start();
  }
});
requestAnimationFrame(drawTimeline);
