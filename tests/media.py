"""Real encoded audio for tests, made from the reference clips with PyAV's bundled encoders
(the same FFmpeg build the server decodes with)."""

from __future__ import annotations

import io

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


def encode(pcm16k: np.ndarray, name: str) -> bytes:
    """16 kHz mono int16 samples → a complete file in the named format."""
    import av

    fmt, codec, rate, channels, options = FORMATS[name]
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
