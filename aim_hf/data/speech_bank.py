"""A bank of words spoken by espeak-ng (Debian's `espeak-ng`), in many voices, speeds and pitches.

espeak-ng takes about 10-30 ms a call: the bank says every word once per (voice, speed, pitch) and
is cached on disk, keyed by its parameters and the espeak-ng version, so a setting built from it
pays the synthesis once per machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from itertools import product
from pathlib import Path

import numpy as np

SAMPLING_RATE = 16_000  # Whisper's rate
ESPEAK_RATE = 22_050  # espeak-ng writes 16-bit mono at this rate
SILENCE = 0.02  # samples below this fraction of the peak, at either end, are trimmed


@dataclass(frozen=True)
class Utterance:
    """How one bank entry was spoken: an espeak-ng voice (`accent+variant`), speed (words per
    minute) and pitch (0-99)."""

    voice: str
    speed: int
    pitch: int

    def __str__(self) -> str:
        return f"{self.voice} s{self.speed} p{self.pitch}"


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Where banks are cached: `path`, else `$AIM_HF_CACHE`, else `$XDG_CACHE_HOME/aim_hf` (by default
    `~/.cache/aim_hf`)."""
    if path is not None:
        return Path(path)
    if os.environ.get("AIM_HF_CACHE"):
        return Path(os.environ["AIM_HF_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aim_hf"


@lru_cache(maxsize=1)
def espeak_version() -> str:
    """The `espeak-ng --version` line; a one-line error where espeak-ng is not installed."""
    if shutil.which("espeak-ng") is None:
        raise FileNotFoundError("The spoken setting needs espeak-ng: apt-get install espeak-ng.")
    return subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout.strip()


@lru_cache(maxsize=1)
def espeak_voices() -> tuple[frozenset[str], frozenset[str]]:
    """The languages (`en-us`, ...) and voice variants (`m3`, `f2`, ...) espeak-ng knows."""

    def column(option: str, index: int) -> list[str]:
        lines = subprocess.run(["espeak-ng", option], capture_output=True, text=True, check=True).stdout.splitlines()
        return [line.split()[index] for line in lines[1:] if len(line.split()) > index]

    espeak_version()
    variants = (v.removeprefix("!v/") for v in column("--voices=variant", 4))
    return frozenset(column("--voices", 1)), frozenset(variants)


def check_utterances(utterances: tuple[Utterance, ...]) -> None:
    """A one-line error for a voice espeak-ng does not know (it would fall back to its default silently)."""
    languages, variants = espeak_voices()
    for u in utterances:
        language, _, variant = u.voice.partition("+")
        if language not in languages or (variant and variant not in variants):
            raise ValueError(f"espeak-ng has no voice {u.voice!r}: see `espeak-ng --voices` and `--voices=variant`.")


def resample(signal: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """`signal` resampled from `rate` to `new_rate` by truncating (or zero-padding) its spectrum:
    band-limited, and exact enough for clips that start and end in silence."""
    size = int(round(len(signal) * new_rate / rate))
    spectrum = np.fft.rfft(signal)[: size // 2 + 1]
    return (np.fft.irfft(spectrum, size) * (size / len(signal))).astype(np.float32)


def trim(signal: np.ndarray) -> np.ndarray:
    """`signal` without the near-silent samples at its two ends."""
    loud = np.flatnonzero(np.abs(signal) >= SILENCE * np.abs(signal).max())
    return signal[loud[0] : loud[-1] + 1] if len(loud) else signal


def synthesize(text: str, utterance: Utterance) -> np.ndarray:
    """`text` said by espeak-ng as `utterance` describes: float32 at `SAMPLING_RATE`, in [-1, 1], trimmed."""
    command = ["espeak-ng", "-v", utterance.voice, "-s", str(utterance.speed), "-p", str(utterance.pitch), "--stdout"]
    done = subprocess.run([*command, text], capture_output=True, check=True)
    if b"data" not in done.stdout:
        raise ValueError(f"espeak-ng wrote no audio for {text!r} as {utterance}: {done.stderr.decode().strip()}")
    # The header of a streamed wav states no length: the samples follow the "data" tag and its size field.
    samples = np.frombuffer(done.stdout[done.stdout.index(b"data") + 8 :], dtype="<i2")
    return trim(resample(samples.astype(np.float32) / 32768, ESPEAK_RATE, SAMPLING_RATE))


@dataclass(frozen=True)
class SpeechBank:
    """Each word said once per utterance: `audio(word, utterance)` is a trimmed float32 clip."""

    words: tuple[str, ...]
    utterances: tuple[Utterance, ...]
    clips: tuple[np.ndarray, ...]  # word-major: clips[w * len(utterances) + u]

    def audio(self, word: int, utterance: int) -> np.ndarray:
        return self.clips[word * len(self.utterances) + utterance]


def bank_utterances(
    accents: tuple[str, ...], variants: tuple[str, ...], speeds: tuple[int, ...], pitches: tuple[int, ...]
) -> tuple[Utterance, ...]:
    """Every (accent+variant, speed, pitch) combination, in a fixed order."""
    return tuple(Utterance(f"{a}+{v}", s, p) for a, v, s, p in product(accents, variants, speeds, pitches))


def load_speech_bank(
    words: tuple[str, ...],
    utterances: tuple[Utterance, ...],
    cache: str | os.PathLike | None = None,
    workers: int | None = None,
) -> SpeechBank:
    """The bank of `words` x `utterances`, read from the cache (`cache_dir(cache)`) or synthesised with
    `workers` parallel espeak-ng processes (default: one per core) and cached there."""
    check_utterances(utterances)
    key = json.dumps([espeak_version(), SAMPLING_RATE, SILENCE, list(words), [str(u) for u in utterances]])
    path = cache_dir(cache) / f"speech_bank_{hashlib.sha256(key.encode()).hexdigest()[:20]}.npz"
    if path.is_file():
        with np.load(path) as stored:
            samples = np.split(stored["audio"], stored["ends"][:-1])
    else:
        jobs = [(w, u) for w in words for u in utterances]
        with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            spoken = list(pool.map(lambda job: synthesize(*job), jobs))
        # 16-bit, as espeak-ng writes it: half the size of float32 on disk.
        samples = [np.round(np.clip(c, -1, 1) * 32767).astype(np.int16) for c in spoken]
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(partial, audio=np.concatenate(samples), ends=np.cumsum([len(c) for c in samples]), key=key)
        os.replace(partial, path)  # atomic: two processes building the same bank both leave a whole file
    clips = [c.astype(np.float32) / 32767 for c in samples]  # the same from a fresh bank and a cached one
    return SpeechBank(tuple(words), tuple(utterances), tuple(clips))


__all__ = [
    "SAMPLING_RATE",
    "SpeechBank",
    "Utterance",
    "bank_utterances",
    "cache_dir",
    "check_utterances",
    "espeak_version",
    "load_speech_bank",
    "synthesize",
]
