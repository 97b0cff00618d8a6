// Audio sources for a session: the microphone (16 kHz PCM16 frames from worklet.js) or a
// file's own bytes, sent at the pace its duration implies.

export const TARGET_RATE = 16000;
const FRAME_MS = 100;
const FALLBACK_BYTES_PER_SEC = 32000; // a file whose duration the browser cannot tell
const MAX_CHUNK = 32 * 1024; // well below STT_MAX_FRAME_BYTES (64 KiB)
const MAX_BUFFERED = 256 * 1024; // do not queue more than this in the WebSocket

export class MicrophoneError extends Error {}

/** Starts capturing; `onFrame(ArrayBuffer)` gets each PCM16 frame, `onLevel(rms)` its level.
 * Returns `{ stop(): Promise<void>, audioMs(): number }`. */
export async function openMicrophone({ onFrame, onLevel }) {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new MicrophoneError(
      "This browser gives no microphone to this page: open it over HTTPS or on localhost.");
  }
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
  } catch (err) {
    if (err.name === "NotAllowedError" || err.name === "SecurityError") {
      throw new MicrophoneError(
        "Microphone access was refused. Allow it in the browser's site settings, then try again.");
    }
    if (err.name === "NotFoundError" || err.name === "OverconstrainedError") {
      throw new MicrophoneError("No microphone was found on this device.");
    }
    throw new MicrophoneError(`The microphone could not be opened (${err.name}: ${err.message}).`);
  }
  const context = new AudioContext();
  let samples = 0;
  let flushed = null;
  try {
    await context.audioWorklet.addModule(new URL("./worklet.js", import.meta.url));
  } catch (err) {
    media.getTracks().forEach((track) => track.stop());
    await context.close();
    throw err;
  }
  const source = context.createMediaStreamSource(media);
  const node = new AudioWorkletNode(context, "pcm16-downsampler", {
    processorOptions: { targetRate: TARGET_RATE, frameMs: FRAME_MS },
  });
  node.port.onmessage = ({ data }) => {
    samples += data.pcm.byteLength / 2;
    if (data.pcm.byteLength) onFrame(data.pcm);
    onLevel(data.level);
    if (data.type === "flushed") flushed?.();
  };
  // Connected to the output (it writes silence) so that the graph pulls it.
  source.connect(node).connect(context.destination);
  await context.resume();

  return {
    audioMs: () => (samples * 1000) / TARGET_RATE,
    async stop() {
      const done = new Promise((resolve) => { flushed = resolve; });
      node.port.postMessage("flush"); // the last partial frame, so no word is cut off
      await Promise.race([done, sleep(500)]);
      media.getTracks().forEach((track) => track.stop());
      source.disconnect();
      node.disconnect();
      await context.close();
      onLevel(0);
    },
  };
}

/** Sends `file`'s bytes through `send(ArrayBuffer)` at real-time pace, waiting while more
 * than MAX_BUFFERED is queued in `socket`; stops early when `signal` aborts. Returns an
 * `audioMs()` estimate (null when the duration is unknown) and `done`, a Promise. */
export function streamFile(file, socket, send, signal) {
  let sent = 0;
  const paced = fileDuration(file).then((seconds) => {
    const known = Number.isFinite(seconds) && seconds > 0;
    return { known, rate: known ? file.size / seconds : FALLBACK_BYTES_PER_SEC };
  });
  let rate = null;
  const done = (async () => {
    const pace = await paced;
    rate = pace.known ? pace.rate : null;
    const chunk = Math.min(MAX_CHUNK, Math.max(1024, Math.round(pace.rate * FRAME_MS / 1000)));
    const started = performance.now();
    while (sent < file.size && !signal.aborted) {
      const bytes = await file.slice(sent, sent + chunk).arrayBuffer();
      send(bytes);
      sent += bytes.byteLength;
      const due = started + (sent / pace.rate) * 1000;
      await sleep(Math.max(0, due - performance.now()));
      while (socket.bufferedAmount > MAX_BUFFERED && !signal.aborted) await sleep(50);
    }
  })();
  return { done, audioMs: () => (rate ? (sent / rate) * 1000 : null) };
}

/** Seconds of audio in `file` as the browser's own decoder reads its header; NaN if unknown. */
function fileDuration(file) {
  return new Promise((resolve) => {
    const url = URL.createObjectURL(file);
    const probe = new Audio();
    const finish = (seconds) => {
      URL.revokeObjectURL(url);
      probe.removeAttribute("src");
      resolve(seconds);
    };
    probe.preload = "metadata";
    probe.onloadedmetadata = () => finish(probe.duration);
    probe.onerror = () => finish(NaN);
    setTimeout(() => finish(NaN), 3000);
    probe.src = url;
  });
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
