"""Every encoder family the README lists, as a new user tries it: a tiny encoder built from a small
config and saved, paired with the tiny BERT or ViT through `MultimodalModel.from_encoders`, trained
for AIM's first steps up to one with its masked auxiliary pass, saved and reloaded (with aim_hf, and
as remote code with only transformers)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch
import transformers as T
from isolated import run_without_aim_hf
from tiny import IMAGE_SIZE, NUM_LABELS, WORDS, tiny_args
from torch.utils.data import default_collate
from transformers import AutoModel

from aim_hf import AIMTrainer, MultimodalModel
from aim_hf.modeling import tower_class
from aim_hf.pretrained import load_encoder

BATCH, STEPS = 6, 3  # AIM builds its first masks at step 1, for the auxiliary pass of step 2
_TRANSFORMER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
_SPEECH = dict(
    _TRANSFORMER, conv_dim=(16, 16), conv_stride=(10, 8), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2, vocab_size=8,
)  # fmt: skip
_TEXT = dict(vocab_size=64, max_position_embeddings=32)


@dataclass
class Family:
    """A family's modality, its tiny config, the model that a user saves from it, and its inputs."""

    modality: str
    config: Callable[[], Any]
    inputs: Callable[[int], dict[str, torch.Tensor]]
    model: Callable[[Any], T.PreTrainedModel] = AutoModel.from_config


def _images(n: int) -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE)}


def _tokens(n: int, vocab: int = 64) -> dict[str, torch.Tensor]:
    mask = torch.ones(n, 8, dtype=torch.long)
    mask[::2, 6:] = 0  # padded rows: the masked mean pooling is exercised too
    return {"input_ids": torch.randint(5, vocab, (n, 8)), "attention_mask": mask}


def _waveforms(n: int) -> dict[str, torch.Tensor]:
    return {"input_values": torch.randn(n, 4000)}


FAMILIES = {
    # vision
    "vit": Family("vision", lambda: T.ViTConfig(**_TRANSFORMER, image_size=IMAGE_SIZE, patch_size=8), _images),
    "deit": Family("vision", lambda: T.DeiTConfig(**_TRANSFORMER, image_size=IMAGE_SIZE, patch_size=8), _images),
    "beit": Family("vision", lambda: T.BeitConfig(**_TRANSFORMER, image_size=IMAGE_SIZE, patch_size=8), _images),
    "dinov2": Family(
        "vision",
        lambda: T.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                               image_size=IMAGE_SIZE, patch_size=8),
        _images,
    ),  # fmt: skip
    "clip_vision": Family(
        "vision", lambda: T.CLIPVisionConfig(**_TRANSFORMER, image_size=IMAGE_SIZE, patch_size=8), _images
    ),
    "siglip_vision": Family(
        "vision", lambda: T.SiglipVisionConfig(**_TRANSFORMER, image_size=IMAGE_SIZE, patch_size=8), _images
    ),
    "swin": Family(
        "vision",
        lambda: T.SwinConfig(image_size=IMAGE_SIZE, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                             window_size=4),
        _images,
    ),  # fmt: skip
    "convnext": Family(
        "vision", lambda: T.ConvNextConfig(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1]), _images
    ),
    "resnet": Family(
        "vision",
        lambda: T.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic"),
        _images,
    ),
    "regnet": Family(
        "vision", lambda: T.RegNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], groups_width=8),
        _images,
    ),
    "videomae": Family(
        "vision",
        lambda: T.VideoMAEConfig(**_TRANSFORMER, image_size=IMAGE_SIZE, patch_size=8, num_frames=2, tubelet_size=2),
        lambda n: {"pixel_values": torch.randn(n, 2, 3, IMAGE_SIZE, IMAGE_SIZE)},
    ),
    "mobilenet_v1": Family(
        "vision", lambda: T.MobileNetV1Config(image_size=IMAGE_SIZE, depth_multiplier=0.25), _images
    ),
    "mobilenet_v2": Family(
        "vision", lambda: T.MobileNetV2Config(image_size=IMAGE_SIZE, depth_multiplier=0.25), _images
    ),
    "efficientnet": Family(
        "vision",
        # hidden_dim: the width of the top convolution, which a width of 0.25 makes 320.
        lambda: T.EfficientNetConfig(image_size=IMAGE_SIZE, width_coefficient=0.25, depth_coefficient=0.1,
                                     hidden_dim=320),
        _images,
    ),  # fmt: skip
    "mobilevit": Family(
        "vision",
        lambda: T.MobileViTConfig(image_size=IMAGE_SIZE, hidden_sizes=[16, 16, 16],
                                  neck_hidden_sizes=[8, 8, 16, 16, 16, 16, 32], num_attention_heads=2),
        _images,
    ),  # fmt: skip
    # audio
    "ast": Family(
        "audio",
        lambda: T.ASTConfig(**_TRANSFORMER, num_mel_bins=16, max_length=32, patch_size=8, frequency_stride=8,
                            time_stride=8),
        lambda n: {"input_values": torch.randn(n, 32, 16)},
    ),  # fmt: skip
    "wav2vec2": Family("audio", lambda: T.Wav2Vec2Config(**_SPEECH), _waveforms),
    "hubert": Family("audio", lambda: T.HubertConfig(**_SPEECH), _waveforms),
    "wavlm": Family("audio", lambda: T.WavLMConfig(**_SPEECH, num_buckets=16, max_bucket_distance=32), _waveforms),
    "whisper": Family(
        "audio",
        lambda: T.WhisperConfig(
            d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=16,
            max_target_positions=16, vocab_size=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            decoder_start_token_id=3,
        ),
        lambda n: {"input_features": torch.randn(n, 16, 32)},  # 2 * max_source_positions frames
    ),  # fmt: skip
    "clap_audio": Family(
        "audio",
        lambda: T.ClapAudioConfig(
            spec_size=32, num_mel_bins=16, patch_size=4, patch_stride=(4, 4), window_size=4, depths=[1, 1],
            num_attention_heads=[1, 2], patch_embeds_hidden_size=16, hidden_size=32, projection_dim=16,
        ),
        lambda n: {"input_features": torch.randn(n, 1, 64, 16)},
        T.ClapAudioModel,  # AutoModel maps only the whole CLAP model
    ),  # fmt: skip
    # text
    "bert": Family("text", lambda: T.BertConfig(**_TRANSFORMER, **_TEXT), _tokens),
    "distilbert": Family(
        "text", lambda: T.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, **_TEXT), _tokens
    ),
    "roberta": Family("text", lambda: T.RobertaConfig(**_TRANSFORMER, **_TEXT), _tokens),
    "deberta_v2": Family("text", lambda: T.DebertaV2Config(**_TRANSFORMER, **_TEXT), _tokens),
    "clip_text": Family(
        "text", lambda: T.CLIPTextConfig(**_TRANSFORMER, **_TEXT, bos_token_id=1, eos_token_id=2), _tokens
    ),
    "t5_encoder": Family(
        "text",
        lambda: T.T5Config(d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2, vocab_size=64),
        _tokens,
        T.T5EncoderModel,
    ),
    "modernbert": Family(
        "text",
        lambda: T.ModernBertConfig(**_TRANSFORMER, **_TEXT, local_attention=16, pad_token_id=0, eos_token_id=1,
                                   bos_token_id=2, cls_token_id=2, sep_token_id=1),
        _tokens,
    ),  # fmt: skip
}

# Each family is paired with the tiny text encoder (a vision family) or the tiny ViT (the others).
PARTNERS = {"vision": "text", "audio": "vision", "text": "vision"}
PARTNER_INPUTS = {"vision": _images, "text": lambda n: _tokens(n, vocab=5 + len(WORDS))}


def _save_family(name: str, root) -> str:
    family = FAMILIES[name]
    torch.manual_seed(0)
    path = root / name
    family.model(family.config()).save_pretrained(path)
    return str(path)


def _build(name: str, family_path: str, encoder_paths: dict[str, str]) -> MultimodalModel:
    family = FAMILIES[name]
    partner = PARTNERS[family.modality]
    torch.manual_seed(0)
    return MultimodalModel.from_encoders(
        {family.modality: family_path, partner: encoder_paths[partner]}, num_labels=NUM_LABELS
    )


def _batch(name: str, n: int, seed: int) -> dict[str, Any]:
    """`n` random examples of the family's and its partner's inputs, with labels, as one batch."""
    family = FAMILIES[name]
    partner = PARTNERS[family.modality]
    torch.manual_seed(seed)
    return {
        family.modality: family.inputs(n),
        partner: PARTNER_INPUTS[partner](n),
        "labels": torch.arange(n) % NUM_LABELS,
    }


def _rows(batch: dict[str, Any]) -> list[dict[str, Any]]:
    """The batch's examples one by one (what `default_collate` stacks back)."""
    n = batch["labels"].shape[0]
    return [
        {key: value[i] if key == "labels" else {k: v[i] for k, v in value.items()} for key, value in batch.items()}
        for i in range(n)
    ]


def _eval(model: MultimodalModel, batch: dict[str, Any]):
    """The model's output on the batch's inputs, in eval mode, without gradients."""
    with torch.no_grad():
        return model.eval()(**{k: v for k, v in batch.items() if k != "labels"})


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_builds_trains_aim_and_reloads(name, encoder_paths, tmp_path):
    """The family's encoder loads with its feature width and depth groups read from the encoder; AIM
    (learned prototypes, decoded through the encoder's later layers) reaches a step whose masked
    auxiliary pass switches off units of this encoder and trains it; the saved model reloads with the
    same logits."""
    modality = FAMILIES[name].modality
    model = _build(name, _save_family(name, tmp_path), encoder_paths)
    batch = _batch(name, BATCH, seed=1)
    features = _eval(model, batch).depth_features[modality]
    assert len(features) == len(model.depth_groups(modality)) > 1
    assert features[-1].shape == (BATCH, model.probes[modality].in_features)
    assert model.unit_modules(modality)[0], f"{name}: AIM finds no units to mask"

    before = {n: p.detach().clone() for n, p in model.encoders[modality].named_parameters()}
    args = tiny_args(
        tmp_path / "out", modulation="aim", modulation_start=0, max_steps=STEPS, per_device_train_batch_size=BATCH,
        logging_steps=1, modulation_kwargs={"dam_cap": "none", "pam": "symmetric", "min_lambda": 0.0},
    )  # fmt: skip
    rows = _rows(_batch(name, BATCH * STEPS, seed=2))
    trainer = AIMTrainer(model=model, args=args, train_dataset=rows, data_collator=default_collate)
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert "aim/aux_loss" in logs[-1], f"{name}: AIM's auxiliary pass never ran"
    assert logs[-1][f"aim/masked_fraction/{modality}"] > 0, f"{name}: the auxiliary pass masked none of its units"
    assert math.isfinite(logs[-1]["aim/prototype_loss"]), f"{name}: the learned prototypes did not decode"
    changed = [n for n, p in model.encoders[modality].named_parameters() if not torch.equal(p, before[n])]
    assert changed, f"{name}: the encoder did not train"

    expected = _eval(model, batch).logits
    model.save_pretrained(tmp_path / "model")
    reloaded = MultimodalModel.from_pretrained(tmp_path / "model")
    torch.testing.assert_close(reloaded.state_dict(), model.state_dict(), rtol=0, atol=0)
    # Equal weights, yet float tolerance: the reloaded model's kernels can sum in another order (MobileNetV1).
    torch.testing.assert_close(_eval(reloaded, batch).logits, expected)


# Run with only transformers (aim_hf blocked): each saved model as remote code, on its batch.
LOAD_EACH = """
import sys, torch
from transformers import AutoModel

logits = {}
for name, (folder, batch) in torch.load(sys.argv[1]).items():
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    with torch.no_grad():
        logits[name] = (type(model).__module__, model(**batch).logits)
torch.save(logits, sys.argv[2])
"""


def test_every_family_loads_as_remote_code(encoder_paths, tmp_path):
    """Each family's saved model loads with only transformers (its saved modeling code builds the
    encoder, CLAP's audio tower included, and finds its width) and gives the same logits."""
    runs, expected = {}, {}
    for name in FAMILIES:
        model = _build(name, _save_family(name, tmp_path / "encoders"), encoder_paths)
        batch = {k: v for k, v in _batch(name, 2, seed=1).items() if k != "labels"}
        model.save_pretrained(tmp_path / name)
        runs[name] = (str(tmp_path / name), batch)
        expected[name] = _eval(model, batch).logits
    torch.save(runs, tmp_path / "runs.pt")
    run_without_aim_hf(LOAD_EACH, str(tmp_path / "runs.pt"), str(tmp_path / "logits.pt"), cwd=tmp_path)
    loaded = torch.load(tmp_path / "logits.pt")
    for name in FAMILIES:
        module, logits = loaded[name]
        assert module.startswith("transformers_modules."), (name, module)
        torch.testing.assert_close(logits, expected[name], msg=lambda m: f"{name}: {m}")


def test_clap_audio_tower_of_a_whole_clap_checkpoint(tmp_path):
    """`load_encoder` (the CLI's loader) takes CLAP's audio tower out of a whole CLAP checkpoint with
    its saved weights; loaded alone by its class it would miss the dual model's prefix and start random."""
    audio = FAMILIES["clap_audio"].config()
    text = T.ClapTextConfig(**_TRANSFORMER, **_TEXT)
    torch.manual_seed(0)
    whole = T.ClapModel(T.ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16))
    whole.save_pretrained(tmp_path / "clap")
    assert tower_class(audio) is T.ClapAudioModel
    tower = load_encoder(str(tmp_path / "clap"), "audio")
    assert type(tower) is T.ClapAudioModel
    torch.testing.assert_close(tower.state_dict(), whole.audio_model.state_dict(), rtol=0, atol=0)
