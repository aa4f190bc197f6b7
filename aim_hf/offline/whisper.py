"""A Whisper model in CTranslate2's format (as faster-whisper ships it) -> a transformers folder:
`WhisperForConditionalGeneration` weights in float32 safetensors, its config, a
`WhisperFeatureExtractor` and the tokenizer.

`AutoModel` loads the folder as `WhisperModel`, and `MultimodalModel.from_encoders` keeps its encoder.
Whisper's encoder takes exactly `2 * max_source_positions` mel frames (30 s: 3,000 frames, 1,500
positions). For short clips, `clip_seconds` keeps the first `50 * clip_seconds` rows of the encoder's
position table and sets the feature extractor's `chunk_length` to match: on 1-2 s clips the encoder
is 15-30 times cheaper. The decoder is kept whole, so the folder still transcribes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizerFast

from .ctranslate2 import CT2Model, read_ct2

FULL_SECONDS = 30  # the clip length Whisper was trained on
POSITIONS_PER_SECOND = 50  # 100 mel frames per second, halved by the encoder's second convolution
_NORM = {"weight": "gamma", "bias": "beta"}


class _Mapper:
    """Collects transformers' tensors from a CTranslate2 model's variables, and which variables were used."""

    def __init__(self, ct2: CT2Model) -> None:
        self.ct2, self.used, self.state = ct2, set(), {}

    def get(self, name: str) -> np.ndarray:
        if name not in self.ct2.variables and name not in self.ct2.aliases:
            raise ValueError(f"the CTranslate2 Whisper model has no variable {name!r}.")
        self.used.add(self.ct2.aliases.get(name, name))
        return self.ct2[name]

    def put(self, key: str, value: np.ndarray) -> None:
        self.state[key] = torch.from_numpy(np.array(value, dtype=np.float32))

    def linear(self, key: str, name: str, bias: bool = True) -> None:
        self.put(f"{key}.weight", self.get(f"{name}/weight"))
        if bias:
            self.put(f"{key}.bias", self.get(f"{name}/bias"))

    def norm(self, key: str, name: str) -> None:
        for hf, ct2 in _NORM.items():
            self.put(f"{key}.{hf}", self.get(f"{name}/{ct2}"))

    def fused(self, keys: Sequence[str], name: str) -> None:
        """Split a projection fused along its output dimension (q, k, v or k, v) into `keys`; Whisper's
        k_proj has no bias, so its share of the fused bias must be zero."""
        weights = np.split(self.get(f"{name}/weight"), len(keys))
        biases = np.split(self.get(f"{name}/bias"), len(keys))
        for key, weight, bias in zip(keys, weights, biases):
            self.put(f"{key}.weight", weight)
            if key.endswith("k_proj"):
                if np.any(bias):
                    raise ValueError(f"{name}: the key projection has a non-zero bias, which Whisper does not have.")
            else:
                self.put(f"{key}.bias", bias)

    def attention(self, key: str, name: str) -> None:
        self.fused([f"{key}.q_proj", f"{key}.k_proj", f"{key}.v_proj"], f"{name}/linear_0")
        self.linear(f"{key}.out_proj", f"{name}/linear_1")

    def cross_attention(self, key: str, name: str) -> None:
        self.linear(f"{key}.q_proj", f"{name}/linear_0")
        self.fused([f"{key}.k_proj", f"{key}.v_proj"], f"{name}/linear_1")
        self.linear(f"{key}.out_proj", f"{name}/linear_2")

    def ffn(self, key: str, name: str) -> None:
        self.norm(f"{key}.final_layer_norm", f"{name}/layer_norm")
        self.linear(f"{key}.fc1", f"{name}/linear_0")
        self.linear(f"{key}.fc2", f"{name}/linear_1")


def _count_layers(ct2: CT2Model, stack: str) -> int:
    pattern = re.compile(rf"{stack}/layer_(\d+)/")
    return len({match.group(1) for match in map(pattern.match, ct2.variables) if match})


def whisper_state_dict(ct2: CT2Model) -> tuple[dict[str, int], dict[str, torch.Tensor]]:
    """The sizes (as `WhisperConfig` fields) and the `WhisperForConditionalGeneration` state dict (float32)
    of a CTranslate2 Whisper model. Refuses another spec, and any array variable it does not place."""
    if ct2.spec != "WhisperSpec":
        raise ValueError(f"the CTranslate2 model is a {ct2.spec!r}, not a WhisperSpec.")
    m = _Mapper(ct2)
    sizes = {"encoder_layers": _count_layers(ct2, "encoder"), "decoder_layers": _count_layers(ct2, "decoder")}
    m.linear("model.encoder.conv1", "encoder/conv1")
    m.linear("model.encoder.conv2", "encoder/conv2")
    m.put("model.encoder.embed_positions.weight", m.get("encoder/position_encodings/encodings"))
    for i in range(sizes["encoder_layers"]):
        key, name = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        m.norm(f"{key}.self_attn_layer_norm", f"{name}/self_attention/layer_norm")
        m.attention(f"{key}.self_attn", f"{name}/self_attention")
        m.ffn(key, f"{name}/ffn")
    m.norm("model.encoder.layer_norm", "encoder/layer_norm")
    m.put("model.decoder.embed_tokens.weight", m.get("decoder/embeddings/weight"))
    m.put("model.decoder.embed_positions.weight", m.get("decoder/position_encodings/encodings"))
    for i in range(sizes["decoder_layers"]):
        key, name = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        m.norm(f"{key}.self_attn_layer_norm", f"{name}/self_attention/layer_norm")
        m.attention(f"{key}.self_attn", f"{name}/self_attention")
        m.norm(f"{key}.encoder_attn_layer_norm", f"{name}/attention/layer_norm")
        m.cross_attention(f"{key}.encoder_attn", f"{name}/attention")
        m.ffn(key, f"{name}/ffn")
    m.norm("model.decoder.layer_norm", "decoder/layer_norm")
    # transformers' Whisper ties its output projection to the token embeddings.
    if "decoder/projection/weight" in ct2.variables or "decoder/projection/weight" in ct2.aliases:
        if not np.array_equal(m.get("decoder/projection/weight"), ct2["decoder/embeddings/weight"]):
            raise ValueError("the output projection is not tied to the token embeddings, as Whisper's is.")
    m.state["proj_out.weight"] = m.state["model.decoder.embed_tokens.weight"]
    left = sorted(n for n, v in ct2.variables.items() if v.ndim and n not in m.used)
    if left:
        raise ValueError(f"the CTranslate2 Whisper model has variables this conversion does not place: {left[:5]}")
    conv1 = ct2["encoder/conv1/weight"]
    fc1 = ct2["encoder/layer_0/ffn/linear_0/weight"]
    sizes.update(
        d_model=conv1.shape[0],
        num_mel_bins=conv1.shape[1],
        encoder_ffn_dim=fc1.shape[0],
        decoder_ffn_dim=ct2["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        encoder_attention_heads=int(ct2["encoder/num_heads"]),
        decoder_attention_heads=int(ct2["decoder/num_heads"]),
        vocab_size=ct2["decoder/embeddings/weight"].shape[0],
        max_source_positions=ct2["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=ct2["decoder/position_encodings/encodings"].shape[0],
    )
    return sizes, m.state


def convert_whisper(
    parts: str | os.PathLike | Sequence[str | os.PathLike],
    tokenizer_file: str | os.PathLike,
    output_dir: str | os.PathLike,
    clip_seconds: int = FULL_SECONDS,
) -> Path:
    """Write a transformers Whisper folder from a CTranslate2 `model.bin` (or its parts, in order) and
    its `tokenizer.json`.

    Args:
        parts: the model file, or the parts it was split into.
        tokenizer_file: the Hugging Face `tokenizer.json` shipped beside it.
        output_dir: the folder to write (created).
        clip_seconds: the clip length, 1 to 30 whole seconds, the encoder and the feature extractor
            take; below 30 the encoder's position table is cut to it.
    """
    if not (isinstance(clip_seconds, int) and 1 <= clip_seconds <= FULL_SECONDS):
        raise ValueError(f"clip_seconds must be whole seconds, 1 to {FULL_SECONDS}, got {clip_seconds!r}.")
    sizes, state = whisper_state_dict(read_ct2(parts))
    positions = POSITIONS_PER_SECOND * clip_seconds
    if positions > sizes["max_source_positions"]:
        raise ValueError(f"the model's encoder has {sizes['max_source_positions']} positions, fewer than {positions}.")
    sizes["max_source_positions"] = positions
    key = "model.encoder.embed_positions.weight"
    state[key] = state[key][:positions].clone()
    tokenizer = WhisperTokenizerFast(tokenizer_file=os.fspath(tokenizer_file))
    end, start = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|startoftranscript|>"])
    config = WhisperConfig(
        **sizes,
        pad_token_id=end,
        bos_token_id=end,
        eos_token_id=end,
        decoder_start_token_id=start,
        tie_word_embeddings=True,
    )
    model = WhisperForConditionalGeneration(config)
    model.load_state_dict(state, strict=True)
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    WhisperFeatureExtractor(feature_size=sizes["num_mel_bins"], chunk_length=clip_seconds).save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir


__all__ = ["convert_whisper", "whisper_state_dict"]
