// AudioWorklet: collects microphone audio into 100 ms blocks at 16 kHz mono and posts them to
// the page. The page asks for an AudioContext at 16 kHz, so the browser resamples; when a
// browser refuses that rate this processor resamples itself (linear interpolation after a
// moving-average anti-alias filter), so the server always receives 16 kHz.

const TARGET_RATE = 16000;
const BLOCK = 1600; // 100 ms at 16 kHz

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.ratio = sampleRate / TARGET_RATE; // input samples per output sample
    this.out = new Float32Array(BLOCK);
    this.fill = 0;
    this.pos = 0; // fractional read position into the current input block
    this.prev = 0;
    this.sumSquares = 0;
  }

  push(value) {
    this.out[this.fill++] = value;
    this.sumSquares += value * value;
    if (this.fill === BLOCK) {
      const rms = Math.sqrt(this.sumSquares / BLOCK);
      this.port.postMessage({ samples: this.out, rms }, [this.out.buffer]);
      this.out = new Float32Array(BLOCK);
      this.fill = 0;
      this.sumSquares = 0;
    }
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const n = channels[0].length;
    const mono = new Float32Array(n);
    for (const ch of channels) for (let i = 0; i < n; i++) mono[i] += ch[i] / channels.length;
    if (this.ratio === 1) {
      for (let i = 0; i < n; i++) this.push(mono[i]);
      return true;
    }
    const width = Math.max(1, Math.round(this.ratio));
    const smooth = new Float32Array(n);
    let acc = 0;
    for (let i = 0; i < n; i++) { // moving average over `width` samples: crude anti-alias filter
      acc += mono[i] - (i >= width ? mono[i - width] : 0);
      smooth[i] = acc / Math.min(i + 1, width);
    }
    while (this.pos < n) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const a = i === 0 ? this.prev : smooth[i - 1];
      this.push(a + (smooth[i] - a) * frac);
      this.pos += this.ratio;
    }
    this.pos -= n;
    this.prev = smooth[n - 1];
    return true;
  }
}

registerProcessor("ostinato-capture", CaptureProcessor);
