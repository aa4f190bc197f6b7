"""`python -m aim_hf.offline.verify [NAME ...]`: check each offline encoder on real inputs, without
trusting the conversion's key mapping (a wrong mapping gives wrong labels or gibberish).

- `mobilenet_v2`: `ReferenceMobileNetV2` (torchvision's network written in plain torch) is loaded
  strictly from the package's state dict and labels scikit-learn's two sample photographs,
  preprocessed as torchvision does. The converted model must give the same logits on the same
  pixels (within 1e-3) and, through its saved image processor, the same ImageNet classes (its centre
  crop may sit one pixel off torchvision's); the photograph of a palace must be ImageNet's "palace".
- `whisper_tiny_en`, `whisper_base`: the converted model (30 s clips), greedy decoding, transcribes
  sentences spoken by espeak-ng with a word error rate of at most `MAX_WER`; the short-clip folder
  (`--clip_seconds`, default 2) is converted too, and its transcription of a short phrase printed.
- `minilm`: the folder embeds a paraphrase closer than unrelated sentences (mean pooling).

Needs scikit-learn (the photographs), scipy (resampling) and the `espeak-ng` program.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
import torch

from .registry import ENCODERS, convert
from .reference import ReferenceMobileNetV2
from .sources import MOBILENET_V2

# ImageNet classes of the sample photographs that are known without the class list.
KNOWN_CLASSES = {698: "palace", 599: "honeycomb"}
SENTENCES = (
    "the quick brown fox jumps over the lazy dog",
    "please open the door",
    "I would like a cup of coffee",
    "the cat sat on the mat",
    "good morning, how are you today",
)
SHORT_PHRASE = "seven"
MAX_WER = 0.35
SAMPLING_RATE = 16000


class VerificationError(Exception):
    """A converted encoder does not behave as the original."""


def _reference_pixels(image: np.ndarray, size: int = 224) -> torch.Tensor:
    """torchvision's ImageNet evaluation preprocessing, in Pillow and numpy: short side to
    `size * 256 / 224` (bilinear), centre crop, ImageNet mean and standard deviation."""
    from PIL import Image

    picture, short = Image.fromarray(image), round(size * 256 / 224)
    # As torchvision: the long side truncated, the crop's offsets rounded.
    scale = short / min(picture.size)
    picture = picture.resize([short if side == min(picture.size) else int(side * scale) for side in picture.size],
                             Image.BILINEAR)
    left, top = round((picture.width - size) / 2), round((picture.height - size) / 2)
    array = np.asarray(picture.crop((left, top, left + size, top + size)), dtype=np.float32) / 255
    array = (array - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return torch.tensor(array, dtype=torch.float32).permute(2, 0, 1)[None]


def verify_mobilenet_v2(folder: Path) -> None:
    """Label the sample photographs with the converted folder and with the reference network."""
    from sklearn.datasets import load_sample_images
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    convert("mobilenet_v2", folder)
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
    reference = ReferenceMobileNetV2()
    (weights,) = MOBILENET_V2.paths().values()
    reference.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    reference.eval()
    photos = load_sample_images()
    labels = {}
    for path, image in zip(photos.filenames, photos.images):
        pixels, name = _reference_pixels(image), Path(path).name
        with torch.no_grad():
            theirs, same_input = reference(pixels)[0], model(pixel_values=pixels).logits[0]
            ours = model(**processor(image, return_tensors="pt")).logits[0]
        gap = float((same_input - theirs).abs().max())
        top, ref_top = ours.softmax(-1).topk(5), theirs.softmax(-1).topk(5)
        labels[name] = int(top.indices[0])
        print(f"  {name}: reference top-5 {ref_top.indices.tolist()} (p {ref_top.values[0]:.3f}); converted, "
              f"through its processor, top-5 {top.indices.tolist()} (p {top.values[0]:.3f}); top-1 = ImageNet "
              f"{labels[name]} {KNOWN_CLASSES.get(labels[name], '')!r}; same pixels: max |logit - reference| {gap:.1e}")
        if labels[name] != int(ref_top.indices[0]) or gap > 1e-3:
            raise VerificationError(f"{name}: the converted model does not give the reference's class or logits.")
    if labels.get("china.jpg") != 698:
        raise VerificationError(f"china.jpg (a palace) labelled {labels.get('china.jpg')}, not 698 'palace'.")


def speak(text: str, path: Path) -> np.ndarray:
    """`text` spoken by espeak-ng (voice en-us), as float32 samples at 16 kHz."""
    from scipy.signal import resample_poly

    if shutil.which("espeak-ng") is None:
        raise VerificationError("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng).")
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True, capture_output=True)
    with wave.open(str(path)) as w:
        rate, samples = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return resample_poly(samples.astype(np.float32) / 32768, SAMPLING_RATE, rate).astype(np.float32)


def transcribe(folder: Path, audio: np.ndarray, max_tokens: int = 40) -> str:
    """Greedy decoding with the Whisper folder's model, feature extractor and tokenizer (English,
    no timestamps); audio past the folder's clip length is cut."""
    from transformers import AutoFeatureExtractor, AutoTokenizer, WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    extractor, tokenizer = AutoFeatureExtractor.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    features = extractor(audio[: extractor.n_samples], sampling_rate=SAMPLING_RATE, return_tensors="pt")
    # Multilingual models (vocabulary of 51,865 and more) also take the language and the task.
    prompt = ["<|startoftranscript|>"] + (["<|en|>", "<|transcribe|>"] if model.config.vocab_size >= 51865 else [])
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(prompt + ["<|notimestamps|>"])])
    with torch.no_grad():
        encoded = model.get_encoder()(features.input_features)
        for _ in range(max_tokens):
            token = model(encoder_outputs=encoded, decoder_input_ids=ids).logits[0, -1].argmax()
            if token == model.config.eos_token_id:
                break
            ids = torch.cat([ids, token.view(1, 1)], dim=1)
    return tokenizer.decode(ids[0], skip_special_tokens=True).strip()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance over the reference's length, ignoring case and punctuation."""
    ref, hyp = (re.sub(r"[^a-z0-9' ]", " ", s.lower()).split() for s in (reference, hypothesis))
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, other in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (word != other))
    return row[-1] / max(len(ref), 1)


def verify_whisper(name: str, folder: Path, clip_seconds: int) -> None:
    """Transcribe espeak-ng sentences with the full conversion; show the short-clip folder's transcription."""
    full, short = folder / "full", folder / f"clip{clip_seconds}"
    convert(name, full)
    errors = []
    for i, sentence in enumerate(SENTENCES):
        heard = transcribe(full, speak(sentence, folder / f"{i}.wav"))
        errors.append(word_error_rate(sentence, heard))
        print(f"  30 s: said {sentence!r}, heard {heard!r} (WER {errors[-1]:.2f})")
    convert(name, short, clip_seconds=clip_seconds)
    heard = transcribe(short, speak(SHORT_PHRASE, folder / "short.wav"), max_tokens=12)
    # Not checked: trained on 30 s windows, the decoder tends to repeat itself on a short one.
    print(f"  {clip_seconds} s clip folder (shown, not checked): said {SHORT_PHRASE!r}, heard {heard!r}")
    if np.mean(errors) > MAX_WER:
        raise VerificationError(f"{name}: mean word error rate {np.mean(errors):.2f} > {MAX_WER}.")


def verify_minilm(folder: Path) -> None:
    """A paraphrase must lie closer than unrelated sentences (cosine of mean-pooled embeddings)."""
    from transformers import AutoModel, AutoTokenizer

    convert("minilm", folder)
    model, tokenizer = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    sentences = ["A man is eating food.", "A man is eating a piece of bread.", "A man is riding a horse.",
                 "A cheetah is running behind its prey."]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None]
    embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    cosines = (embeddings[1:] @ embeddings[0]).tolist()
    print(f"  cosine to {sentences[0]!r}: " + ", ".join(f"{s!r} {c:.3f}" for s, c in zip(sentences[1:], cosines)))
    if not cosines[0] > max(cosines[1:]):
        raise VerificationError("minilm: the paraphrase is not the closest sentence.")


def main(argv: list[str] | None = None) -> int:
    """Verify the named encoders (all by default); exit status 1 if any check fails."""
    parser = argparse.ArgumentParser(prog="python -m aim_hf.offline.verify", description=__doc__.split("\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(ENCODERS)} (default: all)")
    parser.add_argument("--clip_seconds", type=int, default=2, help="Whisper's short-clip folder (default 2)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(ENCODERS))
    if unknown:
        parser.error(f"unknown encoder(s) {', '.join(unknown)}: choose from {', '.join(ENCODERS)}.")
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.names or list(ENCODERS):
            print(f"{name}:")
            folder = Path(tmp, name)
            try:
                if name.startswith("whisper"):
                    folder.mkdir()
                    verify_whisper(name, folder, args.clip_seconds)
                else:
                    {"mobilenet_v2": verify_mobilenet_v2, "minilm": verify_minilm}[name](folder)
            except (VerificationError, ValueError, OSError) as err:
                failed.append(name)
                print(f"  FAILED: {err}")
            else:
                print("  ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
