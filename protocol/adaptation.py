"""A session's adaptation state, carried from one session to the next as
kaldi-gstreamer-server carries its iVector state: ``{"type": "string+gzip+base64", "value":
…}``, sent by the server at the end of a session and by the client at the start of the next.

sttd's state is what it can honestly carry across sessions, as versioned JSON (gzip, then
base64): the session's ``language`` and ``hotwords``, and the ``context``, the end of the text
recognised so far, which backends that take a prompt decode the next session with (Whisper's
``initial_prompt``): names come back spelled as before. A state from another server (a KGS
iVector) or one that is corrupt, too large or of an unknown version is refused with a reason.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import json
from datetime import UTC, datetime
from typing import Any

from protocol.fields import MAX_HOTWORD_CHARS, MAX_HOTWORDS, check_language
from session.options import RecognitionOptions

KIND = "string+gzip+base64"
VERSION = 1
MAX_VALUE_CHARS = 64 * 1024  # base64 as sent
MAX_STATE_BYTES = 64 * 1024  # JSON once inflated: a gzip bomb stops here
CONTEXT_CHARS = 600  # the prompt Whisper takes is about 220 tokens


class AdaptationError(ValueError):
    pass


def decode_state(state: Any) -> dict[str, Any]:
    """The carried fields of a client's ``adaptation_state`` object; raises
    AdaptationError saying why it cannot be used."""
    if not isinstance(state, dict) or state.get("type") != KIND:
        raise AdaptationError(f'adaptation_state must be {{"type": "{KIND}", "value": …}}')
    value = state.get("value")
    if not isinstance(value, str) or len(value) > MAX_VALUE_CHARS:
        raise AdaptationError(f"adaptation_state.value must be a string of at most "
                              f"{MAX_VALUE_CHARS} characters")
    try:
        raw = gzip.GzipFile(fileobj=io.BytesIO(base64.b64decode(value, validate=True))).read(
            MAX_STATE_BYTES + 1)
    except (binascii.Error, OSError, EOFError, ValueError):
        raise AdaptationError("adaptation_state.value is not base64 of gzip data") from None
    if len(raw) > MAX_STATE_BYTES:
        raise AdaptationError("adaptation_state is too large")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise AdaptationError("adaptation_state is not sttd's (a kaldi-gstreamer-server "
                              "iVector state cannot be used here)") from None
    if not isinstance(data, dict) or data.get("sttd_adaptation") != VERSION:
        raise AdaptationError(f"adaptation_state is not sttd's version {VERSION}")
    language, hotwords, context = (data.get("language", "auto"), data.get("hotwords", []),
                                   data.get("context", ""))
    try:
        language = check_language(language) if isinstance(language, str) else None
    except ValueError:
        language = None
    if language is None or not isinstance(context, str) or not isinstance(hotwords, list) \
            or len(hotwords) > MAX_HOTWORDS or not all(
                isinstance(h, str) and 0 < len(h) <= MAX_HOTWORD_CHARS for h in hotwords):
        raise AdaptationError("adaptation_state has malformed fields")
    return {"language": language, "hotwords": tuple(hotwords),
            "context": context[-CONTEXT_CHARS:]}


def apply_state(options: RecognitionOptions, carried: dict[str, Any]) -> RecognitionOptions:
    """The session's options with a carried state: what the request set explicitly wins."""
    return options.merge(
        language=options.language if options.language != "auto" else carried["language"],
        hotwords=options.hotwords or carried["hotwords"], context=carried["context"])


def encode_state(options: RecognitionOptions, texts: list[str], language: str | None,
                 request_id: str) -> dict[str, Any]:
    """The state to carry into the next session: this one's options and its text so far
    (after what it was given)."""
    context = " ".join(t for t in (options.context, *texts) if t).strip()[-CONTEXT_CHARS:]
    data = {"sttd_adaptation": VERSION, "language": language or options.language,
            "hotwords": list(options.hotwords), "context": context}
    value = base64.b64encode(gzip.compress(json.dumps(data, ensure_ascii=False).encode(),
                                           mtime=0)).decode()
    return {"id": request_id, "type": KIND, "value": value,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")}

