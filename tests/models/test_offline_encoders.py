"""The offline encoders' conversions (`aim_hf.offline`), on tiny files of the packages' formats made
here: a torchvision-layout MobileNetV2 state dict and CTranslate2 Whisper models, whole or in parts."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models
from transformers import (
    AutoFeatureExtractor,
    AutoModelForImageClassification,
    MobileNetV2ImageProcessorPil,
    WhisperConfig,
    WhisperForConditionalGeneration,
)

from aim_hf import MultimodalModel
from aim_hf.offline import registry
from aim_hf.offline.__main__ import main
from aim_hf.offline.ctranslate2 import read_ct2
from aim_hf.offline.mobilenet_v2 import convert_mobilenet_v2
from aim_hf.offline.reference import ReferenceMobileNetV2
from aim_hf.offline.sources import Source, sha256
from aim_hf.offline.whisper import convert_whisper
from aim_hf.pretrained import load_encoder, load_processor

SPECIAL = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Every parameter and buffer drawn at random (running variances positive), so a misplaced tensor shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)
                if name.endswith("running_var"):
                    tensor.abs_().add_(0.5)


# ---------------------------------------------------------------------------------- MobileNetV2
@pytest.fixture(scope="module")
def tiny_mobilenet(tmp_path_factory):
    """A width-0.25 torchvision-layout MobileNetV2 of 5 classes, its .pth file and its converted folder."""
    root = tmp_path_factory.mktemp("mobilenet")
    reference = ReferenceMobileNetV2(num_classes=5, width=0.25)
    _randomise(reference, seed=0)
    torch.save(reference.state_dict(), root / "tiny.pth")
    folder = convert_mobilenet_v2(root / "tiny.pth", root / "converted", image_size=32)
    return reference.eval(), root / "tiny.pth", folder


def test_mobilenet_v2_conversion_gives_the_reference_logits(tiny_mobilenet):
    reference, _, folder = tiny_mobilenet
    model, info = AutoModelForImageClassification.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info  # every tensor placed: nothing missing, unexpected or mismatched
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(pixel_values=pixels).logits, reference(pixels), atol=1e-5, rtol=1e-5)


def test_mobilenet_v2_folder_loads_as_an_encoder_with_its_pillow_processor(tiny_mobilenet):
    _, _, folder = tiny_mobilenet
    assert type(load_encoder(str(folder), "image")).__name__ == "MobileNetV2Model"
    processor = load_processor(str(folder), "vision")
    assert isinstance(processor, MobileNetV2ImageProcessorPil)
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    pixels = processor(image, return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, 32, 32)
    # ImageNet normalisation: a mid-grey pixel (128) lands near zero, not at 0.5.
    grey = processor(np.full((40, 40, 3), 128, np.uint8), return_tensors="pt").pixel_values
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(grey[0, :, 0, 0], (128 / 255 - mean) / std)


def test_mobilenet_v2_refuses_a_state_dict_of_another_layout(tiny_mobilenet, tmp_path):
    _, pth, _ = tiny_mobilenet
    state = torch.load(pth, weights_only=True)
    state["features.2.conv.2.weight"] = state["features.2.conv.2.weight"][:4]
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not pair with"):
        convert_mobilenet_v2(tmp_path / "bad.pth", tmp_path / "out", image_size=32)


# ---------------------------------------------------------------------------------- Whisper
def write_ct2(path, variables: dict[str, np.ndarray], aliases: dict[str, str], spec: str = "WhisperSpec") -> bytes:
    """Write a CTranslate2 model file (binary format version 6); returns its bytes."""

    def string(text: str) -> bytes:
        data = text.encode() + b"\0"
        return struct.pack("<H", len(data)) + data

    codes = {np.float32: 0, np.int8: 1, np.int16: 2, np.int32: 3, np.float16: 4}
    out = [struct.pack("<I", 6), string(spec), struct.pack("<II", 3, len(variables))]
    for name, array in variables.items():
        out += [string(name), struct.pack(f"<B{array.ndim}I", array.ndim, *array.shape)]
        out += [struct.pack("<BI", codes[array.dtype.type], array.nbytes), array.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    out += [string(alias) + string(target) for alias, target in aliases.items()]
    data = b"".join(out)
    path.write_bytes(data)
    return data


def ct2_variables(model: WhisperForConditionalGeneration) -> dict[str, np.ndarray]:
    """The CTranslate2 Whisper layout of `model`: q, k, v (and cross-attention k, v) fused along the
    output dimension with a zero key bias, layer norms as gamma/beta, scalars as int8/int16."""
    s = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    out: dict[str, np.ndarray] = {}

    def linear(name, key):
        out[f"{name}/weight"], out[f"{name}/bias"] = s[f"{key}.weight"], s[f"{key}.bias"]

    def norm(name, key):
        out[f"{name}/gamma"], out[f"{name}/beta"] = s[f"{key}.weight"], s[f"{key}.bias"]

    def fused(name, keys):
        out[f"{name}/weight"] = np.concatenate([s[f"{k}.weight"] for k in keys])
        zero = np.zeros_like(s[f"{keys[-1]}.bias"])
        out[f"{name}/bias"] = np.concatenate([s[f"{k}.bias"] if "k_proj" not in k else zero for k in keys])

    def block(name, key, cross):
        norm(f"{name}/self_attention/layer_norm", f"{key}.self_attn_layer_norm")
        fused(f"{name}/self_attention/linear_0", [f"{key}.self_attn.{p}_proj" for p in "qkv"])
        linear(f"{name}/self_attention/linear_1", f"{key}.self_attn.out_proj")
        if cross:
            norm(f"{name}/attention/layer_norm", f"{key}.encoder_attn_layer_norm")
            linear(f"{name}/attention/linear_0", f"{key}.encoder_attn.q_proj")
            fused(f"{name}/attention/linear_1", [f"{key}.encoder_attn.{p}_proj" for p in "kv"])
            linear(f"{name}/attention/linear_2", f"{key}.encoder_attn.out_proj")
        norm(f"{name}/ffn/layer_norm", f"{key}.final_layer_norm")
        linear(f"{name}/ffn/linear_0", f"{key}.fc1")
        linear(f"{name}/ffn/linear_1", f"{key}.fc2")

    config = model.config
    out["decoder/scale_embeddings"] = np.array(0, np.int8)
    out["decoder/num_heads"] = np.array(config.decoder_attention_heads, np.int16)
    out["decoder/embeddings/weight"] = s["model.decoder.embed_tokens.weight"]
    out["decoder/position_encodings/encodings"] = s["model.decoder.embed_positions.weight"]
    for i in range(config.decoder_layers):
        block(f"decoder/layer_{i}", f"model.decoder.layers.{i}", cross=True)
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    out["encoder/num_heads"] = np.array(config.encoder_attention_heads, np.int16)
    linear("encoder/conv1", "model.encoder.conv1")
    linear("encoder/conv2", "model.encoder.conv2")
    out["encoder/position_encodings/encodings"] = s["model.encoder.embed_positions.weight"]
    for i in range(config.encoder_layers):
        block(f"encoder/layer_{i}", f"model.encoder.layers.{i}", cross=False)
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    return out


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A random tiny Whisper (1 s of positions), its CTranslate2 file and a word-level tokenizer.json."""
    root = tmp_path_factory.mktemp("whisper")
    words = SPECIAL + [f"w{i}" for i in range(11)]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="w0"))
    tokenizer.add_special_tokens(SPECIAL)
    tokenizer.save(str(root / "tokenizer.json"))
    config = WhisperConfig(
        vocab_size=len(words), num_mel_bins=8, d_model=16, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_source_positions=50, max_target_positions=12, pad_token_id=0, bos_token_id=0, eos_token_id=0,
        decoder_start_token_id=1,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    _randomise(model, seed=0)
    variables = ct2_variables(model)
    write_ct2(root / "model.bin", variables, {"decoder/projection/weight": "decoder/embeddings/weight"})
    return model.eval(), variables, root


def _split(data: bytes, root, at: int) -> list:
    """`data` as two part files cut at byte `at`."""
    parts = [root / "model.bin.part1", root / "model.bin.part2"]
    parts[0].write_bytes(data[:at])
    parts[1].write_bytes(data[at:])
    return parts


@pytest.mark.parametrize("split", [False, True], ids=["one_file", "two_parts"])
def test_whisper_conversion_gives_the_original_logits(tiny_whisper, tmp_path, split):
    model, _, root = tiny_whisper
    source = root / "model.bin"
    parts = _split(source.read_bytes(), tmp_path, at=source.stat().st_size // 2 + 3) if split else source
    folder = convert_whisper(parts, root / "tokenizer.json", tmp_path / "out", clip_seconds=1)
    converted, info = WhisperForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info
    features = AutoFeatureExtractor.from_pretrained(folder)(
        np.random.default_rng(0).standard_normal(16000).astype(np.float32), sampling_rate=16000, return_tensors="pt"
    ).input_features
    assert features.shape == (1, 8, 100)
    decoder_ids = torch.tensor([[1, 4, 7, 9]])
    with torch.no_grad():
        expected = model(input_features=features, decoder_input_ids=decoder_ids).logits
        actual = converted.eval()(input_features=features, decoder_input_ids=decoder_ids).logits
    torch.testing.assert_close(actual, expected)
    assert converted.config.decoder_start_token_id == 1 and converted.config.eos_token_id == 0


def test_whisper_short_clip_cuts_the_position_table_and_trains_in_a_multimodal_model(
    tiny_whisper, tmp_path, encoder_paths
):
    model, variables, root = tiny_whisper
    # A "30 s" model: 1,500 encoder positions; 1 s keeps the first 50.
    long_table = np.random.default_rng(1).standard_normal((1500, 16)).astype(np.float32)
    write_ct2(tmp_path / "model.bin", {**variables, "encoder/position_encodings/encodings": long_table}, {})
    folder = convert_whisper(tmp_path / "model.bin", root / "tokenizer.json", tmp_path / "clip1", clip_seconds=1)
    encoder = load_encoder(str(folder), "audio")
    assert type(encoder).__name__ == "WhisperEncoder" and encoder.config.max_source_positions == 50
    torch.testing.assert_close(encoder.embed_positions.weight, torch.from_numpy(long_table[:50]))
    extractor = load_processor(str(folder), "audio")
    assert extractor.chunk_length == 1 and extractor.nb_max_frames == 100
    multimodal = MultimodalModel.from_encoders({"audio": str(folder), "text": encoder_paths["text"]}, num_labels=3)
    audio = extractor([np.zeros(12000, np.float32)] * 2, sampling_rate=16000, return_tensors="pt")
    out = multimodal(audio={"input_features": audio.input_features}, text={"input_ids": torch.tensor([[2, 5], [2, 6]])},
                     labels=torch.tensor([0, 2]))
    out.loss.backward()
    assert multimodal.encoders["audio"].layers[0].fc1.weight.grad.abs().sum() > 0


def test_whisper_conversion_refuses_what_it_cannot_place(tiny_whisper, tmp_path):
    _, variables, root = tiny_whisper
    tokenizer = root / "tokenizer.json"
    bias = variables["encoder/layer_0/self_attention/linear_0/bias"].copy()
    bias[16:32] = 1.0  # the key projection's share
    write_ct2(tmp_path / "k.bin", {**variables, "encoder/layer_0/self_attention/linear_0/bias": bias}, {})
    with pytest.raises(ValueError, match="non-zero bias"):
        convert_whisper(tmp_path / "k.bin", tokenizer, tmp_path / "a")
    write_ct2(tmp_path / "x.bin", {**variables, "encoder/extra/weight": np.ones(3, np.float32)}, {})
    with pytest.raises(ValueError, match="does not place"):
        convert_whisper(tmp_path / "x.bin", tokenizer, tmp_path / "b", clip_seconds=1)
    data = write_ct2(tmp_path / "t.bin", variables, {}, spec="TransformerSpec")
    with pytest.raises(ValueError, match="not a WhisperSpec"):
        convert_whisper(tmp_path / "t.bin", tokenizer, tmp_path / "c", clip_seconds=1)
    with pytest.raises(ValueError, match="ends early"):
        read_ct2(_split(data, tmp_path, at=len(data) // 2)[:1])
    with pytest.raises(ValueError, match="1 to 30"):
        convert_whisper(root / "model.bin", tokenizer, tmp_path / "d", clip_seconds=0)
    with pytest.raises(ValueError, match="fewer than 100"):
        convert_whisper(root / "model.bin", tokenizer, tmp_path / "e", clip_seconds=2)


def test_ct2_reader_keeps_dtypes_scalars_and_aliases(tmp_path):
    half = np.arange(6, dtype=np.float16).reshape(2, 3)
    write_ct2(tmp_path / "m.bin", {"a/weight": half, "n": np.array(7, np.int16)}, {"b/weight": "a/weight"}, spec="S")
    model = read_ct2(tmp_path / "m.bin")
    assert model.spec == "S" and model.revision == 3 and int(model["n"]) == 7
    assert model["b/weight"].dtype == np.float16 and np.array_equal(model["b/weight"], half)


# ---------------------------------------------------------------------------------- packages
@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """An installed package `aimhf_fake_weights` with one file; returns (module name, file bytes' SHA-256)."""
    package = tmp_path / "site" / "aimhf_fake_weights"
    (package / "model").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "model" / "w.bin").write_bytes(b"weights")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return "aimhf_fake_weights", sha256(package / "model" / "w.bin")


def test_sources_check_checksums_and_name_the_install_line(fake_package):
    module, digest = fake_package
    good = Source("aimhf-fake-weights", "1.0", module, {"model/w.bin": digest})
    assert good.paths()["model/w.bin"].read_bytes() == b"weights"
    with pytest.raises(ValueError, match=r"checksum mismatch .*w\.bin .*aimhf-fake-weights==1\.0"):
        Source("aimhf-fake-weights", "1.0", module, {"model/w.bin": "0" * 64}).paths()
    with pytest.raises(FileNotFoundError, match="pip install --no-deps aimhf-absent==2.0"):
        Source("aimhf-absent", "2.0", "aimhf_absent_module", {}).paths()


def test_command_line_errors_are_one_line(fake_package, tmp_path, monkeypatch, capsys):
    module, digest = fake_package
    monkeypatch.setattr(registry, "MINILM", Source("aimhf-fake-weights", "1.0", module, {"model/w.bin": "f" * 64}))
    assert main(["minilm", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "checksum mismatch" in err and len(err.strip().splitlines()) == 1
    assert main(["minilm", str(tmp_path / "out"), "--image_size", "64"]) == 2
    assert "takes no option image_size" in capsys.readouterr().err
    monkeypatch.setattr(registry, "MINILM", Source("aimhf-fake-weights", "1.0", module, {"model/w.bin": digest}))
    assert main(["minilm", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "w.bin").read_bytes() == b"weights"
    assert main(["minilm", str(tmp_path / "out")]) == 2
    assert "not an empty folder" in capsys.readouterr().err
