// AudioWorkletProcessor: the microphone at the AudioContext's rate (44.1/48 kHz) in, 16 kHz
// mono PCM16 frames of ~100 ms out to the page (a low-pass FIR, then linear interpolation).

class Pcm16Downsampler extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate = 16000, frameMs = 100 } = options.processorOptions || {};
    this.step = sampleRate / targetRate; // input samples per output sample
    this.taps = lowPass(this.step);
    this.history = new Float32Array(this.taps.length * 2); // written twice: no modulo in the loop
    this.at = 0;
    this.previous = 0; // last filtered sample
    this.next = 1; // where the next output falls, in input samples after `previous`
    this.frameSamples = Math.round((targetRate * frameMs) / 1000);
    this.frame = new Int16Array(this.frameSamples);
    this.filled = 0;
    this.sumSquares = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") this.post("flushed");
    };
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true; // not connected yet
    const length = channels[0].length;
    for (let i = 0; i < length; i++) {
      let x = 0;
      for (const channel of channels) x += channel[i];
      const y = this.filter(x / channels.length);
      while (this.next <= 1) {
        this.push(this.previous + (y - this.previous) * this.next);
        this.next += this.step;
      }
      this.next -= 1;
      this.previous = y;
    }
    return true;
  }

  filter(x) {
    const taps = this.taps;
    const n = taps.length;
    this.history[this.at] = x;
    this.history[this.at + n] = x;
    this.at = (this.at + 1) % n;
    let y = 0;
    for (let k = 0; k < n; k++) y += taps[k] * this.history[this.at + k];
    return y;
  }

  push(sample) {
    const clipped = Math.max(-1, Math.min(1, sample));
    this.frame[this.filled++] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
    this.sumSquares += clipped * clipped;
    if (this.filled === this.frameSamples) this.post("frame");
  }

  post(type) {
    const pcm = this.frame.slice(0, this.filled).buffer;
    const level = this.filled ? Math.sqrt(this.sumSquares / this.filled) : 0;
    this.port.postMessage({ type, pcm, level }, [pcm]);
    this.filled = 0;
    this.sumSquares = 0;
  }
}

// Windowed-sinc (Hamming) low-pass below the target's Nyquist frequency, so that what is
// above 8 kHz does not fold back into speech; one tap (a copy) when no rate change is needed.
function lowPass(step) {
  if (step <= 1) return Float32Array.of(1);
  const half = Math.ceil(8 * step);
  const n = 2 * half + 1;
  const cutoff = 0.42 / step; // of the input rate: 6.7 kHz for a 16 kHz target
  const taps = new Float32Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const t = i - half;
    const sinc = t === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * t) / (Math.PI * t);
    taps[i] = sinc * (0.54 - 0.46 * Math.cos((2 * Math.PI * i) / (n - 1)));
    sum += taps[i];
  }
  return taps.map((tap) => tap / sum);
}

registerProcessor("pcm16-downsampler", Pcm16Downsampler);
