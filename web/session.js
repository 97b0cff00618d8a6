// One WebSocket session of sttd's native protocol (docs/protocol.md), and plain words for
// why a connection was refused: the browser sees only a failed upgrade, so the page asks
// /web/check what the handshake answered.

const CLOSE_REASONS = {
  1008: "the server ended the session over bad input",
  1009: "a frame was too large for the server",
  1011: "the server failed on this session",
  1012: "the server is restarting: start again",
  1013: "the server is overloaded: try again in a moment",
};

const REFUSALS = {
  unauthorized: "This server requires an API key: enter a valid one in the API key field.",
  capacity: "The server is full: every session slot is in use. Try again in a moment.",
  not_ready: "The server is still loading its model. Try again in a few seconds.",
  draining: "The server is shutting down.",
  forbidden_origin: "The server does not accept connections from this page's address.",
};

export function sessionQuery(params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") query.set(key, String(value));
  }
  return query;
}

export class Session {
  /** `onMessage(msg)` for each server message, `onEnd({code, reason, clean})` once. */
  constructor(query, { onMessage, onEnd }) {
    this.query = query;
    this.onMessage = onMessage;
    this.onEnd = onEnd;
    this.socket = null;
  }

  /** Resolves when the session is open; rejects with a readable Error when refused. */
  open() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/v1/stt/ws?${this.query}`);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    return new Promise((resolve, reject) => {
      let opened = false;
      socket.onopen = () => { opened = true; resolve(); };
      socket.onmessage = (event) => {
        if (typeof event.data === "string") this.onMessage(JSON.parse(event.data));
      };
      socket.onclose = (event) => {
        if (!opened) {
          explainRefusal(this.query).then((message) => reject(new Error(message)));
          return;
        }
        const reason = event.reason || CLOSE_REASONS[event.code] || "";
        this.onEnd({ code: event.code, reason, clean: event.code === 1000 });
      };
    });
  }

  send(data) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(data);
  }

  /** End of stream: the server recognises what it has, sends the last finals and closes. */
  finish() {
    this.send(JSON.stringify({ type: "eos" }));
  }

  abort() {
    this.socket?.close(1000);
  }
}

async function explainRefusal(query) {
  let answer;
  try {
    const response = await fetch(`/web/check?${query}`, { cache: "no-store" });
    answer = await response.json();
  } catch {
    return "The server cannot be reached. Is sttd running?";
  }
  if (answer.code === "bad_request") return `The server refused these options: ${answer.message}.`;
  if (answer.code === "ok") return "The connection to the server failed. Try again.";
  return REFUSALS[answer.code] || `The server refused the session: ${answer.message}.`;
}
