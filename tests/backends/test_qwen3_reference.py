"""Our Qwen3-ASR text side against the reference implementation in transformers (its port of
qwen-asr, on CPU, extra ``qwen3-reference``): the audio-token count our context check uses,
the prompt layout a real (tiny, random-weight) Qwen3-ASR accepts and continues, and output
parsing on thousands of generated answers."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

from backends.qwen3 import audio_tokens
from backends.qwen3_text import build_prompt, fix_repetitions, parse_output

if os.environ.get("STT_REQUIRE_QWEN3_REFERENCE"):  # CI: `make test` installs the extra
    import torch
    import transformers.models.qwen3_asr.processing_qwen3_asr as qwen3_asr
else:
    torch = pytest.importorskip("torch")
    qwen3_asr = pytest.importorskip("transformers.models.qwen3_asr.processing_qwen3_asr")

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_start|>", "<|audio_end|>",
            "<|audio_pad|>"]
WORDS = ["system", "user", "assistant", "language", "English", "German", "None", "hello",
         "world", "ctx"]


@pytest.fixture(scope="module")
def processor():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3ASRProcessor, WhisperFeatureExtractor

    vocab = {w: i for i, w in enumerate(["[UNK]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens([AddedToken(s, special=True) for s in SPECIALS])
    tok.add_tokens([AddedToken("<asr_text>", special=False)])  # as in the real tokenizer
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens={"audio_token": "<|audio_pad|>", "audio_bos_token": "<|audio_start|>",
                              "audio_eos_token": "<|audio_end|>"})
    features = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160,
                                       n_fft=400, chunk_length=30)
    return Qwen3ASRProcessor(feature_extractor=features, tokenizer=fast)


def noise(seconds: float) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 0.1, int(seconds * 16000)).astype(np.float32)


@pytest.mark.parametrize("seconds", [0.5, 1.0, 5.0, 8.37, 12.34567, 30.0])
def test_audio_token_count_matches_the_official_processor(processor, seconds):
    inputs = processor(text=[build_prompt("ctx", "English", "hello")], audio=[noise(seconds)],
                       return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    pad = processor.tokenizer.convert_tokens_to_ids("<|audio_pad|>")
    # Our one placeholder became exactly as many audio tokens as our formula says.
    assert ids.count(pad) == audio_tokens(int(seconds * 16000))


def test_a_tiny_random_model_continues_our_prompt(processor):
    from transformers import Qwen3ASRConfig, Qwen3ASRForConditionalGeneration

    tok = processor.tokenizer
    config = Qwen3ASRConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2,
                          encoder_ffn_dim=32, d_model=16, output_dim=16, n_window=50,
                          n_window_infer=800, downsample_hidden_size=8),
        text_config=dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         head_dim=8, max_position_embeddings=4096,
                         rope_scaling={"rope_type": "default", "mrope_section": [2, 1, 1]}),
        audio_token_id=tok.convert_tokens_to_ids("<|audio_pad|>"),
        pad_token_id=tok.pad_token_id, eos_token_id=[tok.convert_tokens_to_ids("<|im_end|>")])
    torch.manual_seed(0)
    model = Qwen3ASRForConditionalGeneration(config).eval()
    prompt = build_prompt("ctx", None, "language English<asr_text>hello")
    inputs = processor(text=[prompt], audio=[noise(3.0)], return_tensors="pt")
    assert tok.decode(inputs["input_ids"][0][-6:]).split() == [
        "<|im_start|>", "assistant", "language", "English", "<asr_text>", "hello"]
    out = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5  # the forced prefix continues


def test_parsing_agrees_with_the_official_parser_on_generated_answers():
    """One deliberate difference: a first line that is a bare ``language`` or ``language
    None`` gives no language here (the reference returns "language" / "None" as if they
    were languages when more lines follow)."""
    official_fix = qwen3_asr._detect_and_fix_repetitions
    official_parse = qwen3_asr._parse_single_output
    rng = random.Random(0)
    atoms = ["a", "b", "la ", "ha", "你", "好", "<asr_text>", "language English",
             "language None", "language ", " ", "\n", "x", "yz!", "Thank you. "]
    for _ in range(2000):
        answer = "".join(rng.choice(atoms) * rng.choice([1, 1, 2, 5, 19, 20, 21, 25, 40])
                         for _ in range(rng.randint(0, 8)))
        assert fix_repetitions(answer) == official_fix(answer), answer
        reference = official_parse(answer)
        fixed = official_fix(answer.strip())
        head = fixed.partition("<asr_text>")[0] if "<asr_text>" in fixed else ""
        first = next((ln.strip() for ln in head.splitlines() if ln.strip()), "")
        deviates = first.lower() in ("language", "language none")
        expected = ("" if deviates else reference["language"] or "",
                    reference["transcription"])
        assert parse_output(answer) == expected, answer


def test_the_gpu_fixture_loads_as_a_qwen3_asr_checkpoint(tmp_path):
    """bench/qwen3_fixture.py (for vLLM's dummy weights on a GPU) read back by transformers:
    config, tokenizer with the special tokens at their real ids, feature extractor, and a
    random model of that config continuing our prompt."""
    from transformers import (
        AutoConfig,
        AutoTokenizer,
        Qwen3ASRConfig,
        Qwen3ASRForConditionalGeneration,
        Qwen3ASRProcessor,
        WhisperFeatureExtractor,
    )

    from bench.qwen3_fixture import ASR_TEXT_ID, SPECIAL_IDS, VOCAB, write

    model_dir = write(tmp_path / "qwen3-tiny", "tiny")
    # The official checkpoints' layout, which vLLM 0.25's own config class reads; transformers
    # reads its `-hf` layout instead, so the sub-configs are handed over here.
    thinker = json.loads((model_dir / "config.json").read_text())["thinker_config"]
    config = Qwen3ASRConfig(audio_config={"model_type": "qwen3_asr_encoder",
                                          **thinker["audio_config"]},
                            text_config={"model_type": "qwen3", **thinker["text_config"]},
                            audio_token_id=thinker["audio_token_id"])
    assert config.text_config.vocab_size == VOCAB
    assert config.audio_config.n_window == 50 and config.audio_config.n_window_infer == 800
    assert AutoConfig.from_pretrained(model_dir).model_type == "qwen3_asr"
    tok = AutoTokenizer.from_pretrained(model_dir)
    assert len(tok) == VOCAB
    assert all(tok.convert_tokens_to_ids(t) == i for t, i in SPECIAL_IDS.items())
    assert tok.convert_tokens_to_ids("<asr_text>") == ASR_TEXT_ID
    assert tok.decode([ASR_TEXT_ID], skip_special_tokens=True) == "<asr_text>"
    words = tok.encode("system user assistant", add_special_tokens=False)
    assert len(words) == 3 and tok.decode(words) == "system user assistant"  # words survive
    processor = Qwen3ASRProcessor(
        feature_extractor=WhisperFeatureExtractor.from_pretrained(model_dir), tokenizer=tok)
    inputs = processor(text=[build_prompt("", "English", "")], audio=[noise(2.0)],
                       return_tensors="pt")
    assert inputs["input_ids"][0].tolist().count(SPECIAL_IDS["<|audio_pad|>"]) == 26
    torch.manual_seed(0)
    model = Qwen3ASRForConditionalGeneration(config).eval()
    out = model.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3
