// What the page shows of a session's messages: the live partial (settled words dark, the
// rest grey), timed finals, turn separators, and the latency readout.

export function formatTime(ms) {
  const seconds = ms / 1000;
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - minutes * 60).toFixed(1).padStart(4, "0")}`;
}

export class Transcript {
  constructor(finals, partial) {
    this.finals = finals;
    this.stable = partial.querySelector(".stable");
    this.unstable = partial.querySelector(".unstable");
  }

  partial(msg) {
    const stable = msg.stable_text || "";
    // stable_text is a leading prefix of text; guard anyway so no word is shown twice.
    const settled = msg.text.startsWith(stable) ? stable : "";
    this.stable.textContent = settled;
    this.unstable.textContent = msg.text.slice(settled.length);
  }

  final(msg) {
    this.clearPartial();
    if (!msg.text.trim()) return; // noise that opened a segment: nothing was said
    const item = document.createElement("li");
    item.className = "final";
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = `${formatTime(msg.start_ms)}–${formatTime(msg.end_ms)}`;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = msg.text;
    item.append(time, " ", text);
    this.finals.append(item);
    this.finals.scrollTop = this.finals.scrollHeight; // the list scrolls, not the page
  }

  turn(msg) {
    const item = document.createElement("li");
    item.className = "turn";
    item.setAttribute("role", "separator");
    item.textContent = `end of turn · ${msg.silence_ms} ms of silence (${msg.cue})`;
    this.finals.append(item);
    this.finals.scrollTop = this.finals.scrollHeight;
  }

  clearPartial() {
    this.stable.textContent = "";
    this.unstable.textContent = "";
  }

  clear() {
    this.clearPartial();
    this.finals.replaceChildren();
  }
}

/** Per segment: page time from `speech_started` to the first partial with text, and how
 * long after the end of speech the final came (audio sent since then), with the server's
 * own `first_token_ms` / `latency_ms`. */
export class LatencyReadout {
  constructor({ first, final, server }) {
    this.cells = { first, final, server };
    this.started = new Map(); // segment_seq → page time of speech_started
  }

  speechStarted(msg) {
    this.started.set(msg.segment_seq, performance.now());
  }

  partial(msg) {
    const since = this.started.get(msg.segment_seq);
    if (since === undefined || !msg.text) return;
    this.started.delete(msg.segment_seq); // only the first partial counts
    this.cells.first.textContent = `${Math.round(performance.now() - since)} ms`;
  }

  final(msg, audioMs) {
    this.started.delete(msg.segment_seq);
    if (msg.reason === "endpoint" && audioMs !== null) {
      this.cells.final.textContent = `${Math.round(audioMs - msg.end_ms)} ms`;
    }
    if (msg.first_token_ms !== undefined || msg.latency_ms !== undefined) {
      const first = msg.first_token_ms ?? "–";
      this.cells.server.textContent = `${first} ms / ${msg.latency_ms ?? "–"} ms`;
    }
  }

  reset() {
    this.started.clear();
    for (const cell of Object.values(this.cells)) cell.textContent = "–";
  }
}
