// The page: controls → one native WebSocket session at a time, fed by the microphone or a
// file; messages → transcript, latency readout and status lines.

import { MicrophoneError, openMicrophone, streamFile, TARGET_RATE } from "./audio.js";
import { Session, sessionQuery } from "./session.js";
import { LatencyReadout, Transcript } from "./transcript.js";

const $ = (id) => document.getElementById(id);
const SAVED = ["language", "vad_silence_ms", "hotwords", "numerals", "end_of_turn"];
const STOP_TIMEOUT_MS = 30000; // the server's last finals after eos; then give up

const transcript = new Transcript($("finals"), $("partial"));
const latency = new LatencyReadout({
  first: $("lat-first"), final: $("lat-final"), server: $("lat-server"),
});
let current = null; // { session, source, stopping }

function setState(state) {
  $("app").dataset.state = state;
  const busy = state !== "idle";
  $("start").disabled = busy;
  $("file").disabled = busy;
  $("stop").disabled = state !== "streaming";
}

function say(text) {
  $("status").textContent = text;
}

function alarm(text) {
  $("alert").textContent = text;
  $("alert").hidden = !text;
}

function sessionOptions() {
  const value = (id) => $(id).value.trim();
  const language = value("language");
  return {
    language: language && language !== "auto" ? language : "",
    vad_silence_ms: value("vad_silence_ms"),
    hotwords: value("hotwords"),
    numerals: $("numerals").checked ? "true" : "",
    end_of_turn: $("end_of_turn").checked ? "true" : "",
    token: value("token"),
  };
}

async function start(file = null) {
  if (current) return;
  alarm("");
  $("dropped").hidden = true;
  latency.reset();
  setState("connecting");
  const format = file ? { codec: "auto" } : { codec: "pcm_s16le", sample_rate: TARGET_RATE };
  const call_id = `web-${crypto.randomUUID().slice(0, 8)}`;
  const session = new Session(sessionQuery({ call_id, ...format, ...sessionOptions() }), {
    onMessage: handle, onEnd: ended,
  });
  const listening = file ? `Sending ${file.name}…` : "Listening: speak now.";
  current = { session, source: null, stopping: false, listening };
  try {
    if (file) {
      say(`Connecting to send ${file.name}…`);
      await session.open();
      const abort = new AbortController();
      const sending = streamFile(file, session.socket, (b) => session.send(b), abort.signal);
      current.source = { audioMs: sending.audioMs, stop: async () => abort.abort() };
      sending.done.then(() => finish());
    } else {
      say("Opening the microphone…");
      // Frames captured before the socket opens wait here, so the first word is kept.
      const early = [];
      let open = false;
      const mic = await openMicrophone({
        onFrame: (pcm) => (open ? session.send(pcm) : early.push(pcm)),
        // sqrt: speech RMS is ~0.01–0.1, which a linear meter hardly shows
        onLevel: (level) => { $("level").value = Math.min(1, 2 * Math.sqrt(level)); },
      });
      current.source = mic;
      say("Connecting…");
      try {
        await session.open();
      } catch (err) {
        await mic.stop();
        throw err;
      }
      early.forEach((pcm) => session.send(pcm));
      open = true;
    }
    setState("streaming");
  } catch (err) {
    current = null;
    setState("idle");
    say("Idle.");
    // A MicrophoneError or a refusal already reads as a sentence; anything else is a bug.
    alarm(err instanceof MicrophoneError || err.message ? err.message : String(err));
  }
}

/** Stops the source, then asks the server for the last finals (it closes when done). */
async function finish() {
  if (!current || current.stopping) return;
  const { session, source } = current;
  current.stopping = true;
  setState("stopping");
  say("Finishing: waiting for the last words…");
  await source?.stop();
  session.finish();
  setTimeout(() => { if (current?.session === session) session.abort(); }, STOP_TIMEOUT_MS);
}

function handle(msg) {
  switch (msg.type) {
    case "ready":
      if (current && !current.stopping) say(current.listening);
      break;
    case "speech_started":
      latency.speechStarted(msg);
      break;
    case "partial":
      transcript.partial(msg);
      latency.partial(msg);
      break;
    case "final":
      transcript.final(msg);
      latency.final(msg, current?.source?.audioMs() ?? null);
      break;
    case "end_of_turn":
      transcript.turn(msg);
      break;
    case "warning":
      if (msg.code === "audio_dropped") {
        $("dropped").hidden = false;
        $("dropped").textContent = "The server could not keep up and dropped " +
          `${msg.total_dropped_ms} ms of audio (${msg.dropped_ms} ms just now).`;
      }
      break;
    case "error":
      alarm(`The server stopped the session (${msg.code}): ${msg.message}`);
      break;
  }
}

async function ended({ code, reason, clean }) {
  const source = current?.source;
  const stopping = current?.stopping;
  current = null;
  if (!stopping) await source?.stop(); // the server ended it: release the microphone
  transcript.clearPartial();
  setState("idle");
  say(clean ? "Done." : `The session ended (${code}${reason ? `: ${reason}` : ""}).`);
}

async function loadConfig() {
  try {
    const config = await (await fetch("/web/config.json", { cache: "no-store" })).json();
    $("model").textContent = `${config.backend} · ${config.model}`;
    $("token-field").hidden = !config.auth_required;
    $("vad_silence_ms").placeholder = String(config.vad_silence_ms);
    for (const language of config.languages) {
      $("languages").append(new Option(language, language));
    }
  } catch {
    $("model").textContent = "the server does not answer";
  }
}

function restoreOptions() {
  const saved = JSON.parse(localStorage.getItem("sttd.options") || "{}");
  for (const id of SAVED) {
    if (!(id in saved)) continue;
    if ($(id).type === "checkbox") $(id).checked = saved[id];
    else $(id).value = saved[id];
  }
  $("options").addEventListener("change", () => {
    const values = {};
    for (const id of SAVED) values[id] = $(id).type === "checkbox" ? $(id).checked : $(id).value;
    localStorage.setItem("sttd.options", JSON.stringify(values)); // never the token
  });
  $("options").addEventListener("submit", (event) => event.preventDefault());
}

function wireControls() {
  $("start").addEventListener("click", () => start());
  $("stop").addEventListener("click", () => finish());
  $("clear").addEventListener("click", () => transcript.clear());
  $("file").addEventListener("change", () => {
    const [file] = $("file").files;
    if (file) start(file);
    $("file").value = ""; // the same file may be chosen again
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const [file] = event.dataTransfer.files;
    if (file && !current) start(file);
  });
}

wireControls();
restoreOptions();
loadConfig();
