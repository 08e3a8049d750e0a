"""Tiny random speech-encoder checkpoints (wav2vec 2.0, HuBERT, WavLM, Whisper), for tests
and benchmarks offline: built from a ``transformers`` config class, saved with
``save_pretrained`` (with the family's feature extractor), then loaded through the same
``from_pretrained`` path a user's ``facebook/wav2vec2-base`` takes. Never downloads."""

from __future__ import annotations

from pathlib import Path

#: the families :func:`tiny_speech_checkpoint` builds, and the featurizer each one uses
FAMILIES = {"wav2vec2": "wav2vec", "hubert": "wav2vec", "wavlm": "wav2vec",
            "whisper": "whisper"}


def tiny_speech_checkpoint(family: str, path: str | Path, *, hidden: int = 32,
                           layers: int = 2, front_end: str = "layer",
                           window_s: int = 30, seed: int = 0) -> Path:
    """Save a randomly initialised ``family`` model of width ``hidden`` and depth ``layers``
    into ``path`` and return it. Waveform models get a 3-layer convolutional front end of
    total stride 320 (50 frames a second, as the base models), normalised per frame
    (``front_end: layer``, masks allowed) or over time (``group``, as wav2vec2-base);
    Whisper gets 16 mel bands and a ``window_s`` second window (30 as the real models)."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    path = Path(path)
    heads, ffn = 2, 2 * hidden
    if family == "whisper":
        positions = window_s * 50
        config = tf.WhisperConfig(
            d_model=hidden, encoder_layers=layers, decoder_layers=1,
            encoder_attention_heads=heads, decoder_attention_heads=heads,
            encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, num_mel_bins=16,
            max_source_positions=positions, max_target_positions=16, vocab_size=64,
            pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
        tf.WhisperModel(config).save_pretrained(path)
        tf.WhisperFeatureExtractor(feature_size=16, chunk_length=window_s).save_pretrained(path)
        return path
    common = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=ffn, conv_dim=(16, 16, 16), conv_kernel=(10, 8, 4),
                  conv_stride=(5, 8, 8), num_conv_pos_embeddings=16,
                  num_conv_pos_embedding_groups=4, feat_extract_norm=front_end)
    config_cls, model_cls = {
        "wav2vec2": (tf.Wav2Vec2Config, tf.Wav2Vec2Model),
        "hubert": (tf.HubertConfig, tf.HubertModel),
        "wavlm": (tf.WavLMConfig, tf.WavLMModel),
    }[family]
    model_cls(config_cls(**common)).save_pretrained(path)
    tf.Wav2Vec2FeatureExtractor(return_attention_mask=front_end == "layer").save_pretrained(path)
    return path
