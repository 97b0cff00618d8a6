"""Qwen3-ASR's text side, written fresh (no ``qwen-asr`` dependency): the prompt, language
names, output parsing with the repetition fix, and the streaming rollback prefix.

Pure functions over strings and a tokenizer with ``encode``/``decode``: unit-tested on CPU,
used by the vLLM backend. Formats follow the official template (docs in
``../shared/reference/qwen3-vllm.md`` §2):

    <|im_start|>system\\n{context}<|im_end|>\\n
    <|im_start|>user\\n<|audio_start|><|audio_pad|><|audio_end|><|im_end|>\\n
    <|im_start|>assistant\\n[language {Name}<asr_text>][{prefix}]

and the model answers ``language English<asr_text>text`` (``language None<asr_text>`` on
silence; only the text when the language was forced).
"""

from __future__ import annotations

import re
from typing import Protocol

ASR_TEXT = "<asr_text>"

# The 30 languages Qwen3-ASR takes by (English) name, keyed by ISO 639 code.
LANGUAGES: dict[str, str] = {
    "zh": "Chinese", "en": "English", "yue": "Cantonese", "ar": "Arabic", "de": "German",
    "fr": "French", "es": "Spanish", "pt": "Portuguese", "id": "Indonesian",
    "it": "Italian", "ko": "Korean", "ru": "Russian", "th": "Thai", "vi": "Vietnamese",
    "ja": "Japanese", "tr": "Turkish", "hi": "Hindi", "ms": "Malay", "nl": "Dutch",
    "sv": "Swedish", "da": "Danish", "fi": "Finnish", "pl": "Polish", "cs": "Czech",
    "fil": "Filipino", "fa": "Persian", "el": "Greek", "hu": "Hungarian",
    "mk": "Macedonian", "ro": "Romanian",
}
_CODES = {name.lower(): code for code, name in LANGUAGES.items()}
_ALIASES = {"tl": "fil", "zh-cn": "zh", "zh-tw": "zh", "zh-hk": "yue", "cmn": "zh"}
_REPEAT_THRESHOLD = 20


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def language_name(tag: str) -> str | None:
    """A BCP-47 tag ('en', 'pt-BR', 'yue') or a name ('English') → the model's language name;
    None for 'auto'. Raises ValueError for a language the model does not know."""
    tag = tag.strip().lower().replace("_", "-")
    if tag in ("", "auto"):
        return None
    if tag in _CODES:  # already a name
        return LANGUAGES[_CODES[tag]]
    base = tag.split("-")[0]
    for code in (tag, _ALIASES.get(tag), base, _ALIASES.get(base)):
        if code in LANGUAGES:
            return LANGUAGES[code]
    raise ValueError(f"Qwen3-ASR does not support language {tag!r}; "
                     f"supported: {', '.join(sorted(LANGUAGES))}")


def language_code(name: str) -> str:
    """The model's language name ('English') → ISO code ('en'); unknown names pass through."""
    return _CODES.get(name.strip().lower(), name.strip())


_MARKUP = re.compile(r"<\|[^<>|]*\|>|<asr_text>")


def sanitize_context(text: str) -> str:
    """Context goes into the system turn: it must not close that turn, open another or add
    an audio placeholder. Stripped to a fixpoint, so nested markers cannot reassemble."""
    while True:
        cleaned = _MARKUP.sub("", text)
        if cleaned == text:
            return cleaned.strip()
        text = cleaned


def build_prompt(context: str = "", language: str | None = None, prefix: str = "") -> str:
    prompt = (
        f"<|im_start|>system\n{sanitize_context(context)}<|im_end|>\n"
        "<|im_start|>user\n<|audio_start|><|audio_pad|><|audio_end|><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    if language:
        prompt += f"language {language}{ASR_TEXT}"
    return prompt + prefix


def fix_repetitions(text: str, threshold: int = _REPEAT_THRESHOLD) -> str:
    """qwen-asr's ``detect_and_fix_repetitions`` (a decoding loop → one occurrence): a
    character repeated more than ``threshold`` times becomes one; then, scanning left to
    right, the first pattern of 1–20 characters repeated at least ``threshold`` times in a
    row becomes one, and the scan goes on after it. Tested against transformers' port."""
    text = re.sub(rf"(.)\1{{{threshold},}}", r"\1", text, flags=re.S)
    return _collapse_patterns(text, threshold)


def _collapse_patterns(s: str, thresh: int, max_len: int = 20) -> str:
    # Fast path (C speed): no pattern repeated ``thresh`` times anywhere, nothing to do. The
    # scan below is pure Python and ran on every partial, a fifth of a core at 256 streams.
    if not re.search(rf"(.{{1,{max_len}}}?)\1{{{thresh - 1},}}", s, flags=re.S):
        return s
    out: list[str] = []
    n, start = len(s), 0
    while n - start >= thresh * 2:
        found = False
        i = start
        while i <= n - thresh * 2:
            for k in range(1, max_len + 1):
                if i + k * thresh > n:
                    break
                pattern = s[i : i + k]
                if all(s[i + r * k : i + r * k + k] == pattern for r in range(1, thresh)):
                    end = i + thresh * k
                    while end + k <= n and s[end : end + k] == pattern:
                        end += k
                    out += [s[start:i], pattern]
                    start, found = end, True
                    break
            if found:
                break
            i += 1
        if not found:
            break
    out.append(s[start:])
    return "".join(out)


def parse_output(raw: str, forced_language: str | None = None) -> tuple[str, str]:
    """The model's answer → (language name or "", transcript), as qwen-asr parses it."""
    return parse_clean(fix_repetitions(raw.strip()), forced_language)


def parse_clean(text: str, forced_language: str | None = None) -> tuple[str, str]:
    """``parse_output`` of an answer already stripped and through ``fix_repetitions``."""
    if forced_language:
        return forced_language, text.replace(ASR_TEXT, "").strip()
    if ASR_TEXT not in text:
        return "", text.strip()
    head, _, body = text.partition(ASR_TEXT)
    line = next((ln.strip() for ln in head.splitlines() if ln.strip()), "")
    if line.lower() in ("language none", "language", ""):  # a bare "language": none either
        return "", body.strip()
    language = line[len("language "):].strip() if line.lower().startswith("language ") else line
    return language, body.strip()


def rollback_prefix(raw_answer: str, tokenizer: Tokenizer, rollback_tokens: int) -> str:
    """The forced prefix for the next streaming decode: the previous answer minus its last
    ``rollback_tokens`` tokens (the unstable tail), never ending inside a multi-byte
    character (a decode ending in U+FFFD drops one more token)."""
    ids = tokenizer.encode(raw_answer)
    keep = max(0, len(ids) - rollback_tokens)
    while keep > 0:
        prefix = tokenizer.decode(ids[:keep])
        if "\ufffd" not in prefix:
            return prefix
        keep -= 1
    return ""


_UNITS = re.compile(
    r"<asr_text>|\s*[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]|\s*\w+|\s*[^\w\s]|\s+")


class UnitTokenizer:
    """Approximate tokens for the rollback when the model's tokenizer is not at hand (remote
    mode without a local ``tokenizer.json``): words with their leading space, CJK and Hangul
    characters one by one, punctuation, and the ``<asr_text>`` tag. BPE splits long words
    further, so a rollback in units drops a little more than in tokens, never less."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._units: list[str] = []

    def encode(self, text: str) -> list[int]:
        ids = []
        for unit in _UNITS.findall(text):
            if unit not in self._ids:
                self._ids[unit] = len(self._units)
                self._units.append(unit)
            ids.append(self._ids[unit])
        return ids

    def decode(self, ids: list[int]) -> str:
        return "".join(self._units[i] for i in ids)
