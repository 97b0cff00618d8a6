"""Real encoded audio for tests, made from the reference clips with PyAV's bundled encoders
(the same FFmpeg build the server decodes with)."""

from __future__ import annotations

import io
import wave

import numpy as np

# name → (container format, codec, sample rate, channels, codec options)
FORMATS: dict[str, tuple[str, str, int, int, dict]] = {
    "wav_s16_44k_stereo": ("wav", "pcm_s16le", 44100, 2, {}),
    "wav_s24_48k": ("wav", "pcm_s24le", 48000, 1, {}),
    "wav_s32_22k": ("wav", "pcm_s32le", 22050, 1, {}),
    "wav_f32_16k": ("wav", "pcm_f32le", 16000, 1, {}),
    "wav_f64_8k": ("wav", "pcm_f64le", 8000, 1, {}),
    "wav_mulaw_8k": ("wav", "pcm_mulaw", 8000, 1, {}),
    "flac_48k": ("flac", "flac", 48000, 1, {}),
    "mp3_44k": ("mp3", "libmp3lame", 44100, 1, {}),
    "ogg_opus_48k_stereo": ("ogg", "libopus", 48000, 2, {}),
    "ogg_vorbis_44k_stereo": ("ogg", "vorbis", 44100, 2, {"strict": "experimental"}),
    "webm_opus_48k": ("webm", "libopus", 48000, 1, {}),
    "m4a_aac_44k": ("ipod", "aac", 44100, 1, {}),
}


def wav_bytes(pcm: np.ndarray, rate: int = 16000) -> bytes:
    """Mono 16-bit PCM WAV."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


def encode(pcm16k: np.ndarray, name: str) -> bytes:
    """16 kHz mono int16 samples → a complete file in the named format."""
    return encode_as(pcm16k, *FORMATS[name])


def encode_as(pcm16k: np.ndarray, fmt: str, codec: str, rate: int, channels: int,
              options: dict | None = None) -> bytes:
    """16 kHz mono int16 samples → a complete file in any container, codec and layout."""
    import av

    options = options or {}
    layout = "stereo" if channels == 2 else "mono"
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout, options=options)
        frame = av.AudioFrame.from_ndarray(pcm16k.reshape(1, -1).astype(np.int16),
                                           format="s16", layout="mono")
        frame.sample_rate = 16000
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout=layout,
                                      rate=rate, frame_size=stream.codec_context.frame_size or None)
        for f in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def g711(pcm16k: np.ndarray, codec: str, rate: int = 8000) -> bytes:
    """Headerless μ-law / A-law bytes at ``rate`` (telephony: 8 kHz)."""
    import av

    ctx = av.CodecContext.create({"mulaw": "pcm_mulaw", "alaw": "pcm_alaw"}[codec], "w")
    ctx.sample_rate, ctx.layout, ctx.format = rate, "mono", "s16"
    frame = av.AudioFrame.from_ndarray(pcm16k.reshape(1, -1).astype(np.int16), format="s16",
                                       layout="mono")
    frame.sample_rate = 16000
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    out = b""
    for f in resampler.resample(frame) + resampler.resample(None):
        out += b"".join(bytes(p) for p in ctx.encode(f))
    return out + b"".join(bytes(p) for p in ctx.encode(None))


def silence_flac(seconds: float, rate: int = 16000, level: int = 0) -> bytes:
    """Digital silence (or a constant ``level``: a DC offset the energy VAD takes for speech)
    as FLAC in the largest frames FLAC allows (65535 samples): about 12 KB per hour at 16 kHz,
    so hours of audio fit in one socket read."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono", options={"frame_size": "65535"})
        stream.codec_context.format = "s16"
        stream.codec_context.open()
        n = stream.codec_context.frame_size
        flat = np.full((1, n), level, dtype=np.int16)
        for i in range(int(seconds * rate) // n):
            frame = av.AudioFrame.from_ndarray(flat, format="s16", layout="mono")
            frame.sample_rate, frame.pts = rate, i * n
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return _without_padding(buf.getvalue())


def _without_padding(flac: bytes) -> bytes:
    """The FLAC stream minus its PADDING metadata blocks (FFmpeg writes 8 KB of them)."""
    blocks, pos, last = [], 4, False
    while not last:
        last, kind = bool(flac[pos] & 0x80), flac[pos] & 0x7F
        size = int.from_bytes(flac[pos + 1 : pos + 4], "big")
        if kind != 1:
            blocks.append(bytearray(flac[pos : pos + 4 + size]))
        pos += 4 + size
    for block in blocks:
        block[0] &= 0x7F
    blocks[-1][0] |= 0x80
    return b"fLaC" + b"".join(blocks) + flac[pos:]


def float_wav(samples: np.ndarray, rate: int = 16000, channels: int = 1) -> bytes:
    """An IEEE-float WAV (format tag 3) holding exactly ``samples`` (interleaved; any float
    value, NaN and inf included: ``wave`` cannot write these)."""
    data = np.asarray(samples, dtype="<f4").tobytes()
    fmt = (b"fmt " + (16).to_bytes(4, "little") + (3).to_bytes(2, "little")
           + channels.to_bytes(2, "little") + rate.to_bytes(4, "little")
           + (rate * channels * 4).to_bytes(4, "little") + (channels * 4).to_bytes(2, "little")
           + (32).to_bytes(2, "little"))
    body = b"WAVE" + fmt + b"data" + len(data).to_bytes(4, "little") + data
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def pcm_mov(pcm16k: np.ndarray) -> bytes:
    """16 kHz mono s16 in a QuickTime/MP4 container (``ftyp`` first, index at the end), cheap
    to make at any size: 32 KB per second."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mov") as out:
        stream = out.add_stream("pcm_s16le", rate=16000, layout="mono")
        step = 16000
        for i in range(0, pcm16k.size, step):
            frame = av.AudioFrame.from_ndarray(pcm16k[i : i + step].reshape(1, -1).astype(np.int16),
                                               format="s16", layout="mono")
            frame.sample_rate, frame.pts = 16000, i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def multipart(data: bytes, *, boundary: str = "sttd-test-boundary", filename: str = "a.bin",
              fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    """A complete multipart/form-data body with ``fields`` then a ``file`` part; returns
    (body, Content-Type). Cut it to test truncation."""
    out = b""
    for name, value in (fields or {}).items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                f"{value}\r\n").encode()
    out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    out += data + f"\r\n--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"
